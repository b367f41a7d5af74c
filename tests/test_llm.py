"""The LLM captioners against a loopback OpenAI-compatible server that answers, rambles and fails."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_openai import FakeOpenAI

from dishgen.data.caption import CaptionInput, get_captioner
from dishgen.data.llm import (
    ClipTokenCounter,
    LLMCaptioner,
    LLMError,
    VisionCaptioner,
    estimate_clip_tokens,
    parse_caption,
)
from dishgen.data.llm.clip_tokens import PACKAGED_BPE

SECRET = "sk-test-5ecret-DO-NOT-LEAK-1234567890"


def good_answer(request: dict) -> str:
    user = request["messages"][-1]["content"]
    if isinstance(user, list):  # vision: text hint + image
        assert user[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        return json.dumps({"caption": "A golden dish seen from above on a white plate."})
    text = "\n".join(m["content"] for m in request["messages"] if isinstance(m["content"], str))
    found = re.search(r"Name: (.*)", text)
    if found is None:  # the preflight's tiny request
        return "OK"
    name = found.group(1)
    return json.dumps({"caption": f"{name}, glistening and browned, served in a clay pot."})


class FakeLLM(FakeOpenAI):
    """The loopback API with a script: a list of answers used in turn before ``good_answer``;
    a string is returned as the message content, an int as an HTTP error status."""

    def __init__(self, key: str = SECRET, models: bool = True):
        super().__init__(key, models=models, delay=0.1)  # long enough for requests to overlap, even on a loaded machine
        self.script: list = []

    def answer(self, request: dict) -> tuple[int, str]:
        with self.lock:
            step = self.script.pop(0) if self.script else None
        if isinstance(step, int):
            return step, ""
        return 200, step if isinstance(step, str) else good_answer(request)


@pytest.fixture
def llm():
    server = FakeLLM()
    yield server
    server.close()


def make(llm: FakeLLM, tmp_path: Path, **options) -> LLMCaptioner:
    options = {"base_url": llm.base_url, "model": "tiny-chef", "api_key": SECRET,
               "cache_dir": tmp_path / "cache", "max_retries": 1, **options}
    return LLMCaptioner(**options)


SARMA = CaptionInput("Sarma", ["1 kiseli kupus", "500 g mesa"], ["Umotati meso u kupus.", "Kuvati."])


def test_captions_are_written_cached_and_concurrent(llm, tmp_path):
    captioner = make(llm, tmp_path, concurrency=3)
    items = [CaptionInput(f"Jelo {i}", ["sastojak"], ["korak"]) for i in range(6)] + [SARMA]
    results = captioner.caption_many(items)
    assert [r.text for r in results] == [
        f"{item.name}, glistening and browned, served in a clay pot." for item in items
    ]
    assert len(llm.chats) == 7 and 1 < llm.max_in_flight <= 3  # bounded, but concurrent
    prompt = llm.chats[-1]["messages"]
    assert "English" in prompt[0]["content"] and "Do not list the ingredients" in prompt[0]["content"]
    assert "500 g mesa" in prompt[1]["content"] and "Umotati meso u kupus." in prompt[1]["content"]
    assert llm.chats[-1]["response_format"] == {"type": "json_object"}
    # A second captioner with the same cache asks the server nothing.
    again = make(llm, tmp_path).caption_many(items)
    assert [r.text for r in again] == [r.text for r in results] and len(llm.chats) == 7
    # A different recipe text is a different cache entry.
    make(llm, tmp_path).caption_many([CaptionInput("Sarma", ["kupus"], [])])
    assert len(llm.chats) == 8


def test_malformed_answers_are_retried_then_recorded(llm, tmp_path):
    llm.script = ["Sure! Here is a caption: sarma in a pot",  # not JSON: asked again
                  "```json\n{\"caption\": \"Sarma, cabbage rolls in a clay pot.\"}\n```"]
    captioner = make(llm, tmp_path, concurrency=1)
    assert captioner.caption_many([SARMA])[0].text == "Sarma, cabbage rolls in a clay pot."
    assert "not usable" in llm.chats[-1]["messages"][-1]["content"]  # it was told what was wrong

    llm.script = ['{"caption": "Sarma with 500 g of minced meat."}', '{"text": "no caption key"}']
    result = make(llm, tmp_path, concurrency=1).caption_many([CaptionInput("Punjene paprike")])[0]
    assert result.text is None
    assert result.error == "malformed LLM answer after 2 attempts: JSON without a non-empty 'caption' string"
    assert not any("500 g" in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_server_errors_are_retried_then_recorded(llm, tmp_path):
    llm.script = [500]  # one 500, then an answer: the openai client retries it
    assert make(llm, tmp_path).caption_many([SARMA])[0].text.startswith("Sarma")
    llm.script = [500, 500, 500, 500]
    result = make(llm, tmp_path, max_retries=1).caption_many([CaptionInput("Gibanica")])[0]
    assert result.text is None and result.error.startswith("LLM request failed (HTTP 500)")


def test_preflight_fails_once_and_clearly(llm, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="no API key .* set OPENAI_API_KEY"):
        LLMCaptioner(cache_dir=tmp_path)  # the default server (OpenAI) needs a key
    with pytest.raises(LLMError, match="rejected the API key") as info:
        make(llm, tmp_path, api_key="sk-wrong-key-abcdef")
    assert "sk-wrong" not in str(info.value)
    llm.close()
    with pytest.raises(LLMError, match="cannot reach the LLM server at http://127.0.0.1"):
        make(llm, tmp_path)
    assert llm.chats == []  # no captioning work was attempted


def test_environment_variables_and_servers_without_models(tmp_path, monkeypatch):
    server = FakeLLM(models=False)  # /v1/models is 404: preflight falls back to a tiny chat
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        captioner = get_captioner("llm", model="tiny-chef", cache_dir=tmp_path)
        assert captioner.base_url == server.base_url
        assert len(server.chats) == 1 and server.chats[0]["max_tokens"] == 1
        assert captioner.caption_many([SARMA])[0].text.startswith("Sarma")
        # An explicit option overrides the environment.
        with pytest.raises(LLMError, match="rejected the API key"):
            get_captioner("llm", api_key="sk-other", cache_dir=tmp_path)
    finally:
        server.close()


def test_vision_captioner_sends_the_photo(llm, tmp_path, sample_images):
    photo = next(sample_images.glob("SARMALE*/*.jpg"))
    captioner = make(llm, tmp_path, model="tiny-chef")
    vision = VisionCaptioner(base_url=llm.base_url, model="tiny-chef", api_key=SECRET,
                             cache_dir=tmp_path / "cache")
    results = vision.caption_many([CaptionInput("", image_path=photo), CaptionInput("Sarma")])
    assert results[0].text == "A golden dish seen from above on a white plate."
    assert results[1].text is None and results[1].error == "no photo to caption from"
    assert len(llm.chats) == 1 and captioner.name == "llm" and vision.name == "llm-vision"


@pytest.mark.parametrize("answer, reason", [
    ("", "empty answer"),
    ("not json at all", "not JSON"),
    ('{"caption": 3}', "JSON without"),
    ('{"caption": "Sarma."}', "too short"),
    ('{"caption": "Bake for 40 minutes until golden brown on top."}', "quantity"),
    ('{"caption": "One dish. Two plates. Three forks on the table."}', "3 sentences"),
])
def test_parse_caption_rejects(answer, reason):
    caption, problem = parse_caption(answer)
    assert caption is None and reason in problem


def test_captions_are_cut_to_77_clip_tokens(llm, tmp_path, caplog):
    long = "A very long caption " + " ".join(["with golden crispy layers"] * 30)
    llm.script = [json.dumps({"caption": long.replace(". ", ", ")})]
    caplog.set_level(logging.WARNING, logger="dishgen.data.llm")
    captioner = make(llm, tmp_path)
    text = captioner.caption_many([SARMA])[0].text
    assert captioner.tokens.count(text) <= 77 and long.startswith(text)
    assert "cut to 77" in caplog.text and captioner.tokens.method in caplog.text


def caption_like_texts() -> list[str]:
    from dishgen.data.caption import GLOSSARY

    return [*GLOSSARY, *GLOSSARY.values(),
            "Ćevapi, small grilled minced-meat sausages, piled on a wooden board.",
            "Karađorđeva šnicla, a rolled breaded steak filled with kajmak.",
            "Meso iseći na kocke i pržiti sa lukom.", "400 g mlevene junetine"]


def test_packaged_clip_tokenizer_is_the_default_and_matches_transformers(tmp_path, monkeypatch):
    from tiny_models import write_clip_tokenizer

    monkeypatch.delenv("DISHGEN_CLIP_TOKENIZER", raising=False)
    monkeypatch.setattr("dishgen.data.llm.clip_tokens._cached_clip_tokenizers",
                        lambda: iter([(PACKAGED_BPE, "packaged")]))
    counter = ClipTokenCounter.load()
    assert counter.tokenizer is not None and counter.method == "CLIP BPE tokenizer (packaged)"
    reference = write_clip_tokenizer(tmp_path / "clip")  # transformers' CLIPTokenizer, same merges
    odd = ["It's   the chef's 3rd dish!!!  naïve café, 12.5% fat", "ÄÖÜ ß — “quoted” … 😀", "", "   "]
    for text in caption_like_texts() + odd:
        assert counter.tokenizer.encode(text).ids == reference(text)["input_ids"], text


def test_word_estimate_never_undercounts_the_real_tokenizer():
    exact = ClipTokenCounter.load(PACKAGED_BPE)
    assert exact.count("a photo of a cat") == 7  # <start> a photo of a cat <end>
    for text in caption_like_texts():
        assert 2 + estimate_clip_tokens(text) >= exact.count(text), text
    cut, total = exact.truncate("food " * 100)
    assert total == 102 and exact.count(cut) == 77


def test_key_never_in_logs_or_output_files(llm, tmp_path, caplog, monkeypatch, tiny_dataset):
    import shutil

    from dishgen.cli.data_scrape import caption as caption_command

    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, dataset)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    caplog.set_level(logging.DEBUG)  # every logger, openai's and httpx's included
    llm.script = [500, "not json", "still not json"]
    args = ["caption", str(dataset), "--base-url", llm.base_url, "--model", "tiny-chef",
            "--cache-dir", str(tmp_path / "cache"), "--max-retries", "1", "--concurrency", "1"]
    def rows():
        return [json.loads(line) for split in ("test", "train")
                for line in (dataset / split / "metadata.jsonl").read_text().splitlines()]

    dishes = {row["dish"] for row in rows()}
    first = CliRunner().invoke(caption_command, args[1:])
    failed = [row for row in rows() if "caption_error" in row]
    assert first.exit_code == 1 and f"{len(failed)} row(s) could not be captioned" in first.output
    assert {row["dish"] for row in failed} == {rows()[0]["dish"]}  # the first dish asked about
    assert failed[0]["caption_error"].startswith("malformed LLM answer after 2 attempts")
    assert len(llm.chats) == len(dishes) + 2  # one per dish (photos share a recipe), 2 retries
    second = CliRunner().invoke(caption_command, args[1:])  # resumes: only the failed rows
    assert second.exit_code == 0, second.output
    assert len(llm.chats) == len(dishes) + 3
    assert all(row["text"] == f"{row['dish']}, glistening and browned, served in a clay pot."
               for row in rows())
    assert all("caption_error" not in row and row["captioner"].startswith("llm:tiny-chef@")
               for row in rows())
    n_test = len((dataset / "test" / "metadata.jsonl").read_text().splitlines())
    assert f"test: {len(failed)} captioned, {n_test - len(failed)} already done" in second.output
    assert "train: 0 captioned" in second.output

    assert any(r.name.startswith(("openai", "httpx")) for r in caplog.records)
    texts = [caplog.text, first.output, second.output]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
              and p.suffix in (".json", ".jsonl", ".txt", ".log")]
    assert all(SECRET not in text for text in texts)


def test_servers_without_json_mode_are_asked_without_it(llm, tmp_path, caplog):
    llm.reject_json_mode = True
    captioner = make(llm, tmp_path)
    assert captioner.caption_many([SARMA])[0].text.startswith("Sarma")
    assert "response_format" not in llm.chats[-1] and captioner.json_mode is False
    assert "does not take response_format" in caplog.text


def test_clip_tokenizer_sources_are_checked(tmp_path):
    with pytest.raises(LLMError, match="is not a CLIP tokenizer"):
        ClipTokenCounter.load(tmp_path)  # transformers would build a 2-token tokenizer here
    with pytest.raises(LLMError, match="does not exist"):
        ClipTokenCounter.load(tmp_path / "missing.txt.gz")
    with pytest.raises(LLMError, match="cannot read CLIP BPE merges"):
        ClipTokenCounter.load(PACKAGED_BPE.parent / "LICENSE")  # a file, but not gzip
    from tiny_models import write_clip_tokenizer

    exact = ClipTokenCounter.load(PACKAGED_BPE)
    write_clip_tokenizer(tmp_path / "clip")
    folder = ClipTokenCounter.load(tmp_path / "clip")
    text = "Ćevapi and sarma, cabbage rolls in a clay pot."
    assert folder.count(text) == exact.count(text) == 17
    assert str(tmp_path / "clip") in folder.method
