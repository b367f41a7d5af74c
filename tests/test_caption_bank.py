"""Anchoring's retrieval: embeddings plus shared rare words (hybrid), on a hand-made bank."""

from __future__ import annotations

import pytest
import torch

from dishgen.caption_bank import CaptionBank, caption_words, drawn_as

CAPTIONS = [
    "A photo of ćevapi-style grilled minced-meat rolls, photographed from above.",
    "A photo of white bread slice with vegetable paste, served on a white plate.",
    "A photo of baked beans with smoked pork, served on a white plate.",
    "A photo of veal goulash, served on a white plate.",
    *(f"A photo of {dish}, served on a white plate." for dish in ("lasagna", "crepes with jam", "pita bread",
                                                                   "grilled pork", "polenta", "donuts with sugar"))
]
DISHES = ["MICI", "WHITE BREAD SLICE", "BAKED BEANS", "VEAL GOULASH", "LASAGNA", "CREPES", "PITA", "PORK",
          "POLENTA", "DONUTS"]


def bank() -> CaptionBank:
    return CaptionBank(torch.eye(len(CAPTIONS)), list(CAPTIONS), list(DISHES))


def test_caption_words_fold_accents_and_plurals():
    assert caption_words("Karađorđeva šnicla; Ćevapi with onions, tomatoes and berries") == {
        "karadjordjeva", "snicla", "cevapi", "with", "onion", "tomato", "and", "berry"}
    assert caption_words("Gulaš in a glass") == {"gulas", "glass"}  # -as, -ss are not plurals


def test_lexical_scores_are_a_tfidf_cosine():
    b = bank()
    scores = b.lexical_scores([CAPTIONS[2], "Xyzzy quux", "ĆEVAPI!"])
    assert scores[0, 2] == pytest.approx(1.0) and scores[0].argmax() == 2
    assert scores[1].abs().sum() == 0  # no word the bank knows
    assert scores[2].argmax() == 0 and scores[2, 1:].abs().sum() == 0
    # "served on a white plate" is shared by three captions: it weighs less than one rare word
    plate = b.lexical_scores(["cevapi served on a white plate"])[0]
    assert plate[0] > plate[1] > 0


def test_a_rare_shared_word_outweighs_an_embedding_that_leans_elsewhere():
    """The encoder places an unknown dish name by the words around it (here: nearest the bread
    slice); the caption's own rare word pulls it onto the training dish that has it."""
    b = bank()
    query = "Ćevapi with onions and flatbread on a white plate"
    c = torch.zeros(1, len(CAPTIONS))
    c[0, :4] = torch.tensor([0.54, 0.61, 0.4, 0.4])  # as MiniLM has it: a little nearer the bread slice
    _, by_embedding = b.anchor(c)
    assert by_embedding[0][0][0] == "WHITE BREAD SLICE"
    anchored, hybrid = b.anchor(c, captions=[query])
    assert hybrid[0][0][0] == "MICI" and hybrid[0][0][1] > 0.5
    assert drawn_as(hybrid[0]).startswith("MICI ")
    assert torch.allclose(anchored.sum(), torch.tensor(1.0), atol=1e-5)  # a weighted mean of one-hot rows
    _, off = b.anchor(c, captions=[query], lexical_weight=0.0)
    assert off == by_embedding
    with pytest.raises(ValueError, match="2 captions for 1 embeddings"):
        b.anchor(c, captions=[query, query])


def test_drawn_as_sums_a_dishs_captions_and_drops_trace_weights():
    assert drawn_as([("A", 0.5), ("B", 0.3), ("A", 0.19), ("C", 0.005)]) == "A 0.69, B 0.30"
