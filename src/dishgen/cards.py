"""Model cards: the one card writer of every family, a card the Hugging Face Hub parses.

Used where a trainer exports its final weights (:mod:`dishgen.exports` for the cGAN, FastGAN and
cVAE, :mod:`dishgen.train.lora_io` for a LoRA) and by ``dishgen push`` (:mod:`dishgen.publish`).
Neutral ground: it reads a run directory's files and builds text (huggingface_hub + json), and
imports neither training nor inference code, so both sides may use it.

The card's metadata is what the hub reads: ``base_model`` (a hub id, never a local path),
``datasets``, ``license``, ``tags``, ``pipeline_tag``, ``library_name``, and for a LoRA
``instance_prompt`` and ``widget`` (the sample grid with its prompts).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# the licence of a LoRA follows its base model's
BASE_LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m",
    "CompVis/stable-diffusion-v1-4": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-2-1": "openrail++",
    "stabilityai/stable-diffusion-xl-base-1.0": "openrail++",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_id(location: str | Path | None, kind: str) -> str | None:
    """``owner/name`` as given, or read back from a hub cache path
    (``.../<kind>--owner--name/snapshots/<rev>``); ``None`` for any other local folder."""
    if not location:
        return None
    location = str(location)
    match = re.search(rf"{kind}--([^/]+?)--([^/]+)/snapshots/", location.replace("\\", "/"))
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    if _HUB_ID.match(location) and not Path(location).expanduser().exists():
        return location
    return None


def hub_base_model(base: str | None) -> str | None:
    """The hub id of a base model (a ``models--`` cache path read back), or ``None`` for a local folder."""
    return _hub_id(base, "models")


# What each family is, in the card's first line (the LoRA's line is built from its config).
DESCRIPTIONS = {
    "cgan": "A text-conditional ResNet GAN generator (EMA weights)",
    "fastgan": "A caption-conditional FastGAN generator (EMA weights)",
    "cvae": "A conditional VAE",
}


def hub_dataset_id(data: str | Path | None) -> str | None:
    """The hub id of a training dataset (a ``datasets--`` cache path read back), or ``None`` for a local folder."""
    return _hub_id(data, "datasets")


def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))


def without_local_paths(value: Any) -> Any:
    """``value`` (a config) with every absolute local path shortened to ``<local>/NAME``: a card is
    shared, and a path says nothing to its readers but something about the author's machine."""
    if isinstance(value, dict):
        return {k: without_local_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_local_paths(v) for v in value]
    if isinstance(value, str):
        prefix, colon, rest = value.partition(":")  # clip:/path/to/model keeps its "clip:"
        if colon and prefix.isalnum() and len(prefix) > 1 and _is_local_path(rest):
            return f"{prefix}:{without_local_paths(rest)}"
        if _is_local_path(value):  # a hub cache folder keeps its repository id
            return hub_base_model(value) or hub_dataset_id(value) or "<local>/" + Path(value.rstrip("/\\")).name
    return value


def evaluation_numbers(report: dict | None) -> dict[str, float]:
    """The numbers of a measurement report, one level of nesting flattened (``test/recon``);
    the network shape (``model``) and the step are not measurements."""
    numbers: dict[str, float] = {}
    for key, value in (report or {}).items():
        if key in ("model", "step", "config"):
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, number in items:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                numbers[f"{key}/{sub}" if sub is not None else key] = number
    return numbers


def model_card(family: str, config: dict[str, Any], *, step: int | None, model: dict | None = None,
               text_encoder: dict | None = None, grid: str | None = None, log_rows: list[dict] = (),
               evaluation: dict | None = None, license: str | None = None, dataset_id: str | None = None,
               data: str | Path | None = None, extra_tags: list[str] = (), resolved: dict | None = None):
    """The model card of a trained model of any family: the one card writer, used when a trainer
    exports its final model and by ``dishgen push``.

    Args:
        family: ``lora``, ``cgan``, ``cvae``, ``fastgan``...
        config: the run's training config (local paths are shortened before they are shown).
        step: the training step of these weights.
        model: the network's shape (a GAN/VAE export's ``model`` block), when there is one.
        text_encoder: ``{"id", "dim"}`` of the caption encoder, when there is one.
        grid: the sample grid's path relative to the card (``samples.png``), when there is one.
        log_rows: the run's ``log.jsonl`` rows (the last logged losses are quoted).
        evaluation: measured figures (a ``dishgen evaluate`` report, the cVAE's ``metrics.json``).
        license: the licence id (default: a LoRA's follows its base model; otherwise ``other``).
        dataset_id: the training data's hub dataset id (default: read from ``data`` when it is one).
        data: the training dataset's folder or hub id (only its name is shown).
        extra_tags: more hub tags (``stable-diffusion-xl`` also names the pipeline class in the example).
        resolved: settings the config left to the base model, as training resolved them (shown with
            the training config, e.g. ``prediction_type`` read from the base's scheduler).

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the README.md text.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base_path = config.get("base") if family == "lora" else None
    base = hub_base_model(base_path)
    dataset_id = dataset_id or hub_dataset_id(data)
    prompts = list(config.get("validation_prompts") or config.get("sample_prompts") or [])
    tags = list(dict.fromkeys(["dishgen", "text-to-image", "food", "serbian-cuisine", family, *extra_tags]))
    extra: dict[str, Any] = {}
    if family == "lora":
        tags += [t for t in ("diffusers", "lora", "template:sd-lora") if t not in tags]
        if prompts:
            extra["instance_prompt"] = prompts[0]
    if grid and prompts:
        extra["widget"] = [{"text": prompts[0], "output": {"url": grid}}]
    data_card = ModelCardData(
        license=license or BASE_LICENSES.get(base or "", "other"),
        library_name="diffusers" if family == "lora" else "dishgen",
        pipeline_tag="text-to-image", tags=tags, base_model=base,
        datasets=[dataset_id] if dataset_id else None, **extra,
    )
    example = prompts[0] if prompts else "Sarma, cabbage rolls in a clay pot"
    lines = [f"# dishgen {family}: Serbian dishes", ""]
    if family == "lora":
        trained = " and text encoder(s)" if config.get("train_text_encoder") else ""
        on = f"`{base}`" if base else f"a local base model (`{without_local_paths(str(base_path))}`)"
        lines += [f"A LoRA (rank {config.get('lora_rank')}, alpha {config.get('lora_alpha')}) of the UNet{trained} "
                  f"on {on}, trained with `dishgen train lora` for {step} steps at {config.get('resolution')} px.", ""]
        if not base:
            lines += ["The base model was a local folder, so `base_model` is not set: load it from where you "
                      "keep it.", ""]
        scheduler = ""
        if config.get("prediction_type"):  # a prediction type other than the base's must reach the sampler
            scheduler = ("pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, "
                         f'prediction_type="{config["prediction_type"]}")  # as trained\n')
        pipeline = ("StableDiffusionXLPipeline" if "stable-diffusion-xl" in tags else
                    "StableDiffusionPipeline" if "stable-diffusion" in tags else "DiffusionPipeline")
        lines += ["```python", f"from diffusers import {pipeline}",
                  f'pipe = {pipeline}.from_pretrained("{base or "BASE_MODEL"}")',
                  scheduler + 'pipe.load_lora_weights("REPO_ID")  # this repository, or its local folder',
                  f'image = pipe("{example}").images[0]', "```", "", "or, with this folder downloaded:", "",
                  "```bash", f'dishgen generate "{example}" --model {base or "BASE_MODEL"} --lora FOLDER --seed 0',
                  "```", ""]
    else:
        shape = f" at {model['resolution']} px" if model and model.get("resolution") else ""
        batch = f" (batch size {config['batch_size']} per process)" if config.get("batch_size") else ""
        lines += [f"{DESCRIPTIONS.get(family, f'A {family} model')} trained from scratch with "
                  f"`dishgen train {family}`{shape} for {step} steps{batch}."]
        if text_encoder:
            lines[-1] += (f" Captions are encoded by `{without_local_paths(str(text_encoder.get('id')))}` "
                          f"({text_encoder.get('dim')}-d).")
        lines += ["", "```bash", f'dishgen generate "{example}" --model REPO_OR_FOLDER -n 4 --seed 0', "```", ""]
    if data and not dataset_id:
        lines += [f"Training data: a local dataset (`{without_local_paths(str(Path(data).resolve()))}`), "
                  "not on the hub.", ""]
    if grid:
        lines += ["## Samples", "", f"![samples]({grid})", ""]
        if prompts:
            lines += ["Prompts: " + "; ".join(f"`{p}`" for p in prompts), ""]
    numbers = evaluation_numbers(evaluation)
    if numbers:
        lines += ["## Evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" for k, v in numbers.items()] + [""]
    keys = ("loss", "loss_G", "loss_D", "recon", "kl")
    recent = [r for r in log_rows if any(isinstance(r.get(k), (int, float)) for k in keys)][-100:]
    means = {}
    for key in keys:
        values = [r[key] for r in recent if isinstance(r.get(key), (int, float))]
        if values:
            means[key] = sum(values) / len(values)
    if means:
        lines += [f"Training losses, mean of the last {len(recent)} logged rows: "
                  + ", ".join(f"`{k}` {v:.4f}" for k, v in means.items()) + ".", ""]
    training = without_local_paths({**{k: v for k, v in config.items() if k != "validation_prompts"},
                                    **(resolved or {})})
    lines += ["## Training configuration", "", "```json", json.dumps(training, indent=2, ensure_ascii=False),
              "```", ""]
    return ModelCard(f"---\n{data_card.to_yaml()}\n---\n\n" + "\n".join(lines))


def newest_grid(run: str | Path) -> Path | None:
    """The run's newest sample grid (``samples/step-<N>.png``), or ``None``."""
    grids = sorted(Path(run).glob("samples/step-*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return grids[-1] if grids else None


def read_log(run: str | Path) -> list[dict]:
    """The rows of the run's ``log.jsonl`` (none when it has no log)."""
    from dishgen.fileio import read_jsonl

    path = Path(run) / "log.jsonl"
    return read_jsonl(path) if path.is_file() else []


def export_card(family: str, config: dict[str, Any], *, run: str | Path | None, step: int | None,
                data: str | Path | None = None, model: dict | None = None, text_encoder: dict | None = None,
                evaluation: dict | None = None, grid_name: str | None = "samples.png", extra_tags: list[str] = (),
                resolved: dict | None = None):
    """The card a trainer writes beside its final weights, from the run directory's log and grids.

    Args:
        run: the run directory (``None``: a card without samples or losses).
        grid_name: the sample grid's path relative to the card, where the caller copies
            :func:`newest_grid`; ``None``: the card lies in ``run`` and shows the grid where it is.
        family, config, step, data, model, text_encoder, evaluation, extra_tags, resolved: see
            :func:`model_card`.

    Returns:
        ``(card, grid)``: the ``ModelCard`` and the local sample grid it shows (``None`` if none yet).
    """
    grid = newest_grid(run) if run else None
    shown = (grid_name or grid.relative_to(run).as_posix()) if grid else None
    card = model_card(family, config, step=step, model=model, text_encoder=text_encoder, grid=shown, log_rows=read_log(run) if run else [],
                      evaluation=evaluation, data=data, extra_tags=extra_tags, resolved=resolved)
    return card, grid
