"""Labels that tell the truth (issue 13, item 7): docs, evaluation labels, checkpoint choice, splits."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cgan_doc_names_the_model_actually_bundled():
    weights = ROOT / "src" / "dishgen" / "weights"
    name = json.loads((weights / "default.json").read_text())["model"]
    family = json.loads((weights / name / "config.json").read_text())["family"]
    doc = (ROOT / "docs" / "cgan.md").read_text(encoding="utf-8")
    sentences = [s for s in re.split(r"(?<=[.;])\s+", doc.replace("\n", " ")) if "bundled" in s.lower()]
    assert sentences, "docs/cgan.md should say which model is bundled"
    assert f"`{name}`" in doc
    for sentence in sentences:  # each mention of the bundled model names its real family
        assert ("cVAE" in sentence) == (family == "cvae"), sentence
