"""Caption variations: new captions of the same dish, for :func:`~dishgen.data.synth.augment_dataset`.

``template`` (:class:`TemplateVariator`) varies plating, angle and setting offline and
deterministically; ``llm`` (:class:`LLMVariator`) asks an OpenAI-compatible server. Both return
only variations that pass :func:`validate_variation`: one line of 2 to 25 words that names the
dish and is not the source caption.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dishgen.data.caption import describe_dish
from dishgen.data.llm.answers import parse_json_answer
from dishgen.data.synth.common import SynthError

log = logging.getLogger(__name__)

MIN_WORDS, MAX_WORDS = 2, 25


@dataclass
class VariationInput:
    """One source caption to vary: its text, its dish, and a key that names the source row."""

    caption: str
    dish: str = ""
    key: str = ""


@dataclass
class VariationResult:
    """The valid variations written for one source caption, and why there are fewer if so."""

    texts: list[str]
    error: str | None = None


def _fold(text: str) -> str:
    """Lower case without diacritics ("Ćevapi" -> "cevapi"), for word matching."""
    text = unicodedata.normalize("NFKD", text.replace("đ", "dj").replace("Đ", "Dj"))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def _dish_words(dish: str) -> set[str]:
    words = set(re.findall(r"[a-z]{3,}", _fold(dish)))
    return words - {"the", "and", "with", "sa", "od", "na", "za", "u"}


def validate_variation(text: str, dish: str = "", source_caption: str = ""
                       ) -> tuple[str | None, str]:
    """Clean and check one caption variation.

    A variation is one line of 2 to 25 words that names the dish (a word of the dish name, or of
    its English description, when the dish is known) and is not the source caption itself.

    Returns:
        ``(clean_text, "")`` when usable, else ``(None, reason)``.
    """
    clean = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", str(text))  # list markers an LLM may add
    clean = re.sub(r"\s+", " ", clean).strip().strip("\"'“”")
    words = clean.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None, f"{len(words)} words, not {MIN_WORDS}-{MAX_WORDS} ({clean[:60]!r})"
    if _fold(clean).rstrip(".") == _fold(source_caption).strip().rstrip("."):
        return None, "same as the source caption"
    if dish:
        expected = _dish_words(dish) | _dish_words(describe_dish(dish))
        if expected and not expected & set(re.findall(r"[a-z]{3,}", _fold(clean))):
            return None, f"does not name the dish {dish!r} ({clean[:60]!r})"
    return clean, ""


_PLATING = [
    "served on a white ceramic plate", "in a rustic clay pot", "on a wooden serving board",
    "in a shallow enamel bowl", "on a patterned porcelain plate", "in a cast-iron pan",
    "on a blue stoneware plate", "in a deep earthenware dish",
]
_ANGLE = [
    "photographed from above", "close-up from the side", "seen at a 45-degree angle",
    "in a low-angle close-up", "seen at eye level",
]
_SETTING = [
    "on a linen tablecloth", "on a rustic kitchen table", "in a cosy village tavern",
    "on a sunny terrace", "on a marble countertop", "at a family lunch table",
]
_EXTRA = [
    "in soft natural light", "in warm evening light", "in bright daylight",
    "with cutlery beside it", "with a linen napkin beside it", "with a glass of water nearby",
]


class TemplateVariator:
    """Offline, deterministic variations: the dish phrase with new plating, angle and setting.

    The choices are drawn from a generator seeded by ``(seed, source key, caption)``, so a re-run
    writes the same variations and two photos of one dish get different ones.
    """

    name = "template"

    def __init__(self, seed: int = 0):
        self.seed = seed

    @property
    def description(self) -> str:
        return self.name

    def vary(self, item: VariationInput, n: int) -> VariationResult:
        """Up to ``n`` distinct variations of one caption."""
        phrase = describe_dish(item.dish) if item.dish.strip() else _caption_subject(item.caption)
        if not phrase:
            return VariationResult([], "no dish name or caption to vary")
        if sum(c.isupper() for c in phrase) > sum(c.islower() for c in phrase):
            phrase = phrase.lower()  # "7 DAY's CROISSANT" (FFML names) -> "7 day's croissant"
        phrase = phrase[0].upper() + phrase[1:]
        digest = hashlib.sha256(f"{self.seed}\0{item.key}\0{item.caption}".encode()).digest()
        rng = random.Random(digest)
        pools = [rng.sample(pool, len(pool)) for pool in (_PLATING, _ANGLE, _SETTING, _EXTRA)]
        texts: list[str] = []
        problem = ""
        for k in range(n * 3):  # a few spare draws for the rare duplicate or too-long one
            parts = [pool[(k + k // len(pool)) % len(pool)] for pool in pools]
            while parts:  # drop details from the end until the caption fits in 25 words
                candidate = f"{phrase}, {', '.join(parts)}."
                text, problem = validate_variation(candidate, item.dish, item.caption)
                if text is not None or "words" not in problem:
                    break
                parts.pop()
            if text is not None and text not in texts:
                texts.append(text)
            if len(texts) == n:
                return VariationResult(texts)
        why = problem or "duplicates"
        return VariationResult(texts, f"only {len(texts)} of {n} variations: {why}")

    def vary_many(self, items: list[VariationInput], n: int) -> list[VariationResult]:
        return [self.vary(item, n) for item in items]


def _caption_subject(caption: str) -> str:
    """The dish part of a caption: "A photo of sarma, served on..." -> "sarma"."""
    lead = r"^(a|an)\s+(photo|photograph|picture|image)\s+of\s+"
    text = re.sub(lead, "", caption.strip(), flags=re.I)
    return re.split(r",|\.| on | in | with | served ", text, maxsplit=1)[0].strip()


VARIATION_PROMPT = """\
You write captions for a text-to-image dataset of Serbian and Balkan dishes.
You get one caption of a food photograph and the dish it shows. Write {n} new captions of a \
photograph of the SAME dish. Stay faithful to the dish: keep its name and what it is made of; do \
not turn it into another dish. Vary what the photograph shows: which of its usual ingredients \
and side dishes are visible, the plating or vessel, the camera angle, the setting and the light.
Each caption is one line of {low} to {high} words, in English, with no quantities or recipes, \
and all {n} differ from each other and from the original.
Answer with a JSON object and nothing else: {{"variations": ["<caption>", ...]}}"""

VARIATIONS_PER_REQUEST = 4  # four 25-word captions fit in the answer budget of one request


def parse_variations(content: str | None) -> tuple[list[str] | None, str]:
    """Read an LLM answer: a JSON object with a ``variations`` list of strings (or a bare list).

    Returns:
        ``(strings, "")``, or ``(None, reason)`` for a malformed answer.
    """
    data, problem = parse_json_answer(content, allow_list=True)
    if problem:
        return None, problem
    if isinstance(data, dict):
        data = data.get("variations", data.get("captions"))
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        return None, "JSON without a 'variations' list of strings"
    return data, ""


class LLMVariator:
    """Variations written by an LLM on any OpenAI-compatible server.

    Client, key handling (``OPENAI_API_KEY`` only; never logged), retries with backoff, bounded
    concurrency and the preflight check come from :class:`dishgen.data.llm.LLMCaptioner`; this
    class adds the variation prompt, its validation and the re-asking of malformed or short
    answers. Sources with the same caption and dish share one request.

    Args:
        temperature: sampling temperature (higher than for captions: variety is the point).
        **options: ``base_url``, ``model``, ``concurrency``, ``max_retries``, ``timeout``,
            ``preflight`` of the LLM captioner.
    """

    name = "llm"

    def __init__(self, *, temperature: float = 0.9, **options: Any):
        from dishgen.data.llm import LLMCaptioner

        self.client = LLMCaptioner(temperature=temperature, **options)

    @property
    def description(self) -> str:
        return self.client.description

    def vary_many(self, items: list[VariationInput], n: int) -> list[VariationResult]:
        from tqdm.auto import tqdm

        unique = list(dict.fromkeys((item.caption, item.dish) for item in items))
        with ThreadPoolExecutor(max_workers=self.client.concurrency) as pool, tqdm(
            total=len(unique), desc=f"variations ({self.client.model})", unit="caption",
            leave=False,
        ) as bar:
            answers = {}
            results = pool.map(lambda k: self._ask(*k, n), unique)
            for key, result in zip(unique, results, strict=True):
                answers[key] = result
                bar.update()
        return [answers[(item.caption, item.dish)] for item in items]

    def _ask(self, caption: str, dish: str, n: int) -> VariationResult:
        """Ask until ``n`` valid variations are in hand or the attempts are spent."""
        import openai

        texts: list[str] = []
        attempts = (self.client.max_retries + 1) * -(-n // VARIATIONS_PER_REQUEST)
        problem = ""
        for _ in range(attempts):
            want = min(VARIATIONS_PER_REQUEST, n - len(texts))
            user = f"Caption: {caption}\nDish: {dish or 'as named in the caption'}"
            if texts:
                user += "\nAlready written (do not repeat):\n" + "\n".join(f"- {t}" for t in texts)
            messages = [
                {"role": "system",
                 "content": VARIATION_PROMPT.format(n=want, low=MIN_WORDS, high=MAX_WORDS)},
                {"role": "user", "content": user},
            ]
            try:
                content = self.client._complete(messages)
            except openai.APIError as err:  # the client has already retried 429/5xx/timeouts
                status = getattr(err, "status_code", None)
                detail = self.client._redact(getattr(err, "message", "") or str(err))[:200]
                what = f"HTTP {status}" if status else type(err).__name__
                return VariationResult(texts, f"LLM request failed ({what}): {detail}")
            candidates, problem = parse_variations(content)
            for candidate in candidates or []:
                text, reason = validate_variation(candidate, dish, caption)
                if text is None:
                    problem = reason
                elif text in texts:
                    problem = f"repeated an earlier variation ({text[:60]!r})"
                elif len(texts) < n:
                    texts.append(text)
            if len(texts) == n:
                return VariationResult(texts)
            log.info("variations of %r: %d of %d valid so far (%s); asking again",
                     caption, len(texts), n, problem)
        return VariationResult(
            texts, f"{len(texts)} of {n} valid variations after {attempts} requests: {problem}")


def get_variator(name: str, *, seed: int = 0, **options: Any):
    """``template`` (offline) or ``llm`` (an OpenAI-compatible server; preflight-checked now)."""
    if name == "template":
        if options:
            raise SynthError("the template variator takes no LLM options "
                             f"(got {', '.join(sorted(options))})")
        return TemplateVariator(seed)
    if name == "llm":
        return LLMVariator(**options)
    raise SynthError(f"unknown captioner {name!r} for variations; choose 'template' or 'llm'")
