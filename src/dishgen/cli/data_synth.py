"""``dishgen data augment`` and ``dishgen data mix``: thin shells over :mod:`dishgen.data.synth`.

Registered in the ``dishgen data`` group as lazy commands ``dishgen.cli.data_synth:augment`` and
``dishgen.cli.data_synth:mix``.
"""

from __future__ import annotations

from pathlib import Path

import click

from dishgen.cli import SEED, FiniteFloatRange, family_tag, parse_knobs
from dishgen.data.synth import DEFAULT_NEGATIVE_PROMPT, DEFAULT_POSITIVE_SUFFIX


@click.command("augment")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Synthetic dataset to create (resumes from OUT.partial/ if interrupted).")
@click.option("--variations", type=click.IntRange(1, 50), default=3, show_default=True,
              help="New captions per source caption.")
@click.option("--captioner", type=click.Choice(["template", "llm"]), default="template",
              show_default=True,
              help="template: offline, deterministic; llm: any OpenAI-compatible server.")
@click.option("--llm-base-url", default=None,
              help="OpenAI-compatible server URL [default: $OPENAI_BASE_URL or OpenAI].")
@click.option("--llm-model", default=None, help="Model name on that server [default: gpt-4o-mini].")
@click.option("--llm-concurrency", type=click.IntRange(1, 64), default=None,
              help="Requests in flight at once.")
@click.option("--model", "-m", default="default", show_default=True,
              help="'default' (bundled), a run/checkpoint folder, or a diffusers id/folder.")
@click.option("--lora", multiple=True, type=click.Path(),
              help=f"{family_tag(option='lora')} LoRA file or folder (repeatable).")
@click.option("--images-per-caption", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Images rendered per caption variation.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the variations and the images.")
@click.option("--split", "splits", multiple=True, default=("train",), show_default=True,
              help="Source split to augment (repeatable); test images are for test-only use.")
@click.option("--device", default=None, help="cpu (default), cuda, cuda:N or auto.")
@click.option("--dtype", default=None, help="fp32 (default), bf16, or fp16 (CUDA only).")
@click.option("--positive-suffix", default=DEFAULT_POSITIVE_SUFFIX, show_default=True,
              help=f"{family_tag(capability='prompt_suffix')} Appended to every caption ('' for none).")
@click.option("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT, show_default=True,
              help=f"{family_tag('negative_prompt')} What to steer away from ('' for none).")
@click.option("--num-inference-steps", "--steps", "num_inference_steps", type=click.IntRange(1, 1000), default=None,
              help=f"{family_tag('num_inference_steps')} Denoising steps [default: the model's].")
@click.option("--guidance-scale", type=FiniteFloatRange(0, 100), default=None,
              help=f"{family_tag('guidance_scale')} Classifier-free guidance scale.")
@click.option("--truncation", type=FiniteFloatRange(0, 10), default=None,
              help=f"{family_tag('truncation')} Truncation of the noise (1 = none).")
@click.option("--temperature", type=FiniteFloatRange(0, 10), default=None,
              help=f"{family_tag('temperature')} Scale of the latent noise.")
@click.option("--knob", "extra_knobs", multiple=True, metavar="KEY=VALUE",
              help="Any knob of the model's family, e.g. height=512 (repeatable; the flags above win).")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Captions per generation call.")
@click.option("--size", type=click.IntRange(8, 4096), default=None,
              help="Side of the saved images [default: that of the source images].")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Only the first N photos of each split (a trial).")
@click.option("--overwrite", is_flag=True,
              help="Start over: replace OUT and any interrupted OUT.partial/.")
def augment(dataset, out, variations, captioner, llm_base_url, llm_model, llm_concurrency, model,
            lora, images_per_caption, seed, splits, device, dtype, positive_suffix, negative_prompt,
            num_inference_steps, guidance_scale, truncation, temperature, extra_knobs, batch_size, size, limit,
            overwrite):
    """Write caption variations of DATASET's photos and render them into a synthetic dataset.

    Each source caption gets --variations new captions of the same dish (other plating, angle,
    setting, visible ingredients); each is rendered --images-per-caption times by --model. Rows
    carry synthetic=true, the source caption and image, and the generator settings. Only the
    train split is augmented by default, so no test photo leaks into training data.

    The API key for --captioner llm is read from $OPENAI_API_KEY only. An interrupted run
    resumes when run again with the same settings.

    \b
    Examples:
      dishgen data augment datasets/dishes --out datasets/synth --model runs/cvae
      dishgen data augment datasets/dishes --out datasets/synth --variations 5 --captioner llm \\
          --llm-base-url http://127.0.0.1:8000/v1 --llm-model qwen2.5-7b-instruct \\
          --model stable-diffusion-v1-5/stable-diffusion-v1-5 --lora runs/lora \\
          --device cuda --dtype fp16
    """
    from dishgen.cli.data import locked_output
    from dishgen.data.synth import AugmentOptions, augment_dataset, augment_summary_text

    llm = {"base_url": llm_base_url, "model": llm_model, "concurrency": llm_concurrency}
    captioner_options = {k: v for k, v in llm.items() if v is not None}
    if captioner == "template" and captioner_options:
        raise click.UsageError("--llm-* options only apply with --captioner llm")
    from dishgen.generation import normalize_knobs

    knobs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
             "truncation": truncation, "temperature": temperature}
    knobs = {**normalize_knobs(parse_knobs(extra_knobs)), **{k: v for k, v in knobs.items() if v is not None}}
    options = AugmentOptions(
        variations=variations, captioner=captioner, captioner_options=captioner_options,
        model=model, lora=list(lora), images_per_caption=images_per_caption, seed=seed,
        splits=list(dict.fromkeys(splits)), device=device, dtype=dtype,
        positive_suffix=positive_suffix, negative_prompt=negative_prompt,
        knobs=knobs, batch_size=batch_size, size=size, limit=limit, overwrite=overwrite,
    )
    with locked_output(out):
        summary = augment_dataset(dataset, out, options)
    click.echo(augment_summary_text(summary))
    click.echo(f"synthetic dataset written to {out}")


@click.command("mix")
@click.argument("real", type=click.Path(path_type=Path))
@click.argument("synthetic", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset to create.")
@click.option("--synthetic-fraction", type=FiniteFloatRange(0, 1), default=None,
              help="Share of synthetic images in train: synthetic / (real + synthetic) "
                   "[default: all available].")
@click.option("--val-synthetic", type=FiniteFloatRange(0, 1), default=0.5, show_default=True,
              help="Share of synthetic images in validation.")
@click.option("--test-synthetic", type=FiniteFloatRange(0, 1), default=0.0, show_default=True,
              help="Share of synthetic images in test (keep 0 to score on real photos only).")
@click.option("--val-fraction", type=FiniteFloatRange(0, 1, max_open=True), default=0.1,
              show_default=True,
              help="Share of the real train images moved to validation, whole dishes at a time.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the validation split and the draw.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
def mix(real, synthetic, out, synthetic_fraction, val_synthetic, test_synthetic, val_fraction,
        seed, overwrite):
    """Mix REAL and SYNTHETIC datasets into train/validation/test with set synthetic shares.

    The real test split stays the test split; validation is carved from the real train split
    by dish; a dish never straddles two splits; synthetic images identical to another image are
    removed. Counts are exact within one image and recorded in OUT/dataset.json.

    \b
    Examples:
      dishgen data mix datasets/dishes datasets/synth --out datasets/real \\
          --synthetic-fraction 0
      dishgen data mix datasets/dishes datasets/synth --out datasets/mix50 \\
          --synthetic-fraction 0.5
    """
    from dishgen.cli.data import locked_output
    from dishgen.data.synth import MixOptions, mix_datasets, mix_summary_text

    options = MixOptions(synthetic_fraction=synthetic_fraction, val_synthetic=val_synthetic,
                         test_synthetic=test_synthetic, val_fraction=val_fraction, seed=seed,
                         overwrite=overwrite)
    with locked_output(out):
        summary = mix_datasets(real, synthetic, out, options)
    click.echo(mix_summary_text(summary))
    click.echo(f"dataset written to {out}")
