"""CLIP text towers through transformers: ``clip:<hub id or folder>``.

Examples of ids: ``clip:laion/CLIP-ViT-L-14-laion2B-s32B-b82K`` (768-d, the original project's
choice), ``clip:openai/clip-vit-base-patch32`` (512-d), ``clip:/models/my-clip`` (a local
``save_pretrained`` folder of a ``CLIPModel`` or ``CLIPTextModelWithProjection``, or a diffusers
pipeline folder with ``text_encoder/`` and ``tokenizer/``).

The embedding is CLIP's projected text embedding (``text_embeds``), L2-normalised, so it lives
in the joint image-text space. A text model saved without its projection (a Stable Diffusion
``text_encoder/``) gives its normalised pooled output instead, of size ``hidden_size``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dishgen.text import TextEncoderNotAvailable, quiet_transformers

MAX_LENGTH = 77  # CLIP's context length


def _locate(name_or_path: str) -> tuple[str, str | Path, str | Path]:
    """Return ``(id, model location, tokenizer location)`` for a hub id or a local folder."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path.resolve()
        if (path / "text_encoder").is_dir():  # a diffusers pipeline folder
            return f"clip:{path}", path / "text_encoder", path / "tokenizer"
        return f"clip:{path}", path, path
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise TextEncoderNotAvailable(
            f"text encoder 'clip:{name_or_path}': folder {str(path)!r} does not exist; pass an existing "
            "save_pretrained folder or a hub id such as clip:openai/clip-vit-base-patch32"
        )
    from dishgen.hub import resolve_hub_model

    source = resolve_hub_model(name_or_path, what="CLIP text encoder", option="text_encoder=clip:PATH",
                               marker="config.json", error=TextEncoderNotAvailable)
    return f"clip:{name_or_path}", source, source


class CLIPTextEncoder:
    """A frozen CLIP text tower producing unit-length embeddings.

    Args:
        name_or_path: a hub id or a local folder (see the module docs).
        device: where to run the model (CPU by default).
        batch_size: captions per forward pass.

    Raises:
        TextEncoderNotAvailable: the folder does not exist, or the hub id cannot be loaded here
            (not a CLIP model, or a download that failed).
            A hub id that is not cached while the hub cannot be reached fails within about
            1.5 s (see :mod:`dishgen.hub`).
    """

    def __init__(self, name_or_path: str, device=None, batch_size: int = 64):
        self.id, model_location, tokenizer_location = _locate(name_or_path)  # fails fast when offline
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        self.device = torch.device(device or "cpu")
        self.batch_size = batch_size
        try:
            with quiet_transformers():  # the load report would list the vision tower's unused keys
                self.tokenizer = CLIPTokenizer.from_pretrained(tokenizer_location, model_max_length=MAX_LENGTH)
                model, info = CLIPTextModelWithProjection.from_pretrained(model_location, output_loading_info=True)
                self.projected = not any("text_projection" in key for key in info.get("missing_keys", []))
                if not self.projected:  # no trained projection: use the pooled output, not random weights
                    model = CLIPTextModel.from_pretrained(model_location)
        except (OSError, ValueError, KeyError) as err:
            raise TextEncoderNotAvailable(
                f"could not load text encoder {self.id!r}: {err}. Without network access, download the "
                "model on a connected machine (hf download ...) or pass a local folder"
            ) from err
        self.model = model.to(self.device).eval().requires_grad_(False)
        config = self.model.config
        self.dim = int(config.projection_dim if self.projected else config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Encode captions. Returns a (B, dim) float32 CPU tensor of unit vectors."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt",
            ).to(self.device)
            output = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            vectors = output.text_embeds if self.projected else output.pooler_output  # (B, dim)
            out.append(torch.nn.functional.normalize(vectors.float(), dim=-1).cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)
