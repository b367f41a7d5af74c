"""``dishgen generate``: captions in, PNG files out, with any model reference."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dishgen.cli import family_tag, parse_knobs


def read_prompts_file(path: str) -> list[str]:
    """One prompt per non-empty line; ``#`` starts a comment line. Fails clearly on bad files."""
    file = Path(path)
    if not file.is_file():
        raise click.BadParameter(f"prompt file {path!r} does not exist", param_hint="--prompts-file")
    try:
        text = file.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first prompt
    except UnicodeDecodeError as err:
        raise click.BadParameter(
            f"prompt file {path!r} is not UTF-8 text (byte {err.start}); save it as UTF-8", param_hint="--prompts-file"
        ) from None
    except OSError as err:
        raise click.BadParameter(f"prompt file {path!r} could not be read: {err.strerror or err}",
                                 param_hint="--prompts-file") from None
    if "\x00" in text:
        raise click.BadParameter(f"prompt file {path!r} holds NUL bytes, so it is binary, not text; check the path",
                                 param_hint="--prompts-file")
    text = text.replace("\ufeff", "")  # byte-order marks of files pasted together
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise click.BadParameter(f"prompt file {path!r} holds no prompts", param_hint="--prompts-file")
    return prompts


@click.command()
@click.argument("prompts", nargs=-1)
@click.option("--model", "-m", default="default", show_default=True,
              help="'default', a bundled model's name (e.g. cvae-ffml64), a run/checkpoint folder, or a diffusers id/folder.")
@click.option("--prompts-file", type=click.Path(dir_okay=False), help="A UTF-8 file with one prompt per line.")
@click.option("--interactive", "-i", is_flag=True, help="Read prompts from the terminal until an empty line.")
@click.option("--num-images", "-n", default=1, show_default=True, type=click.IntRange(1, 256), help="Images per prompt.")
@click.option("--seed", type=int, default=None, help="Random seed (repeatable results).")
@click.option("--out", "out_dir", default="outputs", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the PNG files.")
@click.option("--grid/--no-grid", default=None, help="Also write one grid image (default: when more than one image).")
@click.option("--device", default=None, help="cpu (default), cuda, cuda:N or auto.")
@click.option("--dtype", default=None, help="fp32 (default), bf16, or fp16 (CUDA only).")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None, help="Images per forward pass.")
# Knobs (the family registry says which families take each one) and loader options
@click.option("--temperature", type=float, default=None, help=f"{family_tag('temperature')} Scale of the latent noise.")
@click.option("--truncation", type=float, default=None,
              help=f"{family_tag('truncation')} Truncation of the noise (1 = none).")
@click.option("--anchor", type=click.FloatRange(0, 1), default=None,
              help=f"{family_tag('anchor')} How far a caption moves onto the model's nearest training captions "
                   "(0 = the raw caption; default 1 when the model keeps its training captions).")
@click.option("--lora", "lora", multiple=True, type=click.Path(),
              help=f"{family_tag(option='lora')} LoRA file or folder (repeatable).")
@click.option("--lora-scale", "lora_scale", multiple=True, type=float,
              help=f"{family_tag(option='lora_scale')} Weight per --lora (default 1).")
@click.option("--scheduler", default=None,
              help=f"{family_tag(option='scheduler')} ddpm, ddim, pndm, euler, euler-a, dpm++, flow-match.")
@click.option("--negative-prompt", default=None, help=f"{family_tag('negative_prompt')} What to steer away from.")
@click.option("--guidance-scale", type=float, default=None,
              help=f"{family_tag('guidance_scale')} Classifier-free guidance scale.")
@click.option("--num-inference-steps", "--steps", "num_inference_steps", type=click.IntRange(1, 1000), default=None,
              help=f"{family_tag('num_inference_steps')} Denoising steps.")
@click.option("--height", type=int, default=None, help=f"{family_tag('height')} Image height (multiple of 8).")
@click.option("--width", type=int, default=None, help=f"{family_tag('width')} Image width (multiple of 8).")
@click.option("--knob", "extra_knobs", multiple=True, metavar="KEY=VALUE",
              help="Any knob of the model's family, e.g. truncation=0.7 (repeatable; the flags above win).")
@click.option("--token", default=None, envvar="HF_TOKEN", show_envvar=True,
              help=f"{family_tag(option='token')} Hub token for gated models.")
@click.option("--from-png", "from_png", type=click.Path(dir_okay=False),
              help="Make an image again from the provenance in a PNG written by dishgen; other flags given override it.")
def generate(prompts, model, prompts_file, interactive, num_images, seed, out_dir, grid, device, dtype, batch_size,
             temperature, truncation, anchor, lora, lora_scale, scheduler, negative_prompt, guidance_scale,
             num_inference_steps, height, width, extra_knobs, token, from_png):
    """Generate images for PROMPTS and write them as PNG files.

    \b
    Examples:
      dishgen generate "Sarma, cabbage rolls served in a clay pot"
      dishgen generate "ćevapi with onions" -n 4 --seed 0 --model runs/gan
      dishgen generate --prompts-file prompts.txt --model runs/cvae/checkpoint-2000
      dishgen generate "gibanica" --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
          --lora runs/lora --scheduler dpm++ --steps 25 --guidance-scale 7 --device cuda --dtype fp16
      dishgen generate --from-png outputs/sarma-20250101-120000-001.png

    Every PNG carries its caption, seed, model and knobs (PNG text chunks 'parameters' and
    'dishgen'); --from-png reads them back and makes the same image again.
    """
    import random

    from dishgen.generation import load_generator
    from dishgen.generation_io import call_provenance, write_images

    prompts = [p.strip() for p in prompts if p.strip()]
    if prompts_file:
        prompts += read_prompts_file(prompts_file)
    first_index = 0
    recorded_knobs: dict = {}
    model_overridden = True
    if from_png:
        from click.core import ParameterSource

        from dishgen.generation_io import ProvenanceError, read_provenance

        ctx = click.get_current_context()

        def given(name: str) -> bool:
            return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)

        record = read_provenance(from_png)
        if "grid" in record:
            raise ProvenanceError(f"{from_png!r} is a grid of {len(record['grid']['cells'])} images; pass one of its images")
        if not prompts and not interactive:
            prompts = [record["caption"]]
        model_overridden = given("model")
        if not model_overridden:
            model = record["model"]
        if not given("seed"):
            seed, first_index = int(record["seed"]), int(record.get("index", 0))
        device = device if given("device") else record.get("device")
        dtype = dtype if given("dtype") else record.get("dtype")
        if not given("scheduler"):
            scheduler = record.get("scheduler")
        if not given("lora") and record.get("lora"):
            lora = tuple(item["path"] for item in record["lora"])
            lora_scale = tuple(float(item["scale"]) for item in record["lora"])
        if not given("negative_prompt"):
            negative_prompt = record.get("negative_caption")
        recorded_knobs = dict(record.get("knobs") or {})
    if not prompts and not interactive:
        raise click.UsageError("give a prompt, --prompts-file FILE, --interactive or --from-png FILE")

    options = {}
    if lora:
        options["lora"] = list(lora)
        if lora_scale:
            if len(lora_scale) != len(lora):
                raise click.BadParameter("give one --lora-scale per --lora", param_hint="--lora-scale")
            options["lora_scale"] = list(lora_scale)
    if scheduler:
        options["scheduler"] = scheduler
    if token:
        options["token"] = token
    from dishgen.caption_bank import drawn_as
    from dishgen.generation import normalize_knobs

    knobs = {**normalize_knobs(parse_knobs(extra_knobs)), **{k: v for k, v in {
        "temperature": temperature, "truncation": truncation, "anchor": anchor, "negative_prompt": negative_prompt,
        "guidance_scale": guidance_scale, "num_inference_steps": num_inference_steps,
        "height": height, "width": width, "batch_size": batch_size,
    }.items() if v is not None}}

    generator = load_generator(model, device=device, dtype=dtype, **options)
    if recorded_knobs:  # from --from-png: flags given win; a new model keeps only the knobs it takes
        if model_overridden:
            recorded_knobs = {k: v for k, v in recorded_knobs.items() if k in generator.knobs}
        knobs = {**recorded_knobs, **knobs}

    def run(batch: list[str], batch_seed, start: int = 0):
        if batch_seed is None:  # draw it here, so that the PNGs can record it
            batch_seed = random.randrange(2**31)
        extra = {"first_index": start} if start else {}
        images = generator.generate(batch, num_images=num_images, seed=batch_seed, **extra, **knobs)
        record = call_provenance(generator, model=model, seed=batch_seed, knobs=knobs, loader_options=options,
                                 device=device, dtype=dtype, first_index=start)
        paths = write_images(images, batch, num_images, out_dir, grid=grid, provenance=record)
        for path in paths:
            click.echo(str(path))
        for caption, neighbours in getattr(generator, "last_neighbours", {}).items():
            if caption in batch:  # on stderr: stdout stays one PNG path per line
                click.echo(f"anchored {caption[:60]!r} on training dishes: {drawn_as(neighbours)}", err=True)

    if prompts:
        run(prompts, seed, first_index)
    if interactive:
        click.echo("Type a caption and press Enter (empty line to quit).", err=True)
        count = 0
        while True:
            try:
                line = click.prompt("caption", default="", show_default=False)
            except (EOFError, click.exceptions.Abort):
                break
            if not line.strip():
                break
            run([line.strip()], None if seed is None else seed + count)
            count += 1
    sys.stdout.flush()
