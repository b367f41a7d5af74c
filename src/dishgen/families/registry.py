"""The family registry: every generator family described once, as data.

Callers (the CLI, the web page, evaluation, synthetic data) ask the registry what a family can do
instead of testing its name::

    family = get_family("lora")
    family.steps, family.negative_prompt, family.base_model   # True, True, True

Adding a family is its own files (network, trainer, loader) plus one :func:`register` line here.
Loaders and trainers are named as ``"module:attribute"`` strings, imported only when used, so
reading the registry costs no heavy import (and inference code never imports training code).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dishgen.errors import DishgenError


class UnknownFamilyError(DishgenError, LookupError):
    """A family name that no registered family has."""


@dataclass(frozen=True)
class Family:
    """What dishgen knows about one generator family.

    Attributes:
        name: the name saved in a model folder's ``config.json`` (``"family"``).
        loader: ``"module:function"`` (or the function) that loads a saved folder or reference as a
            :class:`dishgen.generation.Generator`: ``loader(location, device=, dtype=, **options)``.
        trainer: ``"module:command"`` of the click command ``dishgen train NAME``; ``None`` for a
            family dishgen does not train (a plain diffusers pipeline).
        summary: one line for ``dishgen train --help``.
        knobs: the generation knobs its generators take (``generate(..., **knobs)``).
        loader_options: the loader options it takes (``lora``, ``scheduler``, ``token``...).
        negative_prompt: takes a negative prompt (``negative_prompt`` knob).
        steps: samples in steps (``num_inference_steps`` and ``guidance_scale`` knobs).
        base_model: is trained on top of a pretrained base model (``--base``).
        prompt_suffix: benefits from style words appended to a caption (a positive suffix), as
            models trained on web captions do.
    """

    name: str
    loader: str | Callable[..., Any]
    trainer: str | None = None
    summary: str = ""
    knobs: tuple[str, ...] = ()
    loader_options: tuple[str, ...] = ()
    negative_prompt: bool = False
    steps: bool = False
    base_model: bool = False
    prompt_suffix: bool = False

    def load_function(self) -> Callable[..., Any]:
        """The loader, imported now."""
        return _resolve(self.loader)


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (or replace one of the same name) and return it."""
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family ``name``.

    Raises:
        UnknownFamilyError: no family of that name is registered (its message lists the known ones).
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(f"unknown family {name!r}; dishgen knows {', '.join(sorted(FAMILIES))}") from None


def find_family(name: str | None) -> Family | None:
    """The registered family ``name``, or ``None`` (for generators from outside the registry)."""
    return FAMILIES.get(name) if name else None


def families_taking(knob: str) -> list[str]:
    """The names of the families whose generators take ``knob``, in registry order."""
    return [family.name for family in FAMILIES.values() if knob in family.knobs]


_GAN_KNOBS = ("truncation", "anchor", "batch_size")
_DIFFUSION_KNOBS = ("negative_prompt", "guidance_scale", "num_inference_steps", "height", "width", "batch_size")
_DIFFUSION_OPTIONS = ("lora", "lora_scale", "scheduler", "token")
_DIFFUSION = dict(knobs=_DIFFUSION_KNOBS, loader_options=_DIFFUSION_OPTIONS, negative_prompt=True, steps=True,
                  prompt_suffix=True)

# One line per family.
register(Family("cgan", "dishgen.families.cgan:load_generator", "dishgen.cli.train_cgan:cgan",
                "Conditional GAN (CBN ResNet G, projection D, hinge, R1, EMA).", knobs=_GAN_KNOBS))
register(Family("fastgan", "dishgen.families.fastgan:load_generator", "dishgen.cli.train_fastgan:fastgan",
                "Few-shot GAN at 128 px (FastGAN: SLE generator, self-supervised projection D).", knobs=_GAN_KNOBS))
register(Family("cvae", "dishgen.families.cvae:load_generator", "dishgen.cli.train_cvae:cvae",
                "Conditional VAE (text-conditioned conv encoder/decoder).", knobs=("temperature", "batch_size")))
register(Family("lora", "dishgen.diffusion:load_generator", "dishgen.cli.train_lora:lora",
                "Stable Diffusion LoRA fine-tuning (UNet, optionally text encoder).", base_model=True, **_DIFFUSION))
register(Family("diffusion", "dishgen.diffusion:load_generator", **_DIFFUSION))
