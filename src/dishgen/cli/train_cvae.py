"""``dishgen train cvae``: parse the shared trainer options and call :func:`dishgen.train.cvae.train`."""

from __future__ import annotations

import click

from dishgen.cli.train import trainer_options


@click.command()
@trainer_options
def cvae(data, out, config_file, preset, resume, device, overrides):
    """Train the conditional VAE on DATASET, writing the run directory OUT.

    \b
    Presets: cpu (MiniLM, 64 px, trains on a laptop CPU), paper (the original project's setting,
    CLIP ViT-B/32). Any config key can be overridden as KEY=VALUE, for example:
      dishgen train cvae --data DS --out runs/cvae --preset cpu
      dishgen train cvae --data DS --out runs/cvae max_steps=200 batch_size=16 text_encoder=lstm
      dishgen train cvae --data DS --out runs/cvae --resume
    With --resume the saved config of OUT is used; overrides (max_steps=N to train longer) apply on top.
    """
    import json
    import os
    from pathlib import Path

    from dishgen.config import config_from_dict, parse_overrides, resolve_config
    from dishgen.train.cvae import PRESETS, CVAEConfig, train

    saved = Path(out) / "config.json"
    if resume and saved.is_file() and not (preset or config_file):
        stored = json.loads(saved.read_text(encoding="utf-8"))
        stored.pop("family", None)
        config = config_from_dict(CVAEConfig, {**stored, **parse_overrides(overrides)})
    else:
        config = resolve_config(CVAEConfig, preset=preset, presets=PRESETS, config_file=config_file,
                                overrides=list(overrides))
    export = train(config, data, out, resume=resume, device=device)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, say it once
        click.echo(f"model written to {export}")
