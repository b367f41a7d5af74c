"""End to end: scrape a loopback recipe site, then `data build --captioner llm` against a
loopback OpenAI-compatible server; the API key must not leak into any log or output file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from click.testing import CliRunner
from test_llm import SECRET, FakeLLM
from test_scrape import FIXTURES, FixtureSite

from dishgen.cli.data import data as data_group
from dishgen.data.scrape import scrape


def test_scrape_then_build_with_llm_captions(tmp_path, monkeypatch, caplog):
    raw = tmp_path / "raw"
    with FixtureSite(FIXTURES / "coolinarika") as site:
        summary = scrape("coolinarika", raw, base_url=site.base, delay=0, timeout=2,
                         min_image_side=64)
    assert summary.written == 3

    llm = FakeLLM()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default caption cache lives here
        caplog.set_level(logging.DEBUG)
        result = CliRunner().invoke(data_group, [
            "build", str(raw), "--out", str(tmp_path / "dataset"), "--size", "32",
            "--test-fraction", "0", "--workers", "1", "--captioner", "llm",
            "--llm-base-url", llm.base_url, "--llm-model", "tiny-chef", "--llm-concurrency", "2",
        ])
    finally:
        llm.close()
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in
            (tmp_path / "dataset" / "train" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(row["text"] for row in rows) == sorted(
        f"{name}, glistening and browned, served in a clay pot."
        for name in ("Burek s mesom", "Gibanica", "Ćevapi"))
    asked = [chat["messages"][1]["content"] for chat in llm.chats if len(chat["messages"]) > 1]
    assert any("500 g kora za pitu" in text and "Kore slagati s nadjevom u tepsiju." in text
               for text in asked)  # the recipe's ingredients and steps reached the prompt
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    assert any("captions" in str(p) for p in files)  # the caption cache was written
    for text in [caplog.text, result.output] + [p.read_text(errors="replace") for p in files]:
        assert SECRET not in text
    assert Path(tmp_path / "dataset" / "dataset.json").is_file()
