"""``dishgen push RUN --repo-id ID``: publish a finished run's final weights and model card."""

from __future__ import annotations

import click


@click.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=str))
@click.option("--repo-id", required=True, help="Hub repository owner/name (created when absent).")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--license", "license_", default=None,
              help="Licence id for the card [default: a LoRA's base model's, else 'other'].")
@click.option("--dataset-id", default=None, help="Hub id of the training dataset, for the card's 'datasets'.")
@click.option("--evaluation", type=click.Path(dir_okay=False, exists=True, path_type=str), default=None,
              help="JSON file of measured figures (uploaded as evaluation.json, shown in the card).")
def push(run, repo_id, private, license_, dataset_id, evaluation):
    """Publish RUN's final weights, sample grid, curves and model card to the Hugging Face Hub.

    Never uploads checkpoints or optimizer state. The token comes from HF_TOKEN or `hf auth login`.

    \b
    Examples:
      dishgen push runs/lora --repo-id me/serbian-dishes-lora --private
      dishgen push runs/cvae --repo-id me/dishes-cvae --license mit --evaluation reports/eval.json
    """
    from dishgen.publish import push_run

    url = push_run(run, repo_id, private=private, license=license_, dataset_id=dataset_id, evaluation=evaluation)
    click.echo(f"pushed {run} to {repo_id}: {url}")
