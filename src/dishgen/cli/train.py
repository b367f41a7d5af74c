"""``dishgen train {cgan,fastgan,cvae,lora}``: thin wrappers over the training scripts.

Every trainer takes the same basic arguments, so a short run is asked for the same way for every
family: ``--data``, ``--out``, ``--config FILE``, ``--preset NAME``, ``--resume`` and ``key=value``
overrides such as ``max_steps=N batch_size=B resolution=R seed=S checkpoint_every=K sample_every=K``.
"""

from __future__ import annotations

import click

from dishgen.cli import LazyGroup
from dishgen.families.registry import FAMILIES


def trainer_options(func):
    """The options shared by every ``dishgen train`` subcommand."""
    decorators = [
        click.option("--data", "data", required=True, type=click.Path(file_okay=False, path_type=str),
                     help="Dataset folder (from `dishgen data build`)."),
        click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=str),
                     help="Run directory to create (or continue with --resume)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=str),
                     help="YAML/JSON file of config values."),
        click.option("--preset", default=None, help="Named preset (see the family's docs), applied before --config."),
        click.option("--resume", is_flag=True, help="Continue from the run directory's latest checkpoint."),
        click.option("--device", default=None, help="cpu (default), cuda, cuda:N or auto."),
        click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]..."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@click.group(
    cls=LazyGroup,
    # One subcommand per family that the registry says dishgen trains.
    lazy_commands={family.name: (family.trainer, family.summary) for family in FAMILIES.values() if family.trainer},
)
def train() -> None:
    """Train a generator family on a dataset.

    \b
    Examples:
      dishgen train cvae --data DS --out runs/cvae --preset cpu
      dishgen train cgan --data DS --out runs/gan max_steps=2000 batch_size=16
      dishgen train fastgan --data DS --out runs/fastgan --preset cpu
      dishgen train lora --data DS --out runs/lora --base stable-diffusion-v1-5/stable-diffusion-v1-5
      dishgen train cgan --data DS --out runs/gan --resume
    """
