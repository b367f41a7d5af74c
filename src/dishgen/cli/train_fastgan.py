"""``dishgen train fastgan``: parse the options and run :func:`dishgen.train.fastgan.train`."""

from __future__ import annotations

import click

from dishgen.cli.train import trainer_options


@click.command()
@trainer_options
def fastgan(data, out, config_file, preset, resume, device, overrides):
    """Train the few-shot caption-conditional GAN (FastGAN: SLE generator, projection D with
    self-supervised reconstruction, DiffAugment, hinge, EMA).

    \b
    Presets: --preset cpu (128 px, narrow, batch 8, MiniLM), --preset gpu (128 px, 2x wider, batch 32).
    Common overrides: max_steps=N batch_size=B resolution=R seed=S checkpoint_every=K
    sample_every=K checkpoint_every_minutes=M max_minutes=M (see docs/fastgan.md for every key).

    \b
    Examples:
      dishgen train fastgan --data DS --out runs/fastgan --preset cpu
      dishgen train fastgan --data DS --out runs/fastgan --resume max_steps=200000
    """
    from dishgen.train.fastgan import resolve_train_config, train

    config = resolve_train_config(out, preset=preset, config_file=config_file, overrides=overrides, resume=resume)
    path = train(config, data, out, resume=resume, device=device)
    click.echo(f"run: {path}\nmodel: {path / 'model'}")
