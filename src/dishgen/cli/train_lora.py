"""``dishgen train lora``: parse the options and run :func:`dishgen.train.lora.train`."""

from __future__ import annotations

import click

from dishgen.cli.train import trainer_options


@click.command()
@trainer_options
@click.option("--base", default=None,
              help="Base model: a diffusers folder or hub id of an SD 1.x/2.x-class or SDXL model "
                   "[default: stable-diffusion-v1-5/stable-diffusion-v1-5, or the run's on --resume].")
def lora(data, out, config_file, preset, resume, device, overrides, base):
    """Fine-tune a Stable Diffusion or SDXL LoRA (UNet attention, optionally the text encoder(s)).

    \b
    Presets: --preset tiny (64 px smoke run), --preset sd15 (512 px, fp16, batch 4 x 4),
    --preset sd21 (768 px, v-prediction), --preset sdxl (1024 px, fp16-fix VAE). Common overrides: max_steps=N batch_size=B
    resolution=R seed=S checkpoint_every=K sample_every=K lora_rank=R lora_alpha=A
    train_text_encoder=true mixed_precision=bf16 snr_gamma=5 (see docs/lora.md for every key).

    \b
    Examples:
      dishgen train lora --data DS --out runs/lora --preset sd15 --device cuda
      dishgen train lora --data DS --out runs/lora --base ./my-sd15 max_steps=500
      dishgen train lora --data DS --out runs/lora-xl --preset sdxl --device cuda
      dishgen train lora --data DS --out runs/lora --resume max_steps=6000
      accelerate launch --multi_gpu --num_processes 4 $(which dishgen) train lora --data DS --out R
    """
    from dishgen.train.lora_config import (
        resolve_train_config,  # light: a missing base fails before torch loads
    )

    config = resolve_train_config(out, base=base, preset=preset, config_file=config_file, overrides=overrides,
                                  resume=resume)
    from dishgen.train.lora import train

    path = train(config, data, out, resume=resume, device=device)
    click.echo(f"run: {path}\nlora: {path / 'pytorch_lora_weights.safetensors'}")
