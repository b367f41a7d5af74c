"""The training captions of a GAN, kept with the model, to anchor unseen captions on what it learned.

A GAN trained on a few hundred dishes knows what those captions look like and nothing else: the
embedding of a caption it never saw (``"Pasulj prebranac, baked beans in a clay dish"``) lies
between and beyond the training captions, where the generator was never told what to draw, and it
draws something arbitrary (bundled model, step 13,144: a green slab for pasulj). Anchoring moves
the embedding onto the training captions first: a softmax-weighted mean of the ``k`` nearest
training embeddings by cosine similarity (kernel regression in the text encoder's space, as the
retrieval-conditioned models, e.g. KNN-Diffusion, condition on neighbours instead of on the raw
text). So pasulj is drawn as a blend of the dishes whose captions are nearest, *baked beans with
smoked pork* first, and a training caption, its own nearest neighbour, stays nearly itself.
Nearness also counts the words a caption shares with each training caption (TF-IDF), because the
encoder does not know Serbian dish names: the word ``ćevapi`` finds the training caption that says it.

``strength`` (the ``anchor`` generation knob) blends: 0 is the raw caption, 1 (the default of a
model that has a bank) the neighbours' mean. The file, ``captions.safetensors`` beside the
weights, holds ``embeddings`` ``(N, dim)`` in float16 and, in its metadata, the captions and dish
names as JSON lists, so that generation can say which dishes a caption was drawn as.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dishgen.errors import DishgenError

CAPTION_BANK_FILE = "captions.safetensors"
ANCHOR_NEIGHBOURS = 5  # k: training captions blended
ANCHOR_TEMPERATURE = 0.05  # softmax temperature on cosine similarity: 0.05 more similar weighs e times more
LEXICAL_WEIGHT = 0.5  # weight of the shared-words score beside the cosine (0 = embeddings alone)


class CaptionBankError(DishgenError, ValueError):
    """A caption bank file that cannot be read or does not fit its model."""


@dataclass
class CaptionBank:
    """Training captions, their dish names and their text embeddings ``(N, dim)`` (float32)."""

    embeddings: torch.Tensor
    texts: list[str]
    dishes: list[str]
    _words: list[frozenset[str]] = field(init=False, repr=False, compare=False)
    _idf: dict[str, float] = field(init=False, repr=False, compare=False)
    _norms: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self._words = [caption_words(text) for text in self.texts]
        counts = Counter(word for words in self._words for word in words)
        n = len(self.texts)
        self._idf = {word: math.log((n + 1) / (count + 0.5)) for word, count in counts.items()}
        self._norms = [math.sqrt(sum(self._idf[word] ** 2 for word in words)) or 1.0 for words in self._words]

    def lexical_scores(self, captions: list[str]) -> torch.Tensor:
        """``(B, N)``: the TF-IDF cosine (0-1) between each caption's words (:func:`caption_words`)
        and each training caption's. Common words (``photo``, ``with``, ``plate``) weigh little, rare
        ones (a dish's name) much; words the training captions never use count for nothing."""
        scores = torch.zeros(len(captions), len(self.texts))
        for i, caption in enumerate(captions):
            query = {word: self._idf[word] ** 2 for word in caption_words(caption) if word in self._idf}
            norm = math.sqrt(sum(query.values()))
            if norm > 0:
                for j, words in enumerate(self._words):
                    scores[i, j] = sum(query.get(word, 0.0) for word in words) / (norm * self._norms[j])
        return scores

    @classmethod
    def from_rows(cls, rows, embeddings: torch.Tensor) -> CaptionBank:
        """One entry per distinct caption (the first row of each), from a split's
        :class:`~dishgen.data.dataset.DatasetRow` list and its caption embeddings, row by row.
        A row without a dish name is named by its caption."""
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            first.setdefault(row.text, i)
        keep = list(first.values())
        return cls(embeddings[keep].detach().float().cpu(), [rows[i].text for i in keep],
                   [rows[i].dish or rows[i].text for i in keep])

    def save(self, path: str | Path) -> Path:
        """Write the bank atomically (float16 embeddings; captions and dishes in the metadata)."""
        from safetensors.torch import save_file

        from dishgen.fileio import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            save_file({"embeddings": self.embeddings.half().contiguous()}, str(tmp),
                      metadata={"texts": json.dumps(self.texts), "dishes": json.dumps(self.dishes)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> CaptionBank:
        """Read a bank written by :meth:`save`.

        Raises:
            CaptionBankError: the file is unreadable, or its parts disagree.
        """
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                embeddings = f.get_tensor("embeddings").float()
                meta = f.metadata() or {}
            texts, dishes = json.loads(meta["texts"]), json.loads(meta["dishes"])
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as err:
            raise CaptionBankError(f"caption bank {str(path)!r} cannot be read ({err}); move it away to generate "
                                   "without anchoring") from err
        if (embeddings.ndim != 2 or len(embeddings) == 0 or len(texts) != len(embeddings) or len(dishes) != len(texts)
                or not torch.isfinite(embeddings).all()):
            raise CaptionBankError(f"caption bank {str(path)!r} is inconsistent: {tuple(embeddings.shape)} embeddings, "
                                   f"{len(texts)} captions, {len(dishes)} dishes")
        return cls(embeddings, [str(t) for t in texts], [str(d) for d in dishes])

    def anchor(self, c: torch.Tensor, strength: float = 1.0, k: int = ANCHOR_NEIGHBOURS,
               temperature: float = ANCHOR_TEMPERATURE, captions: list[str] | None = None,
               lexical_weight: float | None = None) -> tuple[torch.Tensor, list[list[tuple[str, float]]]]:
        """Move caption embeddings ``c (B, dim)`` towards their nearest training captions.

        Nearness is the cosine similarity of the embeddings plus, when the ``captions`` behind
        ``c`` are given, ``lexical_weight`` (default :data:`LEXICAL_WEIGHT`) times the shared-words
        score (:meth:`lexical_scores`): hybrid retrieval, as search engines pair a dense model with word matching. A small English
        text encoder places a dish name it never learned (``"Ćevapi with onions and flatbread"``)
        by the words around it (a bread slice); the training caption that names ćevapi shares the
        rare word and wins.

        Returns:
            ``(anchored, neighbours)``: the embeddings ``strength * knn_mean + (1 - strength) * c``
            (``c``'s dtype and device), and for each row the ``k`` nearest training captions' dish
            names with their weights, heaviest first.
        """
        if not 0 <= strength <= 1:
            raise ValueError(f"anchor={strength} must be between 0 (the raw caption) and 1 (its nearest training captions)")
        if c.shape[-1] != self.embeddings.shape[1]:
            raise CaptionBankError(f"the caption bank holds {self.embeddings.shape[1]}-d embeddings, the text encoder "
                                   f"gives {c.shape[-1]}-d")
        query = c.detach().float().cpu()
        similarity = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(self.embeddings, dim=1).T
        lexical_weight = LEXICAL_WEIGHT if lexical_weight is None else lexical_weight
        if captions is not None and lexical_weight:
            if len(captions) != len(query):
                raise ValueError(f"{len(captions)} captions for {len(query)} embeddings")
            similarity = similarity + lexical_weight * self.lexical_scores(captions)
        top, index = similarity.topk(min(k, len(self.texts)), dim=1)
        weights = torch.softmax(top / temperature, dim=1)
        knn_mean = (weights[:, :, None] * self.embeddings[index]).sum(1)
        anchored = strength * knn_mean + (1 - strength) * query
        neighbours = [[(self.dishes[j], float(w)) for j, w in zip(row_index.tolist(), row_weights.tolist(), strict=True)]
                      for row_index, row_weights in zip(index, weights, strict=True)]
        return anchored.to(c.device, c.dtype), neighbours


def caption_words(text: str) -> frozenset[str]:
    """The words of a caption for matching: lower case, accents folded (``Ćevapi`` -> ``cevapi``,
    ``đ`` -> ``dj``), three letters or more, English plurals made singular (:func:`singular`)."""
    folded = unicodedata.normalize("NFKD", text.lower().replace("đ", "dj")).encode("ascii", "ignore").decode()
    return frozenset(singular(word) for word in re.findall(r"[a-z]{3,}", folded))


def singular(word: str) -> str:
    """``berries`` -> ``berry``, ``tomatoes`` -> ``tomato``, ``onions`` -> ``onion``; words of four
    letters or fewer and endings that are rarely plurals (``-ss``, ``-us``, ``-is``, ``-as``: ``gulas``) stay."""
    if len(word) <= 4:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("oes"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "as")):
        return word[:-1]
    return word


def find_caption_bank(folder: str | Path) -> Path | None:
    """The bank of a saved GAN folder: in the folder itself (an export), or for a
    ``checkpoint-<step>/`` folder in its run directory; ``None`` when there is none."""
    folder = Path(folder)
    candidates = [folder / CAPTION_BANK_FILE]
    if folder.name.startswith("checkpoint-"):
        candidates.append(folder.parent / CAPTION_BANK_FILE)
    return next((c for c in candidates if c.is_file()), None)


def drawn_as(neighbours: list[tuple[str, float]], top: int = 3, min_weight: float = 0.01) -> str:
    """``"Baked beans 0.71, Goulash 0.20"``: the ``top`` heaviest dishes of one caption's neighbours
    (:meth:`CaptionBank.anchor`), the weights of several captions of one dish summed."""
    per_dish: dict[str, float] = {}
    for dish, weight in neighbours:
        per_dish[dish] = per_dish.get(dish, 0.0) + weight
    heaviest = sorted(per_dish.items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{dish} {weight:.2f}" for dish, weight in heaviest if weight >= min_weight)
