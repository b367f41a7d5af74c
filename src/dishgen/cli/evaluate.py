"""``dishgen evaluate``: score models (or folders of images) on a split and write a comparison report."""

from __future__ import annotations

from pathlib import Path

import click

from dishgen.cli import parse_knobs

METRIC_NAMES = ("fid", "kid", "clip-score", "clip-cosine", "memorization", "spectral", "edges", "grid", "retrieval")


def parse_metrics(value: str | None) -> tuple[str, ...] | None:
    """``fid,kid`` -> ``("fid", "kid")``; unknown names are a usage error."""
    if not value:
        return None
    names = tuple(m.strip().lower() for m in value.split(",") if m.strip())
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}",
                                 param_hint="--metrics")
    return names


@click.command()
@click.option("--model", "-m", "models", multiple=True,
              help="Model to evaluate (repeatable): 'default', a run or checkpoint-<step> folder, a diffusers id/folder.")
@click.option("--images", "images", multiple=True, type=click.Path(),
              help="Score a folder of already generated images instead of generating (repeatable).")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset folder (imagefolder).")
@click.option("--split", default="test", show_default=True, help="Split whose captions and photos are used.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--num-samples", "-n", type=click.IntRange(2), default=None,
              help="Use a seeded random subset of N rows of the split (default: all).")
@click.option("--images-per-caption", "-k", type=click.IntRange(1), default=1, show_default=True,
              help="Images generated per caption.")
@click.option("--metrics", default=None, help=f"Comma-separated subset of {','.join(METRIC_NAMES)} (default: all).")
@click.option("--feature-backbone", type=click.Choice(["clip", "dinov2", "inception", "none"]), default="clip",
              show_default=True,
              help="Feature space of FID, KID and memorization; none: no network (spectral, edges, grid, retrieval, "
                   "memorization).")
@click.option("--feature-model", default=None,
              help="Hub id or local folder for clip/dinov2, or a local .pth weights file for inception.")
@click.option("--clip-model", default="openai/clip-vit-large-patch14", show_default=True,
              help="CLIP model (hub id or local folder) for CLIPScore and the clip backbone.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds generation, subsets and bootstrap.")
@click.option("--checkpoints", default=None, help="For run directories: all, latest, or steps like 1000,2000.")
@click.option("--bootstrap", type=click.IntRange(0), default=200, show_default=True,
              help="Bootstrap resamples per 95% interval (0: no intervals).")
@click.option("--image-size", type=click.IntRange(8), default=None,
              help="Resize real and generated images to this size (default: the feature network's input size).")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE",
              help="Generation knob, e.g. guidance_scale=7.5 (repeatable); each model gets those its family takes.")
@click.option("--lora", "lora", multiple=True, type=click.Path(), help="[diffusion] LoRA file or folder (repeatable).")
@click.option("--device", default=None, help="cpu (default), cuda, cuda:N or auto.")
@click.option("--dtype", default=None, help="Generator dtype: fp32 (default), bf16, fp16 (CUDA only).")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
              help="Images per generator call and per feature batch.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def evaluate(models, images, data, split, out, num_samples, images_per_caption, metrics, feature_backbone,
             feature_model, clip_model, seed, checkpoints, bootstrap, image_size, knobs, lora, device, dtype,
             batch_size, no_progress):
    """Score models on a dataset split; write report.json, report.md, charts and a sample grid.

    \b
    Examples:
      dishgen evaluate --model runs/gan --model runs/vae --data dataset --out reports/cmp
      dishgen evaluate --model runs/gan --checkpoints all --data dataset --out reports/gan-sweep
      dishgen evaluate --images reports/cmp/images/gan --data dataset --out reports/again
      dishgen evaluate --model default --feature-backbone none --data dataset --out reports/offline
      dishgen evaluate --model runs/lora --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
          --knob num_inference_steps=30 --knob guidance_scale=7.5 -k 4 --device cuda --dtype fp16 \\
          --data dataset --out reports/lora-vs-base
    """
    from dishgen.evaluate import EvaluationConfig
    from dishgen.evaluate import evaluate as run_evaluation
    from dishgen.evaluate.report import format_cell, row_label

    if not models and not images:
        raise click.UsageError("give --model (repeatable) or --images DIR")
    config = EvaluationConfig(
        data=Path(data), out=Path(out), models=list(models), images=list(images), split=split,
        num_samples=num_samples, images_per_caption=images_per_caption, metrics=parse_metrics(metrics),
        feature_backbone=feature_backbone, feature_model=feature_model, clip_model=clip_model, seed=seed,
        checkpoints=checkpoints, device=device, dtype=dtype, batch_size=batch_size, bootstrap=bootstrap,
        image_size=image_size, knobs=parse_knobs(knobs), model_options={"lora": list(lora)} if lora else {},
        progress=not no_progress,
    )
    report = run_evaluation(config)
    for row in report["references"] + report["results"]:
        cells = [f"{name} {format_cell(row['metrics'].get(key), scale, 2 if key != 'clip_cosine' else 4, False)}"
                 for key, name, scale in (("fid", "FID", 1), ("kid", "KIDx1e3", 1000), ("clip_score", "CLIPScore", 1),
                                          ("clip_cosine", "cos", 1), ("memorization", "mem", 1),
                                          ("spectral_distance", "spectral", 1), ("edge_ratio", "edges", 1),
                                          ("grid_excess", "grid", 1), ("dish_retrieval", "dish@1", 1))
                 if key in row["metrics"]]
        click.echo(f"{row_label(row):<32} " + "  ".join(cells))
    click.echo(f"report: {Path(out) / 'report.md'}")
