"""The word tokenizer and the bidirectional LSTM text encoder."""

from __future__ import annotations

import json

import pytest
import torch

from dishgen.text.lstm import (
    SPECIAL_TOKENS,
    LSTMConfig,
    LSTMTextEncoder,
    VocabularyError,
    WordTokenizer,
)

CAPTIONS = [
    "A photo of sarma, cabbage rolls.",
    "A photo of ćevapi on a board.",
    "A photo of baklava.",
]


def test_vocabulary_starts_with_special_tokens_and_orders_by_frequency():
    tok = WordTokenizer.build(CAPTIONS)
    assert tok.vocab[:4] == list(SPECIAL_TOKENS)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    # "a", "of", "photo" appear 3 or 4 times; "." 3 times; words are lower-cased and keep diacritics.
    assert tok.vocab[4] == "a"
    assert "ćevapi" in tok.vocab and "A" not in tok.vocab
    assert WordTokenizer.build(reversed(CAPTIONS)).vocab == tok.vocab  # deterministic ids


def test_min_freq_and_max_size():
    tok = WordTokenizer.build(CAPTIONS, min_freq=3)
    assert set(tok.vocab[4:]) == {"a", "photo", "of", "."}
    assert len(WordTokenizer.build(CAPTIONS, max_size=6)) == 6


def test_encode_adds_boundaries_pads_and_maps_unknown_words():
    tok = WordTokenizer.build(CAPTIONS)
    ids = tok.encode(["A photo of sarma.", "gibanica"], max_length=32)
    assert ids.dtype == torch.long and ids.shape == (2, 7)
    assert ids[0].tolist() == [tok.bos_id] + [tok.token_to_id[w] for w in ["a", "photo", "of", "sarma", "."]] + [tok.eos_id]
    assert ids[1].tolist() == [tok.bos_id, tok.unk_id, tok.eos_id, 0, 0, 0, 0]
    assert tok.decode(ids[0]) == "a photo of sarma ."
    cut = tok.encode(["a photo of sarma cabbage rolls"], max_length=4)
    assert cut[0].tolist() == [tok.bos_id, tok.token_to_id["a"], tok.token_to_id["photo"], tok.eos_id]


def test_vocabulary_round_trips_through_json(tmp_path):
    tok = WordTokenizer.build(CAPTIONS)
    path = tok.save(tmp_path)
    assert path.name == "vocab.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["vocab"] == tok.vocab and data["special_tokens"] == list(SPECIAL_TOKENS)
    again = WordTokenizer.load(tmp_path)
    assert again.vocab == tok.vocab
    assert torch.equal(again.encode(CAPTIONS), tok.encode(CAPTIONS))


def test_bad_vocabularies_fail_clearly(tmp_path):
    with pytest.raises(VocabularyError, match="missing"):
        WordTokenizer.load(tmp_path / "nope.json")
    (tmp_path / "vocab.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(VocabularyError, match="malformed"):
        WordTokenizer.load(tmp_path)
    with pytest.raises(VocabularyError, match="must start with"):
        WordTokenizer(["a", "b"])


def test_encoder_output_ignores_padding_and_depends_on_words():
    torch.manual_seed(0)
    tok = WordTokenizer.build(CAPTIONS)
    enc = LSTMTextEncoder(LSTMConfig(vocab_size=len(tok), embed_dim=8, hidden_dim=8, out_dim=12), tok).eval()
    short = tok.encode(["a photo of sarma"])
    padded = torch.cat([short, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    out = enc(short)
    assert out.shape == (1, 12) and enc.dim == 12 and enc.id == "lstm"
    torch.testing.assert_close(enc(padded), out)  # packed sequences: padding changes nothing
    assert not torch.allclose(enc.encode(["a photo of baklava"]), out)
    both = enc.encode(["a photo of sarma", "a photo of sarma cabbage rolls ."])
    torch.testing.assert_close(both[:1], out)  # batched with a longer caption: same vector


def test_encoder_is_trainable():
    torch.manual_seed(0)
    tok = WordTokenizer.build(CAPTIONS)
    enc = LSTMTextEncoder(LSTMConfig(vocab_size=len(tok), embed_dim=8, hidden_dim=8, out_dim=4), tok)
    ids = tok.encode(CAPTIONS)
    target = torch.eye(3, 4)
    opt = torch.optim.Adam(enc.parameters(), lr=0.02)
    first = None
    for _ in range(60):
        loss = (enc(ids) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    assert enc.embedding.weight.grad is not None
