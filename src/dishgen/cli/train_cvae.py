"""``dishgen train cvae``: parse the shared trainer options and call :func:`dishgen.train.cvae.train`."""

from __future__ import annotations

import click

from dishgen.cli.train import trainer_options


@click.command()
@trainer_options
def cvae(data, out, config_file, preset, resume, device, overrides):
    """Train the conditional VAE on DATASET, writing the run directory OUT.

    Presets: cpu (MiniLM, 64 px, trains on a laptop CPU), paper (the original project's setting,
    CLIP ViT-B/32). Any config key can be overridden as KEY=VALUE. With --resume the saved config
    of OUT is used; --config and overrides (max_steps=N to train longer) apply on top.

    \b
    Examples:
      dishgen train cvae --data DS --out runs/cvae --preset cpu
      dishgen train cvae --data DS --out runs/cvae max_steps=200 batch_size=16 text_encoder=lstm
      dishgen train cvae --data DS --out runs/cvae --resume
    """
    import os

    from dishgen.config import resolve_run_config
    from dishgen.train.cvae import PRESETS, CVAETrainConfig, train

    config = resolve_run_config(CVAETrainConfig, out, family="cvae", presets=PRESETS, preset=preset, config_file=config_file,
                                overrides=overrides, resume=resume)
    export = train(config, data, out, resume=resume, device=device)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, say it once
        click.echo(f"model written to {export}")
