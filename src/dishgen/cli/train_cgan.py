"""``dishgen train cgan``: parse the options and run :func:`dishgen.train.cgan.train`."""

from __future__ import annotations

import click

from dishgen.cli.train import trainer_options


@click.command()
@trainer_options
def cgan(data, out, config_file, preset, resume, device, overrides):
    """Train the text-conditional GAN (CBN ResNet G, projection D, hinge, R1, EMA).

    \b
    Presets: --preset cpu (64 px, MiniLM, compile=true), --preset paper (128 px, CLIP ViT-L/14).
    Common overrides: max_steps=N batch_size=B resolution=R seed=S checkpoint_every=K
    sample_every=K text_encoder=ID mixed_precision=bf16 (see docs/cgan.md for every key).

    \b
    Examples:
      dishgen train cgan --data DS --out runs/gan --preset cpu
      dishgen train cgan --data DS --out runs/gan max_steps=2000 batch_size=16
      dishgen train cgan --data DS --out runs/gan --resume max_steps=40000
    """
    from dishgen.train.cgan import resolve_train_config, train

    config = resolve_train_config(out, preset=preset, config_file=config_file, overrides=overrides, resume=resume)
    path = train(config, data, out, resume=resume, device=device)
    click.echo(f"run: {path}\nmodel: {path / 'model'}")
