"""Synthetic data: caption variations rendered by a generator, and real + synthetic mixes.

Two steps, each a command of ``dishgen data``::

    augment_dataset("datasets/dishes", "datasets/synth", AugmentOptions(variations=3))
    mix_datasets("datasets/dishes", "datasets/synth", "datasets/mixed",
                 MixOptions(synthetic_fraction=0.5))

``augment`` writes, for each training photo, ``variations`` new captions of the same dish
(plating, angle, setting and the ingredients shown vary) and renders each one
``images_per_caption`` times through the common generation interface. The result is a dataset in
the standard format whose rows carry ``synthetic: true``, the source caption and image, and the
generator with its settings. Work happens in ``OUT.partial/``: each rendered batch is written
(images, then rows) as soon as it is done, so an interrupted run resumes without redoing or
duplicating images, and the finished dataset is renamed into place.

``mix`` combines a real dataset with a synthetic one into ``train/``, ``validation/`` and
``test/`` with set shares of synthetic rows (see :class:`MixOptions`); a dish never straddles two
splits, and synthetic images identical to a real one (or to each other) are removed first.
"""

from dishgen.data.synth.augment import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_POSITIVE_SUFFIX,
    DIFFUSION_FAMILIES,
    AugmentOptions,
    Prompt,
    augment_dataset,
    augment_summary_text,
)
from dishgen.data.synth.common import SynthError
from dishgen.data.synth.mix import (
    SPLITS,
    MixOptions,
    content_hash,
    mix_datasets,
    mix_summary_text,
)
from dishgen.data.synth.variations import (
    MAX_WORDS,
    MIN_WORDS,
    VARIATION_PROMPT,
    VARIATIONS_PER_REQUEST,
    LLMVariator,
    TemplateVariator,
    VariationInput,
    VariationResult,
    get_variator,
    parse_variations,
    validate_variation,
)

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT", "DEFAULT_POSITIVE_SUFFIX", "DIFFUSION_FAMILIES", "MAX_WORDS",
    "MIN_WORDS", "SPLITS", "VARIATIONS_PER_REQUEST", "VARIATION_PROMPT", "AugmentOptions",
    "LLMVariator", "MixOptions", "Prompt", "SynthError", "TemplateVariator", "VariationInput",
    "VariationResult", "augment_dataset", "augment_summary_text", "content_hash", "get_variator",
    "mix_datasets", "mix_summary_text", "parse_variations", "validate_variation",
]
