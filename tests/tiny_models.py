"""Tiny models built locally for the tests: no download, a second or two each.

- :func:`write_clip_tokenizer` writes OpenAI's CLIP BPE tokenizer (``vocab.json`` with 49,408
  entries, ``merges.txt`` with 48,894 merges) from ``src/dishgen/data/llm/clip_bpe/bpe_simple_vocab_16e6.txt.gz``
  (the file open-clip-torch ships, MIT, license kept beside it). It reproduces OpenAI's token ids.
- :func:`build_tiny_clip` saves a tiny ``CLIPModel`` (text + vision towers, 32 px images,
  8 px patches) with its tokenizer and image processor.
- :func:`build_tiny_sd` saves a tiny ``StableDiffusionPipeline`` (UNet with 32/64 channels,
  a 4-block VAE so the 8x downscale matches SD, a 32-wide CLIP text encoder with the real vocab).
- :func:`build_tiny_sdxl` saves a tiny ``StableDiffusionXLPipeline`` (two text encoders, the second
  with a projection; a UNet with SDXL's ``text_time`` added conditioning).

All weights are random but seeded, so two builds are identical.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from dishgen.data.llm.clip_tokens import PACKAGED_BPE as CLIP_BPE

CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    # Same construction as openai/CLIP simple_tokenizer.py.
    lines = gzip.open(CLIP_BPE, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer(path: str | Path):
    """Save the real CLIP tokenizer (``model_max_length=77``) to ``path``; returns it."""
    from transformers import CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab_and_merges()
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(path, model_max_length=77)
    tokenizer.save_pretrained(path)
    return tokenizer


def tiny_clip_text_config(hidden_size: int = 32, projection_dim: int = 32):
    """A small ``CLIPTextConfig`` with the real vocabulary and 77 positions."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def build_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    """Build and save a tiny CLIP model, tokenizer and image processor.

    Loadable offline with ``CLIPModel.from_pretrained(path)``, ``CLIPTokenizer.from_pretrained(path)``
    and ``AutoProcessor.from_pretrained(path)``.

    Args:
        path: output folder (created).
        seed: torch seed for the random weights.

    Returns:
        The folder.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPVisionConfig,
    )

    path = Path(path)
    tokenizer = write_clip_tokenizer(path)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32,
    )
    config = CLIPConfig(
        text_config=tiny_clip_text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=32
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def tiny_sd_components(seed: int = 0, tokenizer_dir: str | Path | None = None) -> dict:
    """The components of a tiny Stable Diffusion pipeline (random, seeded weights).

    Args:
        seed: torch seed.
        tokenizer_dir: where to write the tokenizer files (a temporary folder when None).
    """
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(tiny_clip_text_config())
    scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        num_train_timesteps=1000, clip_sample=False,
    )
    tokenizer = write_clip_tokenizer(tokenizer_dir or tempfile.mkdtemp(prefix="clip_tok_"))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
    }


def build_tiny_sd(path: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Build and save a tiny ``StableDiffusionPipeline`` (no safety checker).

    ``StableDiffusionPipeline.from_pretrained(path)`` loads it offline in under a second; a 64x64
    image in 4 steps takes about 0.1 s on one CPU core.

    Args:
        path: output folder (created).
        seed: torch seed for the random weights.
        prediction_type: the scheduler's ``prediction_type`` (``epsilon`` or ``v_prediction``).

    Returns:
        The folder.
    """
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    components = tiny_sd_components(seed)
    components["scheduler"].register_to_config(prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sdxl(path: str | Path, seed: int = 0) -> Path:
    """Build and save a tiny ``StableDiffusionXLPipeline`` (the layout of diffusers' own SDXL tests).

    Two 32-wide CLIP text encoders with the real vocabulary (the second a
    ``CLIPTextModelWithProjection``, whose pooled 32-d projection and six 8-d time ids make the
    UNet's 80-d ``text_time`` conditioning); cross-attention over both (32 + 32 = 64).

    Args:
        path: output folder (created).
        seed: torch seed for the random weights.

    Returns:
        The folder.
    """
    import tempfile

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    components = tiny_sd_components(seed)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=8,
    )
    tokenizer = write_clip_tokenizer(tempfile.mkdtemp(prefix="clip_tok_"))
    pipe = StableDiffusionXLPipeline(
        vae=components["vae"], unet=unet,
        text_encoder=CLIPTextModel(tiny_clip_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(tiny_clip_text_config()),
        tokenizer=tokenizer, tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1, num_train_timesteps=1000, timestep_spacing="leading"),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
