"""Offline means fast failure: hub models that are not cached fail at once, cached ones load offline.

Two ways of being offline are tested: ``HF_HUB_OFFLINE=1``, and a network that does not answer
(``HF_ENDPOINT`` pointed at a closed loopback port, ``HF_HUB_OFFLINE`` unset). The cached path uses
a fake Hugging Face cache in ``tmp_path`` holding the tiny models of ``tiny_models.py``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dishgen import hub
from dishgen.cli import cli
from dishgen.errors import DishgenError
from dishgen.hub import HubModelUnavailable

OFFLINE_MODES = ("hf_hub_offline", "unreachable")
FAST_S = 2.0  # a generous bound: retry loops took 27-85 s


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in tmp_path; no proxy; the reachability memo cleared."""
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "_reachable_seen", {})
    return cache


def _go_offline(mode: str, monkeypatch) -> None:
    if mode == "hf_hub_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")


def _cache_model(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay ``folder`` out as the cached ``main`` snapshot of ``repo_id`` (what ``hf download`` writes)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    return snapshot


def _assert_fast_one_line(result, elapsed: float, *needles: str) -> str:
    # each loader raises its own DishgenError type, which main() prints as one line (exit 2)
    assert isinstance(result.exception, DishgenError), result.output
    message = str(result.exception)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert elapsed < FAST_S, f"took {elapsed:.1f} s: a retry loop?"
    return message


@pytest.mark.parametrize("mode", OFFLINE_MODES)
def test_evaluate_defaults_fail_fast_naming_the_clip_download(mode, hf_cache, tiny_dataset, tmp_path, monkeypatch):
    import dishgen.evaluate.harness  # noqa: F401  (imports are not what is timed)

    _go_offline(mode, monkeypatch)
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["evaluate", "--images", str(tiny_dataset / "test"), "--data", str(tiny_dataset),
                                      "--out", str(tmp_path / "report"), "--no-progress"])
    message = _assert_fast_one_line(result, time.monotonic() - start, "CLIP backbone openai/clip-vit-large-patch14",
                                    "not in the local Hugging Face cache", "hf download openai/clip-vit-large-patch14",
                                    "--clip-model PATH")
    assert ("HF_HUB_OFFLINE is set" in message) == (mode == "hf_hub_offline")
    assert not (tmp_path / "report" / "report.json").exists()


@pytest.mark.parametrize("mode", OFFLINE_MODES)
def test_evaluate_dinov2_default_fails_fast(mode, hf_cache, tiny_dataset, tiny_clip_dir, tmp_path, monkeypatch):
    _go_offline(mode, monkeypatch)
    start = time.monotonic()
    result = CliRunner().invoke(cli, [
        "evaluate", "--images", str(tiny_dataset / "test"), "--data", str(tiny_dataset), "--out", str(tmp_path / "r"),
        "--metrics", "fid", "--feature-backbone", "dinov2", "--clip-model", str(tiny_clip_dir), "--no-progress"])
    _assert_fast_one_line(result, time.monotonic() - start, "DINOv2 backbone facebook/dinov2-base",
                          "hf download facebook/dinov2-base", "--feature-model PATH")


def test_evaluate_a_hub_model_fails_fast_before_any_scoring(hf_cache, tiny_dataset, tiny_clip_dir, tmp_path,
                                                            monkeypatch):
    _go_offline("unreachable", monkeypatch)
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["evaluate", "--model", "some-owner/some-model", "--data", str(tiny_dataset),
                                      "--out", str(tmp_path / "r"), "--clip-model", str(tiny_clip_dir), "--no-progress"])
    _assert_fast_one_line(result, time.monotonic() - start, "diffusion model some-owner/some-model",
                          "hf download some-owner/some-model")


@pytest.mark.parametrize("mode", OFFLINE_MODES)
def test_generate_with_a_hub_id_fails_fast(mode, hf_cache, tmp_path, monkeypatch):
    _go_offline(mode, monkeypatch)
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["generate", "sarma", "--model", "some-owner/some-model",
                                      "--out", str(tmp_path / "out")])
    _assert_fast_one_line(result, time.monotonic() - start, "diffusion model some-owner/some-model",
                          "hf download some-owner/some-model", "--model PATH")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", OFFLINE_MODES)
def test_train_lora_with_a_hub_base_fails_fast_before_writing(mode, hf_cache, tiny_dataset, tmp_path, monkeypatch):
    import dishgen.train.lora  # noqa: F401

    _go_offline(mode, monkeypatch)
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["train", "lora", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"),
                                      "--base", "some-owner/sd-base"])
    _assert_fast_one_line(result, time.monotonic() - start, "base model some-owner/sd-base",
                          "hf download some-owner/sd-base", "--base PATH")
    assert not (tmp_path / "run").exists()


def test_the_console_script_prints_one_error_line_and_exits_2(hf_cache, tiny_dataset, tmp_path):
    """The real process: environment read at import, error mapped by ``main()``."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "PYTHONPATH": str(Path(hub.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "dishgen", "generate", "sarma", "--model", "some-owner/some-model",
                           "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert line.startswith("Error: diffusion model some-owner/some-model is not in the local Hugging Face cache")
    assert "did not answer" in line


@pytest.mark.parametrize("mode", OFFLINE_MODES)
def test_a_cached_clip_id_evaluates_offline(mode, hf_cache, tiny_dataset, tiny_clip_dir, tmp_path, monkeypatch):
    import json

    snapshot = _cache_model(hf_cache, "dishgen-tests/tiny-clip", tiny_clip_dir)
    _go_offline(mode, monkeypatch)
    assert hub.resolve_hub_model("dishgen-tests/tiny-clip", what="CLIP backbone", marker="config.json") == str(snapshot)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, [
        "evaluate", "--images", str(tiny_dataset / "test"), "--data", str(tiny_dataset), "--out", str(out),
        "--clip-model", "dishgen-tests/tiny-clip", "--metrics", "fid,clip-score", "--bootstrap", "0", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["clip_model"] == "dishgen-tests/tiny-clip"  # labelled by its id, not the cache path
    assert report["feature"]["dim"] == 32 and report["feature"]["image_size"] == 32  # the snapshot's processor


def test_a_cached_diffusion_id_generates_offline(hf_cache, tiny_sd_dir, tmp_path, monkeypatch):
    _cache_model(hf_cache, "dishgen-tests/tiny-sd", tiny_sd_dir)
    _go_offline("unreachable", monkeypatch)
    result = CliRunner().invoke(cli, ["generate", "sarma in a clay pot", "--model", "dishgen-tests/tiny-sd", "--steps",
                                      "2", "--height", "64", "--width", "64", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_a_cached_clip_text_encoder_loads_offline_and_keeps_its_id(hf_cache, tiny_clip_dir, monkeypatch):
    from dishgen.text import TextEncoderNotAvailable
    from dishgen.text.clip import CLIPTextEncoder

    _go_offline("hf_hub_offline", monkeypatch)
    with pytest.raises(TextEncoderNotAvailable, match=r"CLIP text encoder dishgen-tests/tiny-clip .*text_encoder=clip:PATH"):
        CLIPTextEncoder("dishgen-tests/tiny-clip")
    _cache_model(hf_cache, "dishgen-tests/tiny-clip", tiny_clip_dir)
    encoder = CLIPTextEncoder("dishgen-tests/tiny-clip")
    assert encoder.id == "clip:dishgen-tests/tiny-clip"
    assert tuple(encoder.encode(["sarma"]).shape) == (1, 32)


def test_a_partial_cache_without_its_marker_file_is_not_used(hf_cache, tiny_clip_dir, tmp_path, monkeypatch):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_clip_dir / "config.json", partial / "config.json")
    _cache_model(hf_cache, "dishgen-tests/partial", partial)
    _go_offline("hf_hub_offline", monkeypatch)
    assert hub.cached_snapshot("dishgen-tests/partial", marker="config.json") is not None
    with pytest.raises(HubModelUnavailable):
        hub.resolve_hub_model("dishgen-tests/partial", what="diffusion model", marker="model_index.json")


def test_local_folders_and_non_ids_are_returned_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_hub_model(str(tmp_path), what="x") == str(tmp_path)
    assert hub.resolve_hub_model("./owner/name", what="x") == "./owner/name"
    assert hub.looks_like_hub_id("owner/name") and not hub.looks_like_hub_id("a/b/c")


def test_a_hanging_lookup_is_cut_off(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(3)
        raise OSError("timed out")

    monkeypatch.setattr(hub, "_reachable_seen", {})
    monkeypatch.setattr(hub.socket, "create_connection", hang)
    start = time.monotonic()
    assert hub.endpoint_reachable("https://hub.example", timeout=0.2) is False
    assert time.monotonic() - start < FAST_S


def test_an_https_proxy_is_what_must_answer(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setattr(hub, "_reachable_seen", {})
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert hub.endpoint_reachable("https://hub.invalid") is True  # the proxy answers for it
        monkeypatch.delenv("HTTPS_PROXY")
        monkeypatch.delenv("https_proxy", raising=False)
        assert hub.endpoint_reachable(f"https://127.0.0.1:{listener.getsockname()[1]}") is True
    monkeypatch.setattr(hub, "_reachable_seen", {})
    assert hub.endpoint_reachable(f"http://127.0.0.1:{_closed_port()}") is False
