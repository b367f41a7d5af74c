"""Hub-ready runs: a model card the Hugging Face Hub parses, and ``dishgen push RUN --repo-id ID``.

What a run publishes (never ``checkpoint-*/``, optimizer or random states)::

    README.md                 the model card (huggingface_hub's ModelCard, YAML metadata below)
    config.json               LoRA: the run's config; cGAN/cVAE: the export's model config
    training_config.json      cGAN/cVAE: the run's training config
    pytorch_lora_weights.safetensors | model.safetensors   the final weights
    metrics.json              the export's own measurements (cVAE), when present
    evaluation.json           ``--evaluation FILE`` (e.g. a ``dishgen evaluate`` report), when given
    samples.png               the newest sample grid
    plots/*.png               training curves

The card's metadata is what the hub reads: ``base_model`` (a hub id, never a local path),
``datasets``, ``license``, ``tags``, ``pipeline_tag``, ``library_name``, and for a LoRA
``instance_prompt`` and ``widget`` (the sample grid with its prompts).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
# the licence of a LoRA follows its base model's
BASE_LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m",
    "CompVis/stable-diffusion-v1-4": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-2-1": "openrail++",
    "stabilityai/stable-diffusion-xl-base-1.0": "openrail++",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PublishError(DishgenError):
    """A run that cannot be published as asked."""


def hub_base_model(base: str | None) -> str | None:
    """The hub id of a base model: ``owner/name`` as given, or read back from a hub cache path
    (``.../models--owner--name/snapshots/<rev>``); ``None`` for any other local folder."""
    if not base:
        return None
    match = re.search(r"models--([^/]+?)--([^/]+)/snapshots/", base.replace("\\", "/"))
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    if _HUB_ID.match(base) and not Path(base).expanduser().exists():
        return base
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PublishError(f"cannot read {path}: {err}") from err


def run_files(run: str | Path) -> tuple[dict, dict[str, Path]]:
    """The run's config and the files to publish: ``{path in the repo: local file}``.

    Raises:
        PublishError: not a dishgen run, or it has no final weights yet (still training or stopped).
    """
    run = Path(run)
    if not (run / "config.json").is_file():
        raise PublishError(f"{str(run)!r} is not a dishgen run directory (no config.json)")
    config = _read_json(run / "config.json")
    family = config.get("family")
    files: dict[str, Path] = {}
    if family == "lora":
        if not (run / LORA_WEIGHTS).is_file():
            raise PublishError(f"{str(run)!r} has no final {LORA_WEIGHTS} (still training, or stopped early); "
                               "finish it with `dishgen train lora --resume`")
        files |= {LORA_WEIGHTS: run / LORA_WEIGHTS, "config.json": run / "config.json"}
    else:
        export = run / "model"
        if not (export / "model.safetensors").is_file():
            raise PublishError(f"{str(run)!r} has no final export model/model.safetensors (still training, or "
                               f"stopped early); finish it with `dishgen train {family or '<family>'} --resume`")
        files |= {"model.safetensors": export / "model.safetensors", "config.json": export / "config.json",
                  "training_config.json": run / "config.json"}
        if (export / "metrics.json").is_file():
            files["metrics.json"] = export / "metrics.json"
    samples = sorted((run / "samples").glob("step-*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if samples:
        files["samples.png"] = samples[-1]
    files |= {f"plots/{p.name}": p for p in sorted((run / "plots").glob("*.png"))}
    return config, files


def build_card(run: str | Path, *, license: str | None = None, dataset_id: str | None = None,
               evaluation: dict | None = None):
    """The run's model card as a ``huggingface_hub.ModelCard`` (metadata + text).

    Args:
        run: a finished run directory of any family.
        license: the licence id (default: a LoRA's follows its base model; otherwise ``other``).
        dataset_id: the training data's hub dataset id, for ``datasets:`` (a local dataset has none).
        evaluation: measured figures to show (e.g. a ``dishgen evaluate`` report).

    Returns:
        The card; ``str(card)`` is the README.md text.
    """
    from huggingface_hub import ModelCard, ModelCardData

    config, files = run_files(run)
    family = config.get("family", "unknown")
    base = hub_base_model(config.get("base")) if family == "lora" else None
    prompts = config.get("validation_prompts") or []
    tags = ["dishgen", "text-to-image", "food", "serbian-cuisine", family]
    extra: dict[str, Any] = {}
    if family == "lora":
        tags += ["diffusers", "lora", "template:sd-lora"]
        if prompts:
            extra["instance_prompt"] = prompts[0]
            if "samples.png" in files:
                extra["widget"] = [{"text": prompts[0], "output": {"url": "samples.png"}}]
    data = ModelCardData(
        license=license or BASE_LICENSES.get(base or "", "other"),
        library_name="diffusers" if family == "lora" else "dishgen",
        pipeline_tag="text-to-image", tags=tags, base_model=base,
        datasets=[dataset_id] if dataset_id else None, **extra,
    )
    log_rows = []
    if (Path(run) / "log.jsonl").is_file():
        log_rows = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text(encoding="utf-8").splitlines()
                    if line.strip()]
    steps = log_rows[-1].get("step") if log_rows else None
    lines = [f"# dishgen {family}: Serbian dishes", ""]
    if family == "lora":
        lines += [f"A LoRA (rank {config.get('lora_rank')}, alpha {config.get('lora_alpha')}) on "
                  f"`{base or config.get('base')}`, trained with `dishgen train lora` for {steps} steps at "
                  f"{config.get('resolution')} px.", ""]
        lines += ["```python", "from diffusers import DiffusionPipeline  # SD 1.x/2.x and SDXL alike",
                  f'pipe = DiffusionPipeline.from_pretrained("{base or "BASE_MODEL"}")',
                  'pipe.load_lora_weights("REPO_ID")  # this repository',
                  f'image = pipe("{prompts[0] if prompts else "Sarma, cabbage rolls in a clay pot"}").images[0]',
                  "```", ""]
    else:
        lines += [f"A {family} trained from scratch with `dishgen train {family}` for {steps} steps. Load it with "
                  "`dishgen generate --model <downloaded folder> \"Sarma, cabbage rolls in a clay pot\"`.", ""]
    if not base and family == "lora":
        lines += ["The base model was a local folder, so `base_model` is not set.", ""]
    if "samples.png" in files:
        lines += ["## Samples", "", "![samples](samples.png)", ""]
        if prompts:
            lines += ["Prompts: " + "; ".join(f"`{p}`" for p in prompts), ""]
    numbers = {k: v for k, v in (evaluation or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers:
        lines += ["## Evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" for k, v in numbers.items()] + [""]
    if log_rows:
        last = [r["loss"] for r in log_rows[-100:] if isinstance(r.get("loss"), (int, float))]
        if last:
            lines += [f"Mean training loss over the last {len(last)} logged steps: {sum(last) / len(last):.4f}.", ""]
    training = {k: v for k, v in config.items() if k != "validation_prompts"}
    lines += ["## Training configuration", "", "```json", json.dumps(training, indent=2, ensure_ascii=False), "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def push_run(run: str | Path, repo_id: str, *, private: bool = False, license: str | None = None,
             dataset_id: str | None = None, evaluation: str | Path | None = None, endpoint: str | None = None) -> str:
    """Publish a finished run's final weights and card to the Hugging Face Hub.

    The token comes from the environment (``HF_TOKEN``) or ``hf auth login``; it is never written.

    Args:
        run: the run directory.
        repo_id: ``owner/name`` on the hub (created when absent).
        private: create the repository private.
        license, dataset_id: see :func:`build_card`.
        evaluation: a JSON file of measured figures, uploaded as ``evaluation.json`` and shown in the card.
        endpoint: another hub endpoint (default: ``HF_ENDPOINT`` or huggingface.co).

    Returns:
        The commit's URL.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not _HUB_ID.match(repo_id):
        raise PublishError(f"--repo-id {repo_id!r} is not of the form owner/name")
    report = _read_json(Path(evaluation)) if evaluation else None
    card = build_card(run, license=license, dataset_id=dataset_id, evaluation=report)
    _, files = run_files(run)
    api = HfApi(endpoint=endpoint)
    with tempfile.TemporaryDirectory(prefix="dishgen_push_") as staging:
        stage = Path(staging)
        for name, source in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, stage / name)
        if evaluation:
            shutil.copyfile(evaluation, stage / "evaluation.json")
        card.save(stage / "README.md")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(folder_path=stage, repo_id=repo_id, repo_type="model",
                                       commit_message=f"dishgen push {Path(run).name}")
        except HfHubHTTPError as err:
            raise PublishError(f"the hub refused the upload to {repo_id!r}: {str(err).splitlines()[0]}; "
                               "check HF_TOKEN (a write token) and the repository name") from err
    return str(commit)
