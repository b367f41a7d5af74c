"""LLM caption variations against a loopback OpenAI-compatible server that answers and fails."""

from __future__ import annotations

import json
import logging
import re

import pytest
from fake_openai import FakeOpenAI
from test_synth import FakeGenerator, rows_of

from dishgen.data.dataset import load_split
from dishgen.data.llm import LLMError
from dishgen.data.synth import AugmentOptions, augment_dataset, parse_variations

SECRET = "sk-test-synth-5ecret-DO-NOT-LEAK-0987654321"


class VariationServer(FakeOpenAI):
    """``/v1/models`` and ``/v1/chat/completions``; answers depend on the dish in the request.

    ``behaviour[dish]``: ``"malformed-once"`` (prose first, then JSON), ``"one-too-long"`` (one
    answer of 30 words among valid ones), ``500`` (always an HTTP 500); other dishes get valid
    answers. Every chat request is kept in ``chats``.
    """

    def __init__(self):
        super().__init__(SECRET)
        self.behaviour: dict[str, object] = {}

    def answer(self, request: dict) -> tuple[int, str]:
        user = request["messages"][-1]["content"]
        dish = re.search(r"Dish: (.*)", user).group(1)
        want = int(
            re.search(r"Write (\d+) new captions", request["messages"][0]["content"]).group(1)
        )
        written = user.count("\n- ")
        with self.lock:  # the server has put this request in chats already; count those before it
            earlier = self.chats[: next(i for i, c in enumerate(self.chats) if c is request)]
        asked_before = sum(dish in c["messages"][-1]["content"] for c in earlier)
        behaviour = self.behaviour.get(dish)
        if behaviour == 500:
            return 500, ""
        if behaviour == "malformed-once" and asked_before == 0:
            return 200, "Sure! Here are some lovely captions for you."
        texts = [
            f"{dish} variation {written + i + 10 * asked_before}, "
            "plated on a wooden board, seen from above"
            for i in range(want)
        ]
        if behaviour == "one-too-long" and written == 0:
            texts[1] = f"{dish} " + "very " * 29 + "long"
        return 200, "```json\n" + json.dumps({"variations": texts}) + "\n```"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    fake = VariationServer()
    yield fake
    fake.close()


def llm_options(server, **extra) -> AugmentOptions:
    return AugmentOptions(
        variations=3,
        captioner="llm",
        **extra,
        captioner_options={
            "base_url": server.base_url,
            "model": "tiny-chef",
            "max_retries": 1,
            "concurrency": 2,
            "timeout": 10,
        },
    )


def test_parse_variations_reads_objects_lists_and_fences():
    assert parse_variations('{"variations": ["a b", "c d"]}') == (["a b", "c d"], "")
    assert parse_variations('```json\n["a b"]\n```') == (["a b"], "")
    assert parse_variations('Here: {"variations": ["a b"]} hope it helps')[0] == ["a b"]
    assert parse_variations("no json here")[0] is None
    assert parse_variations('{"variations": [1, 2]}')[0] is None


def test_llm_variations_are_validated_retried_and_failures_recorded(
    tmp_path, tiny_dataset, server, caplog
):
    dishes = sorted({r.dish for r in load_split(tiny_dataset, "train")})
    malformed, too_long, failing = dishes[:3]
    server.behaviour = {malformed: "malformed-once", too_long: "one-too-long", failing: 500}
    out = tmp_path / "synth"
    caplog.set_level(logging.DEBUG)
    summary = augment_dataset(tiny_dataset, out, llm_options(server), generator=FakeGenerator())

    system = server.chats[0]["messages"][0]["content"]
    for words in (
        "SAME dish",
        "ingredients",
        "plating",
        "camera angle",
        "setting",
        "2 to 25 words",
    ):
        assert words in system
    rows = rows_of(out, "train")
    source = load_split(tiny_dataset, "train")
    # Every photo except those of the failing dish has 3 valid LLM variations.
    assert len(rows) == 3 * sum(r.dish != failing for r in source)
    for row in rows:
        assert re.fullmatch(
            rf"{re.escape(row['dish'])} variation \d+, plated on a wooden board, seen from above",
            row["text"],
        )
        assert row["captioner"] == f"llm:tiny-chef@{server.base_url}"
    asked = {
        d: [c for c in server.chats if f"Dish: {d}" in c["messages"][-1]["content"]] for d in dishes
    }
    assert len(asked[malformed]) == 2  # prose, then asked again
    assert len(asked[too_long]) == 2  # 2 valid of 3, then asked for the missing one
    assert (
        "variation 0," in asked[too_long][1]["messages"][-1]["content"]
    )  # told what it already has
    assert len(asked[failing]) == 2  # the client's own retry of the 500
    assert all(len(asked[d]) == 1 for d in dishes[3:])  # photos of one dish share a request
    failures = summary["failures"]
    assert {f["dish"] for f in failures} == {failing}
    assert (
        len(failures) == sum(r.dish == failing for r in source)
        and "HTTP 500" in failures[0]["error"]
    )
    recorded = json.loads((out / "dataset.json").read_text())
    assert recorded["failures"] == failures and recorded["captioner"]["model"] == "tiny-chef"
    everything = (out / "dataset.json").read_text() + (out / "train" / "metadata.jsonl").read_text()
    assert SECRET not in everything and SECRET not in caplog.text


def test_llm_variations_are_not_asked_again_on_resume(tmp_path, tiny_dataset, server):
    dishes = sorted({r.dish for r in load_split(tiny_dataset, "train")})
    server.behaviour = {dishes[0]: 500}
    out = tmp_path / "synth"
    with pytest.raises(KeyboardInterrupt):
        augment_dataset(
            tiny_dataset, out, llm_options(server), generator=FakeGenerator(fail_on_call=2)
        )
    first = len(server.chats)
    server.behaviour = {}  # the server has recovered
    summary = augment_dataset(tiny_dataset, out, llm_options(server), generator=FakeGenerator())
    again = server.chats[first:]
    # Only the dish that failed is asked again; cached variations are reused.
    assert {re.search(r"Dish: (.*)", c["messages"][-1]["content"]).group(1) for c in again} == {
        dishes[0]
    }
    assert summary["failures"] == []
    rows = rows_of(out, "train")
    assert (
        len(rows)
        == 3 * len(load_split(tiny_dataset, "train"))
        == len({r["file_name"] for r in rows})
    )


def test_llm_problems_fail_before_any_work(tmp_path, tiny_dataset, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(LLMError, match="rejected the API key"):
        augment_dataset(
            tiny_dataset, tmp_path / "a", llm_options(server), generator=FakeGenerator()
        )
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    port = server.server.server_address[1]
    server.close()
    options = llm_options(server)
    options.captioner_options["base_url"] = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMError, match="cannot reach"):
        augment_dataset(tiny_dataset, tmp_path / "b", options, generator=FakeGenerator())
    assert not any(tmp_path.iterdir())


def test_cli_passes_llm_options_and_reads_the_key_from_the_environment(tmp_path, tiny_dataset_64,
                                                                       tiny_sd_dir, server):
    from click.testing import CliRunner

    from dishgen.cli import cli

    out = tmp_path / "synth"
    result = CliRunner().invoke(cli, [
        "data", "augment", str(tiny_dataset_64), "--out", str(out), "--captioner", "llm",
        "--llm-base-url", server.base_url, "--llm-model", "tiny-chef", "--llm-concurrency", "1",
        "--model", str(tiny_sd_dir), "--variations", "2", "--limit", "1", "--steps", "1",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {c["model"] for c in server.chats} == {"tiny-chef"}
    rows = rows_of(out, "train")
    assert len(rows) == 2 and all("variation" in r["text"] for r in rows)
    assert json.loads((out / "dataset.json").read_text())["captioner"]["base_url"] == server.base_url
