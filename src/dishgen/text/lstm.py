"""A word-level tokenizer and a bidirectional LSTM text encoder, trained jointly with a model.

This is the text path of the classic conditional VAE tutorials: captions are split into words,
mapped to ids from a vocabulary built on the training captions (with special tokens for padding,
unknown words and sequence boundaries), and read by a bidirectional LSTM whose final states
become the condition vector. Unlike MiniLM or CLIP it has no pretrained weights: it learns only
what the image model needs. The vocabulary is saved as JSON beside the model weights::

    tokenizer = WordTokenizer.build(train_captions, min_freq=1)
    encoder = LSTMTextEncoder(LSTMConfig(vocab_size=len(tokenizer)), tokenizer)
    ids = tokenizer.encode(["A photo of sarma"], max_length=32)   # (1, T) int64, 0 = <pad>
    c = encoder(ids)                                               # (1, out_dim)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dishgen.errors import DishgenError
from dishgen.fileio import atomic_write_json

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3 in every vocabulary
VOCAB_FILE = "vocab.json"

# Words (letters with diacritics, digits) and single punctuation marks.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class VocabularyError(DishgenError, ValueError):
    """A vocabulary file that is missing or malformed."""


class WordTokenizer:
    """Lower-cased word tokenizer with a fixed vocabulary and special tokens.

    Args:
        vocab: the tokens in id order; must start with ``<pad>, <unk>, <bos>, <eos>``.
        lowercase: lower-case captions before splitting.
    """

    def __init__(self, vocab: list[str], lowercase: bool = True):
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise VocabularyError(f"a vocabulary must start with {', '.join(SPECIAL_TOKENS)}; got {vocab[:4]}")
        if len(set(vocab)) != len(vocab):
            raise VocabularyError("a vocabulary must not repeat tokens")
        self.vocab = list(vocab)
        self.lowercase = lowercase
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(4)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None,
              lowercase: bool = True) -> WordTokenizer:
        """Build a vocabulary from captions: words seen at least ``min_freq`` times, most frequent first.

        Ties are broken alphabetically, so the same captions always give the same ids.
        """
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(_split(text, lowercase))
        words = sorted((w for w, n in counts.items() if n >= min_freq and w not in SPECIAL_TOKENS),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(list(SPECIAL_TOKENS) + words, lowercase=lowercase)

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """Split a caption into word and punctuation tokens."""
        return _split(text, self.lowercase)

    def encode(self, texts: list[str], max_length: int = 32) -> torch.Tensor:
        """Captions -> (B, T) int64 ids: ``<bos> words... <eos>``, right-padded with ``<pad>`` (0).

        Captions longer than ``max_length`` are cut, keeping ``<eos>`` last. ``T`` is the longest
        encoded caption in the batch. Unknown words map to ``<unk>``.
        """
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 (<bos>, a word, <eos>); got {max_length}")
        rows = []
        for text in texts:
            ids = [self.token_to_id.get(t, self.unk_id) for t in self.tokenize(text)]
            rows.append([self.bos_id] + ids[: max_length - 2] + [self.eos_id])
        width = max((len(r) for r in rows), default=2)
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def decode(self, ids) -> str:
        """Ids -> the words they stand for (special tokens dropped, except ``<unk>``)."""
        skip = {self.pad_id, self.bos_id, self.eos_id}
        return " ".join(self.vocab[int(i)] for i in ids if int(i) not in skip)

    def to_dict(self) -> dict:
        return {"type": "word", "version": 1, "lowercase": self.lowercase,
                "special_tokens": list(SPECIAL_TOKENS), "vocab": self.vocab}

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (atomically). ``path`` may be a folder (-> ``vocab.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Read a vocabulary written by :meth:`save`. ``path`` may be the folder holding ``vocab.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        if not path.is_file():
            raise VocabularyError(f"vocabulary file {str(path)!r} is missing; it is saved beside an LSTM model's weights")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(data["vocab"]), lowercase=bool(data.get("lowercase", True)))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise VocabularyError(f"vocabulary file {str(path)!r} is malformed: {err}") from err


def _split(text: str, lowercase: bool) -> list[str]:
    return _TOKEN_RE.findall(text.lower() if lowercase else text)


@dataclass
class LSTMConfig:
    """Sizes of the LSTM text encoder.

    Attributes:
        vocab_size: number of tokens, specials included.
        embed_dim: word embedding size.
        hidden_dim: LSTM state size per direction.
        num_layers: stacked LSTM layers.
        out_dim: size of the caption vector it returns.
        max_length: longest caption, in tokens with ``<bos>``/``<eos>``.
    """

    vocab_size: int = 4
    embed_dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 1
    out_dim: int = 256
    max_length: int = 32


class LSTMTextEncoder(nn.Module):
    """Word embeddings -> bidirectional LSTM -> (last forward state, first backward state) -> linear.

    It follows the :class:`dishgen.text.TextEncoder` protocol (``id``, ``dim``, ``encode``), but
    unlike the frozen encoders its weights are part of the model it conditions and are trained
    with it.
    """

    id = "lstm"

    def __init__(self, config: LSTMConfig, tokenizer: WordTokenizer | None = None):
        super().__init__()
        if tokenizer is not None and len(tokenizer) != config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but config.vocab_size is {config.vocab_size}")
        self.config = config
        self.tokenizer = tokenizer
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_dim, num_layers=config.num_layers,
                            batch_first=True, bidirectional=True)
        self.proj = nn.Sequential(nn.Linear(2 * config.hidden_dim, config.out_dim), nn.LayerNorm(config.out_dim))

    @property
    def dim(self) -> int:
        return self.config.out_dim

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids, 0-padded on the right -> (B, out_dim) caption vectors."""
        lengths = (token_ids != 0).sum(1).clamp(min=1).cpu()  # pack_padded_sequence wants CPU lengths
        embedded = self.embedding(token_ids)  # (B, T, E)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (num_layers * 2, B, H)
        last = torch.cat([h[-2], h[-1]], dim=-1)  # top layer, forward and backward: (B, 2H)
        return self.proj(last)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Captions -> (B, out_dim) float32 vectors (needs the tokenizer)."""
        if self.tokenizer is None:
            raise ValueError("this LSTMTextEncoder has no tokenizer; load one with WordTokenizer.load(folder)")
        device = self.embedding.weight.device
        ids = self.tokenizer.encode(list(texts), self.config.max_length).to(device)
        return self.forward(ids).float()
