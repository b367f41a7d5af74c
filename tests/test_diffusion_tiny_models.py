"""The tiny local models that other tests build on: they load offline with the standard classes."""

from __future__ import annotations

import torch


def test_tiny_clip_loads_with_real_tokenizer(tiny_clip_dir):
    from PIL import Image
    from transformers import AutoProcessor, CLIPModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_clip_dir)
    # OpenAI CLIP's ids for this sentence (start, a, photo, of, a, cat, end).
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_clip_dir)
    inputs = processor(text=["sarma", "ćevapi"], images=[Image.new("RGB", (50, 40))] * 3,
                       return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (3, 2)
    assert torch.isfinite(out.logits_per_image).all()


def test_tiny_sd_generates_64px(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    assert pipe.vae_scale_factor == 8
    out = pipe("sarma", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3)
