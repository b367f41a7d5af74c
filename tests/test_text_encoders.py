"""Text encoders: the packaged MiniLM, a tiny locally built CLIP, the embedding cache."""

from __future__ import annotations

import pytest
import torch

from dishgen.text import TextEncoderNotAvailable, load_text_encoder
from dishgen.text.cache import cache_path, encode_cached


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def test_minilm_gives_unit_384d_vectors_with_meaning(minilm):
    assert (minilm.id, minilm.dim) == ("minilm", 384)
    v = minilm.encode(["ćevapi sa lukom i kajmakom", "sarma u kiselom kupusu", "a red car"])
    assert v.shape == (3, 384) and v.dtype == torch.float32
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    food, car = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert food > car + 0.2, (food, car)
    assert minilm.encode([]).shape == (0, 384)


def test_clip_encoder_from_a_local_folder(tiny_clip_dir):
    encoder = load_text_encoder(f"clip:{tiny_clip_dir}")
    assert encoder.id == f"clip:{tiny_clip_dir.resolve()}"
    assert encoder.dim == 32 and encoder.projected  # CLIPModel folder: projected text embeddings
    texts = ["gibanica, a cheese pie", "pasulj, bean stew", "gibanica, a cheese pie"]
    v = encoder.encode(texts)
    assert v.shape == (3, 32)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(v[0], v[2])
    assert not torch.allclose(v[0], v[1])
    # The same as CLIP's own text_embeds, normalised (no hidden preprocessing of ours).
    from transformers import CLIPModel, CLIPTokenizer

    model, tok = CLIPModel.from_pretrained(tiny_clip_dir).eval(), CLIPTokenizer.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        ref = model.get_text_features(**tok(texts[:1], return_tensors="pt", padding=True))
    ref = getattr(ref, "pooler_output", ref)
    torch.testing.assert_close(v[:1], torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=1e-4)
    long = encoder.encode(["word " * 200])  # longer than 77 tokens: truncated, not an error
    assert long.shape == (1, 32)


def test_clip_text_model_without_projection_uses_pooled_output(tiny_clip_dir, tmp_path):
    import shutil

    from transformers import CLIPTextModel

    # A Stable Diffusion-style folder: text_encoder/ (no projection) and tokenizer/.
    pipe = tmp_path / "pipe"
    CLIPTextModel.from_pretrained(tiny_clip_dir).save_pretrained(pipe / "text_encoder")
    (pipe / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_clip_dir / name).is_file():
            shutil.copy(tiny_clip_dir / name, pipe / "tokenizer" / name)
    encoder = load_text_encoder(f"clip:{pipe}")
    assert not encoder.projected and encoder.dim == 32
    assert encoder.encode(["pljeskavica"]).norm().item() == pytest.approx(1.0, abs=1e-5)


def test_unavailable_encoders_fail_clearly(tmp_path):
    with pytest.raises(TextEncoderNotAvailable, match="does not exist"):
        load_text_encoder(f"clip:{tmp_path / 'missing'}")
    with pytest.raises(TextEncoderNotAvailable, match="CLIP text encoder nobody/no-such-clip is not in the local"):
        load_text_encoder("clip:nobody/no-such-clip")  # offline: no hub
    with pytest.raises(TextEncoderNotAvailable, match="unknown text encoder 'bert'"):
        load_text_encoder("bert")


class CountingEncoder:
    id = "counting:v1"
    dim = 4

    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen += list(texts)
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])


def test_embedding_cache_encodes_each_caption_once(tmp_path):
    encoder = CountingEncoder()
    first = encode_cached(encoder, ["ajvar", "burek", "ajvar"], tmp_path)
    assert sorted(encoder.seen) == ["ajvar", "burek"]
    assert cache_path(tmp_path, encoder.id).is_file()
    again = encode_cached(CountingEncoder(), ["burek", "ajvar"], tmp_path)
    torch.testing.assert_close(again, first[[1, 0]])
    fresh = CountingEncoder()
    encode_cached(fresh, ["ajvar", "kajmak"], tmp_path)
    assert fresh.seen == ["kajmak"]  # only the new caption
    other = type("Other", (CountingEncoder,), {"id": "counting:v2"})()
    encode_cached(other, ["ajvar"], tmp_path)
    assert other.seen == ["ajvar"]  # the cache is per encoder id
