"""The web app: a gradio page over :mod:`dishgen.generation`.

Anyone who never opens a terminal can type a caption and get pictures. The page offers only
models from an allow-list (the bundled model, run directories found under ``--runs-dir`` and
models named with ``--model NAME=REF``), never a free file path; inputs are limited; a queue
makes concurrent users wait instead of crashing the process; the server binds to localhost and
makes no public share link unless asked.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError
from dishgen.generation import ModelReferenceError, load_generator, resolve_model
from dishgen.runs import list_runs

log = logging.getLogger(__name__)


class InputError(DishgenError, ValueError):
    """A request the page refuses, with a message meant for the person using it."""


@dataclass
class WebLimits:
    """What one request may ask for."""

    max_caption_chars: int = 300
    max_images: int = 8
    max_steps: int = 100
    max_guidance: float = 20.0
    max_truncation: float = 2.0
    max_temperature: float = 2.0
    concurrency: int = 1  # generations running at once; others wait in the queue
    queue_size: int = 64


class ModelChoices:
    """The allow-list of models the page offers: display name -> model reference and family."""

    def __init__(self, references: dict[str, str]):
        self.references: dict[str, str] = {}
        self.families: dict[str, str] = {}
        for name, reference in references.items():
            try:
                family, _ = resolve_model(reference)
            except ModelReferenceError as err:
                log.warning("model %s (%s) left out: %s", name, reference, err)
                continue
            self.references[name] = reference
            self.families[name] = family
        if not self.references:
            raise ModelReferenceError(
                "no model to serve: install the bundled model, pass --runs-dir DIR or --model NAME=REF"
            )

    @classmethod
    def discover(cls, models: list[str] = (), runs_dirs: list[str | Path] = (), include_default: bool = True) -> ModelChoices:
        """Build the list from ``NAME=REF`` strings, folders of run directories and the bundled model."""
        references: dict[str, str] = {}
        if include_default:
            references["default (bundled)"] = "default"
        for runs_dir in runs_dirs:
            root = Path(runs_dir)
            if not root.is_dir():
                raise ModelReferenceError(f"--runs-dir {str(root)!r} is not a folder")
            for run in list_runs(root):
                references[f"run: {run.name}"] = str(run)
        for item in models:
            if "=" not in item:
                raise ModelReferenceError(f"--model {item!r} must be NAME=REF (a run folder or a diffusers id/folder)")
            name, ref = item.split("=", 1)
            references[name.strip()] = ref.strip()
        return cls(references)

    @property
    def names(self) -> list[str]:
        return list(self.references)

    def family(self, name: str):
        """The registry's :class:`~dishgen.families.Family` of model ``name`` (``None`` if unknown)."""
        from dishgen.families.registry import find_family

        return find_family(self.families.get(name))

    def has_steps(self, name: str) -> bool:
        """Whether model ``name`` samples in steps (the page shows Steps and Guidance)."""
        family = self.family(name)
        return bool(family and family.steps)

    def takes_negative_prompt(self, name: str) -> bool:
        """Whether model ``name`` takes a negative caption (the page shows its box)."""
        family = self.family(name)
        return bool(family and family.negative_prompt)

    def takes(self, name: str, knob: str) -> bool:
        """Whether model ``name``'s family takes generation knob ``knob`` (e.g. ``truncation``)."""
        family = self.family(name)
        return bool(family and knob in family.knobs)

    def is_diffusion(self, name: str) -> bool:
        """Kept for callers of earlier releases: :meth:`has_steps`."""
        return self.has_steps(name)


class GenerationService:
    """Validates requests and runs them; loaded models are kept (the two most recent)."""

    def __init__(self, choices: ModelChoices, limits: WebLimits | None = None, device=None, dtype=None,
                 loader=load_generator, cache_size: int = 2):
        self.choices = choices
        self.limits = limits or WebLimits()
        self.device, self.dtype = device, dtype
        self._loader = loader
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._model_locks: dict[str, threading.Lock] = {}

    def validate(self, caption: str, negative: str, model: str, num_images, seed, steps, guidance,
                 truncation=1.0, anchor=1.0, temperature=1.0) -> dict[str, Any]:
        """Check one request; returns the generate() arguments or raises :class:`InputError`.

        Each knob is passed on only to a model whose family takes it (steps and guidance to
        diffusion, truncation and anchor to the GANs, temperature to the VAE)."""
        lim = self.limits
        caption = (caption or "").strip()
        if not caption:
            raise InputError("Please type a caption, for example: Sarma, cabbage rolls served in a clay pot.")
        if len(caption) > lim.max_caption_chars:
            raise InputError(f"The caption is {len(caption)} characters long; the limit is {lim.max_caption_chars}.")
        negative = (negative or "").strip()
        if len(negative) > lim.max_caption_chars:
            raise InputError(f"The negative caption is too long (limit {lim.max_caption_chars} characters).")
        if model not in self.choices.references:
            raise InputError(f"Unknown model {model!r}. Choose one of: {', '.join(self.choices.names)}.")
        num_images = _as_int(num_images, "Number of images")
        if not 1 <= num_images <= lim.max_images:
            raise InputError(f"Number of images must be between 1 and {lim.max_images}.")
        seed = _as_int(seed, "Seed") if seed not in (None, "") else -1
        if seed < -1 or seed > 2**31 - 1:
            raise InputError("Seed must be -1 (random) or between 0 and 2147483647.")
        knobs: dict[str, Any] = {}
        if self.choices.has_steps(model):
            steps = _as_int(steps, "Steps")
            if not 1 <= steps <= lim.max_steps:
                raise InputError(f"Steps must be between 1 and {lim.max_steps}.")
            try:
                guidance = float(guidance)
            except (TypeError, ValueError):
                raise InputError("Guidance must be a number.") from None
            if not 0 <= guidance <= lim.max_guidance:
                raise InputError(f"Guidance must be between 0 and {lim.max_guidance}.")
            knobs.update(num_inference_steps=steps, guidance_scale=guidance)
        if negative and self.choices.takes_negative_prompt(model):
            knobs["negative_prompt"] = negative
        for knob, value, top in (("truncation", truncation, lim.max_truncation), ("anchor", anchor, 1.0),
                                 ("temperature", temperature, lim.max_temperature)):
            if self.choices.takes(model, knob):
                knobs[knob] = _in_range(value, knob.capitalize(), 0.0, top)
        return {"caption": caption, "model": model, "num_images": num_images,
                "seed": random.randrange(2**31) if seed == -1 else seed, "knobs": knobs}

    def generator(self, model: str):
        with self._lock:
            if model in self._cache:
                self._cache.move_to_end(model)
                return self._cache[model]
        loaded = self._loader(self.choices.references[model], device=self.device, dtype=self.dtype)
        with self._lock:
            self._cache[model] = loaded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return loaded

    def generate(self, caption, negative, model, num_images, seed, steps=25, guidance=7.0, **knobs) -> tuple[list, int]:
        """Validate and run one request (:meth:`run` without its note).

        Returns:
            ``(images, seed used)``.
        """
        images, used_seed, _ = self.run(caption, negative, model, num_images, seed, steps, guidance, **knobs)
        return images, used_seed

    def run(self, caption, negative, model, num_images, seed, steps=25, guidance=7.0, truncation=1.0, anchor=1.0,
            temperature=1.0) -> tuple[list, int, str]:
        """Validate and run one request.

        Each image carries its provenance (caption, seed and index, model reference, knobs) in
        ``image.info``, which becomes the ``parameters`` and ``dishgen`` chunks of the PNG the
        gallery serves for download. A GAN saved without its training captions cannot anchor:
        there ``anchor`` is dropped and the note says so.

        Returns:
            ``(images, seed used, note)``: the note says which training dishes the caption was
            drawn as (anchoring), or is empty.
        """
        from dishgen.caption_bank import drawn_as
        from dishgen.generation_io import attach_provenance, call_provenance, image_provenance

        request = self.validate(caption, negative, model, num_images, seed, steps, guidance, truncation, anchor,
                                temperature)
        gen = self.generator(request["model"])
        knobs, note = dict(request["knobs"]), ""
        if "anchor" in knobs and getattr(gen, "bank", None) is None:
            if knobs.pop("anchor"):
                note = "This model was saved without its training captions, so the caption is not anchored."
        with self._lock:
            model_lock = self._model_locks.setdefault(request["model"], threading.Lock())
        with model_lock if "anchor" in knobs else contextlib.nullcontext():  # last_neighbours is this call's
            images = gen.generate([request["caption"]], num_images=request["num_images"], seed=request["seed"], **knobs)
            neighbours = getattr(gen, "last_neighbours", {}).get(request["caption"]) if "anchor" in knobs else None
        if neighbours:
            note = f"Anchored on training dishes: {drawn_as(neighbours)}."
        call = call_provenance(gen, model=self.choices.references[request["model"]], seed=request["seed"],
                               knobs=knobs, device=self.device, dtype=self.dtype)
        for index, image in enumerate(images):
            attach_provenance(image, image_provenance(call, request["caption"], index, image.size))
        return images, request["seed"], note


def _in_range(value, what: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number.") from None
    if not low <= number <= high:
        raise InputError(f"{what} must be between {low:g} and {high:g}.")
    return number


def _as_int(value, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a whole number.") from None
    if not number.is_integer():
        raise InputError(f"{what} must be a whole number.")
    return int(number)


EXAMPLES = [
    "Sarma, cabbage rolls served in a clay pot",
    "Ćevapi with chopped onions and flatbread on a white plate",
    "Baklava, layered filo pastry with walnuts and syrup",
    "Goulash, a paprika meat stew in a deep bowl",
]


FAMILY_KNOBS = ("truncation", "anchor", "temperature")  # the page's sliders beyond steps and guidance, in order


def build_app(service: GenerationService):
    """The gradio Blocks page for ``service`` (not launched)."""
    import gradio as gr

    lim = service.limits
    first = service.choices.names[0]

    def handle(caption, negative, model, num_images, seed, steps, guidance, truncation, anchor, temperature):
        try:
            images, used_seed, note = service.run(caption, negative, model, num_images, seed, steps, guidance,
                                                  truncation, anchor, temperature)
        except InputError as err:
            raise gr.Error(str(err)) from None
        except Exception as err:  # the server keeps serving; the person sees what went wrong
            log.exception("generation failed")
            raise gr.Error(f"Generation failed: {err}") from None
        return [(img, f"{caption.strip()} #{i + 1}") for i, img in enumerate(images)], used_seed, note

    def on_model(model):
        stepped = service.choices.has_steps(model)
        return (gr.update(visible=service.choices.takes_negative_prompt(model)), gr.update(visible=stepped),
                gr.update(visible=stepped), *(gr.update(visible=service.choices.takes(model, knob)) for knob in FAMILY_KNOBS))

    with gr.Blocks(title="dishgen") as app:
        gr.Markdown("# dishgen\nPhotographs of Serbian dishes from a short caption.")
        with gr.Row():
            with gr.Column(scale=2):
                caption = gr.Textbox(label="Caption", placeholder=EXAMPLES[0], max_length=lim.max_caption_chars, lines=2,
                                     elem_id="caption")
                negative = gr.Textbox(label="Negative caption", placeholder="blurry, text, watermark",
                                      max_length=lim.max_caption_chars,
                                      visible=service.choices.takes_negative_prompt(first))
                model = gr.Dropdown(service.choices.names, value=first, label="Model")
                with gr.Row():
                    num_images = gr.Slider(1, lim.max_images, value=4, step=1, label="Images")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                with gr.Row():
                    steps = gr.Slider(1, lim.max_steps, value=25, step=1, label="Steps",
                                      visible=service.choices.has_steps(first))
                    guidance = gr.Slider(0, lim.max_guidance, value=7.0, step=0.5, label="Guidance scale",
                                         visible=service.choices.has_steps(first))
                with gr.Row():
                    truncation = gr.Slider(0, lim.max_truncation, value=1.0, step=0.05, label="Truncation (1 = none)",
                                           visible=service.choices.takes(first, "truncation"))
                    anchor = gr.Slider(0, 1, value=1.0, step=0.05, label="Anchor on training captions",
                                       visible=service.choices.takes(first, "anchor"))
                    temperature = gr.Slider(0, lim.max_temperature, value=1.0, step=0.05, label="Temperature",
                                            visible=service.choices.takes(first, "temperature"))
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                gr.Examples(EXAMPLES, inputs=[caption])
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Images", columns=4, height="auto", format="png", elem_id="gallery")
                used_seed = gr.Number(label="Seed used", interactive=False)
                note = gr.Markdown(elem_id="note")
        model.change(on_model, [model], [negative, steps, guidance, truncation, anchor, temperature])
        inputs = [caption, negative, model, num_images, seed, steps, guidance, truncation, anchor, temperature]
        outputs = [gallery, used_seed, note]
        button.click(handle, inputs, outputs, api_name="generate", concurrency_limit=lim.concurrency)
        caption.submit(handle, inputs, outputs, api_name=False, concurrency_limit=lim.concurrency)
    app.queue(max_size=lim.queue_size, default_concurrency_limit=lim.concurrency)
    return app


def serve(service: GenerationService, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          block: bool = True):
    """Launch the page. Returns the app (and keeps running when ``block`` is false)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(service)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
               show_error=True, inbrowser=False)
    return app
