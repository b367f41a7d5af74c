"""Hostile command lines never give a traceback or two writers (issue 15): numeric flags of the
data commands, output-folder locks for training runs and data commands, pickle model references,
and prompt files of arbitrary bytes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dishgen.cli import cli, main
from dishgen.fileio import LOCK_FILE, OutputLocked

DATA_COMMANDS = ["import", "build", "scrape", "caption", "augment", "mix"]


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the console entry point as a user would; return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dishgen", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def data_command(name: str) -> click.Command:
    ctx = click.Context(cli)
    group = cli.get_command(ctx, "data")
    return group.get_command(click.Context(group, parent=ctx), name)


# -- numeric flags ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATA_COMMANDS)
def test_every_numeric_flag_of_the_data_commands_has_a_range(name):
    numeric = [p for p in data_command(name).params
               if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))]
    unbounded = [p.name for p in numeric if not isinstance(p.type, (click.IntRange, click.FloatRange))]
    assert unbounded == []
    assert [p.name for p in numeric if type(p.type) is click.FloatRange] == []  # all refuse nan/inf


@pytest.mark.parametrize("args, message", [
    (["build", "raw", "--out", "ds", "--dedupe-threshold", "-7"],
     "Invalid value for '--dedupe-threshold': -7 is not in the range -1<=x<=64."),
    (["build", "raw", "--out", "ds", "--size", "0"], "Invalid value for '--size': 0 is not in the range 8<=x<=8192."),
    (["build", "raw", "--out", "ds", "--test-fraction", "1"],
     "Invalid value for '--test-fraction': 1.0 is not in the range 0<=x<1."),
    (["build", "raw", "--out", "ds", "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range"),
    (["mix", "a", "b", "--out", "m", "--val-synthetic", "nan"],
     "Invalid value for '--val-synthetic': nan is not a finite number; give a value in the range 0<=x<=1."),
    (["scrape", "recepti", "--out", "r", "--delay", "inf"], "Invalid value for '--delay': inf is not in the range"),
    (["scrape", "recepti", "--out", "r", "--discovery-max-age", "inf"],
     "Invalid value for '--discovery-max-age': inf is not a finite number; give a value in the range x>=0."),
    (["augment", "d", "--out", "s", "--guidance-scale", "-1"], "Invalid value for '--guidance-scale': -1.0 is not in"),
])
def test_out_of_range_data_flags_are_refused_naming_what_is_allowed(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["data", *args], monkeypatch, capsys)
    assert code == 2 and f"Error: {message}" in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


# -- output locks ----------------------------------------------------------------------------------


def hold_lock(folder: Path, pid: int) -> Path:
    """Leave a lock file in ``folder`` as a process ``pid`` on this host would."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00",
                                "command": "dishgen train cvae"}) + "\n")
    return lock


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def live_holder() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


@pytest.mark.parametrize("family", ["cgan", "cvae", "lora"])
def test_a_second_trainer_on_a_locked_run_dir_gets_one_line(family, tmp_path):
    from dishgen.config import resolve_config
    from dishgen.train import cgan, cvae, lora_config

    holder = live_holder()
    try:
        out = tmp_path / "run"
        hold_lock(out, holder.pid)
        if family == "lora":
            from dishgen.train.lora import train

            config = resolve_config(lora_config.LoraTrainConfig, overrides=[f"base={tmp_path}"])
        else:
            module = cgan if family == "cgan" else cvae
            train = module.train
            config = resolve_config(module.CGANTrainConfig if family == "cgan" else module.CVAETrainConfig)
        with pytest.raises(OutputLocked, match=rf"run is in use by another dishgen command \(pid {holder.pid} on"):
            train(config, tmp_path / "no-dataset", out)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written, lock untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_run_lock_is_taken_over_and_released(tmp_path):
    from dishgen.train.common import run_lock

    out = tmp_path / "run"
    hold_lock(out, dead_pid())
    with run_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_only_rank_0_takes_the_run_lock(tmp_path, monkeypatch):
    from dishgen.train.common import run_lock

    holder = live_holder()
    try:
        out = tmp_path / "run"
        lock = hold_lock(out, holder.pid)
        monkeypatch.setenv("RANK", "1")
        with run_lock(out) as mine:  # rank 1 never writes, so it neither takes nor checks the lock
            assert mine is None
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(OutputLocked):
            with run_lock(out):
                pass
        assert json.loads(lock.read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_refused_run_leaves_no_empty_folder(tmp_path):
    from dishgen.config import ConfigError
    from dishgen.train.cvae import CVAETrainConfig, train

    with pytest.raises(Exception, match="holds no run to resume"):
        train(CVAETrainConfig(), tmp_path / "data", tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError):
        train(CVAETrainConfig(max_steps=0), tmp_path / "data", tmp_path / "new2")
    assert not (tmp_path / "new2").exists()


@pytest.mark.parametrize("args", [
    ["import", "photos", "--out", "OUT"],
    ["build", "raw", "--out", "OUT"],
    ["augment", "dataset", "--out", "OUT"],
    ["mix", "real", "synth", "--out", "OUT"],
])
def test_data_commands_refuse_an_output_folder_being_written(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    holder = live_holder()
    try:
        hold_lock(tmp_path / "OUT", holder.pid)
        code, err = run_cli(["data", *args], monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1
        assert err.startswith(f"Error: OUT is in use by another dishgen command (pid {holder.pid} on ")
    finally:
        holder.kill()
        holder.wait()


def test_data_import_takes_over_a_stale_lock_and_releases_it(sample_images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "raw"
    hold_lock(out, dead_pid())
    monkeypatch.setattr(sys, "argv", ["dishgen", "data", "import", str(sample_images), "--out", str(out)])
    main()
    assert "imported 44 images" in capsys.readouterr().out
    assert not (out / LOCK_FILE).exists() and (out / "recipes.jsonl").is_file()


def test_data_build_accepts_its_own_locked_empty_output_folder(tmp_path, monkeypatch, capsys):
    """The lock file in OUT is not 'an existing dataset' (a build would refuse every locked OUT)."""
    from dishgen.data.build import BuildError, BuildOptions, build_dataset
    from dishgen.fileio import output_lock

    with output_lock(tmp_path / "ds"):
        with pytest.raises(BuildError, match="does not exist"):  # the raw folder, not the locked --out
            build_dataset([tmp_path / "missing-raw"], tmp_path / "ds", BuildOptions(size=32))


# -- model references ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.pt", "weights.pth", "sd.ckpt", "pytorch_model.bin", "state.pkl"])
def test_a_pickle_file_as_model_says_it_exists_and_is_never_unpickled(name, tmp_path, monkeypatch, capsys):
    from dishgen.generation import resolve_model

    path = tmp_path / "runs" / name
    path.parent.mkdir()
    path.write_bytes(b"\x80\x04K\x01.")  # a real pickle of the number 1
    monkeypatch.chdir(tmp_path)
    for reference in (path, Path("runs") / name):  # "runs/model.pt" must not pass for a hub id
        code, err = run_cli(["generate", "sarma", "--model", reference, "--out", tmp_path / "o"], monkeypatch, capsys)
        assert code == 2
        assert err.startswith(f"Error: {str(reference)!r} exists but is a pickle file ({path.suffix}): dishgen "
                              "loads only safetensors and never unpickles")
        assert "--lora FILE" in err and "not found" not in err
    with pytest.raises(Exception, match="not found"):
        resolve_model(tmp_path / "missing.pt")


def test_a_folder_of_pickles_and_a_binary_config_are_one_line(tmp_path):
    from dishgen.generation import ModelReferenceError, resolve_model

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelReferenceError, match=r"holds pickle files \(model.pt\), which dishgen never loads"):
        resolve_model(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_bytes(b"\xff\x00binary")
    with pytest.raises(ModelReferenceError, match="config.json' could not be read"):
        resolve_model(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text("[1]")
    with pytest.raises(ModelReferenceError, match="names family None"):
        resolve_model(tmp_path / "ckpt")


# -- prompt files of arbitrary bytes -----------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                         st.lists(st.sampled_from([b"# c\n", b"\n", b"\r\n", b"\xef\xbb\xbf", b"sarma\n", b"\x00",
                                                   b"\xff", b"  \t", b"\xe2\x80\xa8"]), max_size=12).map(b"".join)))
def test_prompt_files_of_arbitrary_bytes_raise_only_bad_parameter(content, tmp_path):
    from dishgen.cli.generate import read_prompts_file

    path = tmp_path / "prompts.txt"
    path.write_bytes(content)
    try:
        prompts = read_prompts_file(str(path))
    except click.BadParameter as err:
        assert "\n" not in err.format_message()
        return
    assert prompts and all(p == p.strip() and p and "\x00" not in p and not p.startswith("\ufeff") for p in prompts)
