"""The hand-written MiniLM forward pass (text/bert.py) equals transformers' BertModel."""

from __future__ import annotations

import torch

from dishgen.text.minilm import MiniLMEncoder, model_path

TEXTS = [
    "ćevapi sa lukom i kajmakom",
    "sarma u kiselom kupusu",
    "a red car",
    "Gibanica, a layered filo pastry pie with cheese and eggs, " * 30,  # longer than 256 tokens
]


def test_minilm_matches_transformers_bert():
    from transformers import AutoModel, AutoTokenizer

    encoder = MiniLMEncoder()
    ours = encoder.encode(TEXTS)
    tokenizer = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
    model = AutoModel.from_pretrained(model_path(), local_files_only=True).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    ids, mask = encoder.tokenize(TEXTS)
    assert torch.equal(ids, batch["input_ids"]) and torch.equal(mask, batch["attention_mask"])
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    assert ours.shape == (4, 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    # Meaningful: two Serbian dishes are closer to each other than to a car.
    assert ours[0] @ ours[1] > 0.4 > 0.2 > ours[0] @ ours[2]
