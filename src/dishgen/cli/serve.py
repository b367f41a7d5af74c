"""``dishgen serve``: the web page, bound to localhost by default."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. Use 0.0.0.0 only on a trusted network.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535))
@click.option("--model", "models", multiple=True, metavar="NAME=REF",
              help="Offer this model (a run folder or a diffusers id/folder) under NAME. Repeatable.")
@click.option("--runs-dir", "runs_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Offer every run directory found in this folder. Repeatable.")
@click.option("--no-default", is_flag=True, help="Do not offer the bundled model.")
@click.option("--device", default=None, help="cpu (default), cuda or auto.")
@click.option("--dtype", default=None, help="fp32 (default), bf16, fp16 (CUDA only).")
@click.option("--max-images", default=8, show_default=True, type=click.IntRange(1, 64), help="Images per request.")
@click.option("--max-steps", default=100, show_default=True, type=click.IntRange(1, 1000), help="Diffusion steps per request.")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Requests generated at once; the rest wait in the queue.")
@click.option("--share", is_flag=True, help="Also create a public gradio.live link (off by default).")
def serve(host, port, models, runs_dirs, no_default, device, dtype, max_images, max_steps, concurrency, share):
    """Serve the web page: caption in, gallery of images out.

    \b
    Examples:
      dishgen serve
      dishgen serve --runs-dir runs --model "SD 1.5 + LoRA=runs/lora"
    """
    from dishgen.hub import looks_like_hub_id, resolve_hub_model
    from dishgen.web import GenerationService, ModelChoices, WebLimits
    from dishgen.web import serve as run_server

    choices = ModelChoices.discover(list(models), list(runs_dirs), include_default=not no_default)
    for reference in choices.references.values():  # a hub model out of reach fails now, not at the first click
        if looks_like_hub_id(reference):
            resolve_hub_model(reference, what="diffusion model", option="--model NAME=PATH", marker="model_index.json")
    limits = WebLimits(max_images=max_images, max_steps=max_steps, concurrency=concurrency)
    service = GenerationService(choices, limits, device=device, dtype=dtype)
    click.echo(f"serving {len(choices.names)} model(s) on http://{host}:{port} (Ctrl-C to stop)")
    run_server(service, host=host, port=port, share=share, block=True)
