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

The card itself is built by :mod:`dishgen.cards` (the trainers write it with their exports too);
what a run publishes follows its family's entry in the registry, not its name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from dishgen.cards import (  # noqa: F401  (the card builder's names, importable from here as before)
    _HUB_ID,
    BASE_LICENSES,
    DESCRIPTIONS,
    evaluation_numbers,
    export_card,
    hub_base_model,
    hub_dataset_id,
    model_card,
    newest_grid,
    read_log,
    without_local_paths,
)
from dishgen.errors import DishgenError
from dishgen.families.registry import find_family

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


class PublishError(DishgenError):
    """A run that cannot be published as asked."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PublishError(f"cannot read {path}: {err}") from err


def _publishes_adapter(family: str | None) -> bool:
    """Whether a run of ``family`` publishes an adapter of its base model (a LoRA: the weights file
    and config at the run's root, its card ``RUN/README.md``) rather than a ``model/`` export."""
    spec = find_family(family)
    return bool(spec and spec.base_model)


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
    if _publishes_adapter(family):
        if not (run / LORA_WEIGHTS).is_file():
            raise PublishError(f"{str(run)!r} has no final {LORA_WEIGHTS} (still training, or stopped early); "
                               f"finish it with `dishgen train {family} --resume`")
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
    grid = newest_grid(run)
    if grid:
        files["samples.png"] = grid
    files |= {f"plots/{p.name}": p for p in sorted((run / "plots").glob("*.png"))}
    return config, files


def build_card(run: str | Path, *, license: str | None = None, dataset_id: str | None = None,
               evaluation: dict | None = None):
    """The run's model card for ``dishgen push``, as a ``huggingface_hub.ModelCard`` (metadata + text).

    The card the trainer wrote (``RUN/README.md``, ``RUN/model/README.md``) gives the dataset id and
    tags it knew; the rest is rebuilt from the run's files by :func:`model_card`.

    Args:
        run: a finished run directory of any family.
        license: the licence id (default: a LoRA's follows its base model; otherwise ``other``).
        dataset_id: the training data's hub dataset id, for ``datasets:`` (a local dataset has none).
        evaluation: measured figures to show (e.g. a ``dishgen evaluate`` report); default: the
            export's own ``metrics.json`` when it has one.

    Returns:
        The card; ``str(card)`` is the README.md text.
    """
    from huggingface_hub import ModelCard

    config, files = run_files(run)
    family = config.get("family", "unknown")
    adapter = _publishes_adapter(family)
    trained = Path(run) / ("README.md" if adapter else "model/README.md")
    tags: list[str] = []
    if trained.is_file():
        previous = ModelCard.load(trained).data
        dataset_id = dataset_id or (previous.datasets or [None])[0]
        tags = list(previous.tags or [])
    export = _read_json(files["config.json"]) if not adapter else {}
    if evaluation is None and "metrics.json" in files:
        evaluation = _read_json(files["metrics.json"])
    log_rows = read_log(run)
    step = export.get("step") if isinstance(export, dict) and export.get("step") else (
        log_rows[-1].get("step") if log_rows else None)
    settings = {k: v for k, v in config.items() if k != "family"}
    return model_card(family, settings, step=step, model=export.get("model") if isinstance(export, dict) else None,
                      text_encoder=export.get("text_encoder") if isinstance(export, dict) else None,
                      grid="samples.png" if "samples.png" in files else None, log_rows=log_rows,
                      evaluation=evaluation, license=license, dataset_id=dataset_id, extra_tags=tags)


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
