"""A server that answers HTML, JSON of another shape, or escapes fails one caption, never the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_openai import Raw
from hypothesis import given, settings
from hypothesis import strategies as st
from test_llm import SARMA as SARMA_LIKE
from test_llm import SECRET, FakeLLM, make

from dishgen.data.caption import CaptionInput
from dishgen.data.llm import LLMError, parse_caption
from dishgen.data.llm.answers import parse_json_answer
from dishgen.data.llm.captioners import response_content

HTML = Raw(b"<!DOCTYPE html><html><body><h1>Proxy login</h1></body></html>")


def as_json(value) -> Raw:
    return Raw(json.dumps(value).encode(), "application/json")


class RawLLM(FakeLLM):
    """FakeLLM whose script may also hold :class:`Raw` bodies."""

    def answer(self, request: dict):
        with self.lock:
            step = self.script[0] if self.script else None
        if isinstance(step, Raw):
            with self.lock:
                self.script.pop(0)
            return 200, step
        return super().answer(request)


@pytest.fixture
def llm():
    server = RawLLM()
    yield server
    server.close()


def test_malformed_responses_fail_one_item_each_and_the_rest_go_on(llm, tmp_path):
    bodies = {
        "html": (HTML, "answered an HTML page, not a chat completion"),
        "not-json": (Raw(b"<<garbage", "application/json"), "a body that is not valid JSON"),
        "list": (as_json([1, 2]), "JSON that is not a chat completion"),
        "no-choices": (as_json({"id": "x", "choices": []}), "a chat completion without choices"),
        "choices-str": (as_json({"choices": "x"}), "a chat completion without choices"),
        "null-message": (as_json({"choices": [{"message": None}]}), "malformed LLM answer after 1 attempts: empty answer"),
        "null-content": (as_json({"choices": [{"message": {"content": None}}]}), "malformed LLM answer after 1 attempts: empty answer"),
        "int-content": (as_json({"choices": [{"message": {"content": 5}}]}), "content is not text (5)"),
    }
    captioner = make(llm, tmp_path, concurrency=1, max_retries=0)
    llm.script = [body for body, _ in bodies.values()]
    items = [CaptionInput(f"Jelo {name}") for name in bodies] + [CaptionInput("Sarma")]
    results = captioner.caption_many(items)
    for (name, (_, expected)), result in zip(bodies.items(), results, strict=False):
        assert result.text is None and expected in result.error, (name, result.error)
        assert "\n" not in result.error and SECRET not in result.error
    assert results[-1].text == "Sarma, glistening and browned, served in a clay pot."
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1  # only the good caption is cached


def test_a_server_that_drips_its_answer_fails_that_caption_within_the_deadline(llm, tmp_path):
    import time

    good = {"id": "x", "object": "chat.completion", "created": 0, "model": "tiny-chef", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x" * 400}}]}
    llm.script = [Raw(json.dumps(good).encode(), "application/json", drip=0.05)] * 2  # ~25 s each
    captioner = make(llm, tmp_path, timeout=1.0, max_retries=1)  # each read is fast: only the total is slow
    started = time.monotonic()
    result = captioner.caption_many([SARMA_LIKE])[0]
    assert time.monotonic() - started < 10  # two attempts of at most ~1 s each, not 2 x 25 s
    assert result.text is None and "timed out" in result.error.lower(), result.error


def test_preflight_against_a_web_page_is_one_clear_error(llm, tmp_path):
    llm.models_body = HTML
    with pytest.raises(LLMError, match=r"does not answer like an OpenAI-compatible API .* point --base-url"):
        make(llm, tmp_path)


def test_nul_and_ansi_escapes_never_reach_a_caption(llm, tmp_path):
    llm.script = [json.dumps({"caption": "Sarma\u0000 rolls \u001b[31min a\tclay pot.\u001b[0m\u202e"})]
    [result] = make(llm, tmp_path, concurrency=1).caption_many([CaptionInput("Sarma")])
    assert result.text == "Sarma rolls in a clay pot."


def test_data_build_records_an_html_answer_and_goes_on(tmp_path, monkeypatch):
    from test_scrape import FIXTURES, FixtureSite

    from dishgen.cli.data import data as data_group
    from dishgen.data.scrape import scrape

    raw = tmp_path / "raw"
    with FixtureSite(FIXTURES / "coolinarika") as site:
        assert scrape("coolinarika", raw, base_url=site.base, delay=0, timeout=2, min_image_side=64).written == 3

    class ProxyForBurek(FakeLLM):
        def answer(self, request):
            if "Burek" in json.dumps(request["messages"], ensure_ascii=False):
                return 200, HTML
            return super().answer(request)

    llm = ProxyForBurek()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        result = CliRunner().invoke(data_group, [
            "build", str(raw), "--out", str(tmp_path / "dataset"), "--size", "32",
            "--test-fraction", "0", "--workers", "1", "--captioner", "llm",
            "--llm-base-url", llm.base_url, "--llm-model", "tiny-chef",
        ])
    finally:
        llm.close()
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "dataset" / "train" / "metadata.jsonl").read_text().splitlines()
    assert sorted(json.loads(row)["dish"] for row in rows) == ["Gibanica", "Ćevapi"]
    report = Path(tmp_path / "dataset" / "dataset.json").read_text()
    assert "answered an HTML page" in report and "Burek" in report


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=200),
                 st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                              lambda children: st.lists(children, max_size=4)
                              | st.dictionaries(st.sampled_from(["caption", "text", "x"]), children, max_size=3),
                              max_leaves=10).map(json.dumps)),
       st.booleans())
def test_llm_answer_parsers_never_raise(content, allow_list):
    value, problem = parse_json_answer(content, allow_list=allow_list)
    assert isinstance(problem, str) and (value is None or not problem)
    caption, reason = parse_caption(content)
    assert (caption is None) != (reason == "")
    if caption is not None:
        assert "\x00" not in caption and "\x1b" not in caption and len(caption) <= 1000


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["choices", "message", "content", "id", "role", "index"]), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSONISH, st.text(max_size=100)))
def test_response_handling_gives_text_or_an_llm_error(body):
    """What the openai client makes of any JSON (or text) body: text, or an LLMError."""
    from openai.types.chat import ChatCompletion

    response = ChatCompletion.construct(**body) if isinstance(body, dict) else body
    try:
        content = response_content(response)
    except LLMError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(content, str)
