"""One generation interface for every family.

A *model reference* is one of:

- ``default``: the bundled model in ``dishgen/weights/``;
- a run directory, a ``checkpoint-<step>/`` folder or an exported model folder of a dishgen
  family: its ``config.json`` names the family (``cgan``, ``fastgan``, ``cvae``, ``lora``);
- a diffusers model id or folder (``model_index.json``), optionally with LoRA files.

Every family's generator has the same call::

    gen = load_generator("default")
    images = gen.generate(["Sarma in a clay pot"], num_images=2, seed=0)   # list[PIL.Image]

and family-specific knobs as keyword arguments (``temperature`` for the VAE, ``truncation`` for
the GAN, ``guidance_scale``/``num_inference_steps``/``negative_prompt``... for diffusion). Unknown
knobs are an error naming the ones the family takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dishgen.bundled import WEIGHTS_DIR, bundled_models
from dishgen.errors import DishgenError
from dishgen.families.registry import FAMILIES, get_family

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


class ModelReferenceError(DishgenError, ValueError):
    """A ``--model`` value that does not name a loadable model."""


@runtime_checkable
class Generator(Protocol):
    """What every family's loaded model offers."""

    family: str
    knobs: tuple[str, ...]

    def generate(
        self, prompts: list[str], num_images: int = 1, seed: int | None = None, **knobs: Any
    ) -> list:  # list[PIL.Image.Image], num_images per prompt, prompt-major order
        ...


def default_model_path() -> Path:
    """The bundled model folder chosen by ``weights/default.json`` (``{"model": "<folder>"}``)."""
    pointer = WEIGHTS_DIR / "default.json"
    if not pointer.is_file():
        raise ModelReferenceError(
            "no bundled model is installed (dishgen/weights/default.json is missing); "
            "pass --model RUN_DIR or a diffusers model id"
        )
    return WEIGHTS_DIR / json.loads(pointer.read_text())["model"]


def resolve_model(model: str | Path | None) -> tuple[str, str | Path]:
    """Work out which family a model reference belongs to.

    Returns:
        ``(family, location)``: location is a folder for dishgen families, or a folder or hub id
        for diffusion.
    """
    if model is None or str(model) == "default":
        path = default_model_path()
        return _family_of(path), path
    path = Path(model)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return "diffusion", path
        if (path / "config.json").is_file():
            return _family_of(path), path
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)[:3]
        hint = (f"; it holds pickle files ({', '.join(pickles)}), which dishgen never loads (only safetensors)"
                if pickles else "")
        raise ModelReferenceError(
            f"{str(path)!r} is a folder but neither a dishgen run/checkpoint (config.json) "
            f"nor a diffusers pipeline (model_index.json){hint}"
        )
    if path.is_file():
        if path.suffix.lower() == ".safetensors":
            raise ModelReferenceError(
                f"{str(path)!r} looks like LoRA weights: pass the base model with --model and this file with --lora"
            )
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelReferenceError(
                f"{str(path)!r} exists but is a pickle file ({path.suffix}): dishgen loads only safetensors and "
                "never unpickles (unpickling can run code). Pass a dishgen run, checkpoint or model folder, a "
                "diffusers folder or hub id, or convert the weights to .safetensors (LoRA weights: --lora FILE)"
            )
        raise ModelReferenceError(
            f"{str(path)!r} is a file, not a model: pass 'default', a dishgen run, checkpoint or model folder, "
            "or a diffusers folder or hub id"
        )
    text = str(model)
    if text in bundled_models():
        return _family_of(WEIGHTS_DIR / text), WEIGHTS_DIR / text
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text
    if looks_like_hub_id:
        return "diffusion", text
    raise ModelReferenceError(
        f"model {text!r} not found: not 'default', not a bundled model ({', '.join(bundled_models()) or 'none'}), "
        "not an existing folder, and not a hub id of the form owner/name"
    )


def _family_of(path: Path) -> str:
    try:
        config = json.loads((path / "config.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise ModelReferenceError(f"{str(path / 'config.json')!r} could not be read: {err}") from None
    family = config.get("family") if isinstance(config, dict) else None
    if not isinstance(family, str) or family not in FAMILIES:
        raise ModelReferenceError(
            f"{str(path)!r}: config.json names family {family!r}; dishgen knows {', '.join(sorted(FAMILIES))}"
        )
    return family


def load_generator(model: str | Path | None = "default", *, device=None, dtype=None, **options: Any) -> Generator:
    """Load any model reference as a :class:`Generator`.

    Args:
        model: a model reference (see module docs).
        device: ``cpu`` (default), ``cuda``, ``auto``...
        dtype: ``fp32`` (default), ``bf16``, ``fp16`` (CUDA only).
        **options: family loader options, e.g. ``lora=[paths]``, ``lora_scale``, ``scheduler``,
            ``token`` for diffusion.
    """
    family, location = resolve_model(model)
    loader = get_family(family).load_function()
    return loader(location, device=device, dtype=dtype, **options)


def generate(
    prompts: str | list[str],
    *,
    model: str | Path | None = "default",
    num_images: int = 1,
    seed: int | None = None,
    device=None,
    dtype=None,
    **knobs: Any,
) -> list:
    """Generate images for prompts with any model: the one-call Python API.

    Args:
        prompts: a caption or a list of captions.
        model: a model reference (default: the bundled model).
        num_images: images per prompt.
        seed: makes the result repeatable.
        device: ``cpu`` (default) or ``cuda``/``auto``.
        dtype: ``fp32`` (default), ``bf16`` or ``fp16``.
        **knobs: family knobs (see :class:`Generator`).

    Returns:
        ``len(prompts) * num_images`` PIL images, prompt-major.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    generator = load_generator(model, device=device, dtype=dtype)
    return generator.generate(list(prompts), num_images=num_images, seed=seed, **knobs)


class UnknownKnobError(DishgenError, TypeError):
    """A generation knob the family does not take (a ``TypeError``, shown by the CLI as one line)."""


# One knob vocabulary for the CLI, Python, the web page and evaluation: the diffusers names are the
# knobs' names; these short spellings (the CLI's flags) are accepted everywhere as aliases.
KNOB_ALIASES = {
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "negative": "negative_prompt",
}


def normalize_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Rename alias knobs (``steps``...) to their canonical names; giving both spellings is an error."""
    out: dict[str, Any] = {}
    for key, value in knobs.items():
        name = KNOB_ALIASES.get(key, key)
        if name in out:
            raise UnknownKnobError(f"{key!r} and {name!r} are the same knob; give it once")
        out[name] = value
    return out


def check_knobs(family: str, allowed: tuple[str, ...], knobs: dict[str, Any]) -> dict[str, Any]:
    """Normalize alias knobs and raise a clear error for knobs the family does not take.

    Returns:
        the knobs under their canonical names.
    """
    knobs = normalize_knobs(knobs)
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise UnknownKnobError(
            f"the {family} family does not take {', '.join(unknown)}; it takes: {', '.join(allowed) or 'no knobs'}"
        )
    return knobs
