"""Hostile configs never give a traceback: declared ranges for every trainer, bad config files,
a run of another family on --resume, and leftovers of a killed checkpoint write (issue 15).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dishgen.config as config_module
from dishgen.cli import main
from dishgen.config import (
    Allowed,
    ConfigError,
    load_config_file,
    parse_overrides,
    resolve_config,
    resolve_run_config,
)
from dishgen.errors import DishgenError
from dishgen.train.cgan import CGANTrainConfig
from dishgen.train.common import RunDir, RunDirError
from dishgen.train.cvae import CVAETrainConfig
from dishgen.train.lora_config import LoraTrainConfig

CONFIGS = {"cgan": CGANTrainConfig, "cvae": CVAETrainConfig, "lora": LoraTrainConfig}


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the console entry point as a user would; return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dishgen", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


# -- declared ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize("family, override, message", [
    ("cvae", "max_steps=-5", "max_steps=-5 must be at least 1"),
    ("cvae", "batch_size=0", "batch_size=0 must be at least 1"),
    ("cvae", "resolution=65", "resolution=65 must be one of 64, 128, 256"),
    ("cvae", "seed=-1", "seed=-1 must be between 0 and 4294967295"),
    ("cvae", "lr=nan", "lr=nan must be > 0"),
    ("cvae", "translate=0.9", "translate=0.9 must be between 0 and 0.5"),
    ("cvae", "sample_prompts=", "sample_prompts=[] must be non-empty"),
    ("cgan", "resolution=65", "resolution=65 must be a power of two between 16 and 512"),
    ("cgan", "g_betas=0,1.5", "g_betas=(0.0, 1.5) must be two numbers in [0, 1)"),
    ("cgan", "d_betas=0.5", "d_betas=['0.5'] must hold exactly 2 values"),
    ("cgan", "ema_decay=1", "ema_decay=1.0 must be in [0, 1)"),
    ("lora", "resolution=65", "resolution=65 must be a multiple of 8 between 8 and 4096"),
    ("lora", "snr_gamma=0", "snr_gamma=0.0 must be > 0 (or none to turn it off)"),
    ("lora", "adam_epsilon=inf", "adam_epsilon=inf must be > 0"),
    ("lora", "unet_target_modules=", "unet_target_modules=[] must be non-empty"),
    ("lora", "max_steps=1e400", "max_steps='1e400' is not an integer"),
])
def test_out_of_range_values_are_one_line_errors_naming_key_value_and_what_is_allowed(family, override, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(CONFIGS[family], overrides=[override])
    assert str(err.value) == message or str(err.value).startswith(message)
    assert isinstance(err.value, DishgenError) and "\n" not in str(err.value)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_declared_lower_bound_is_enforced_and_its_default_accepted(family):
    cls = CONFIGS[family]
    checked = 0
    for f in dataclasses.fields(cls):
        allowed: Allowed | None = f.metadata.get("allowed")
        if allowed is None or allowed.min is None or allowed.choices is not None:
            continue
        below = allowed.min if allowed.min_open else allowed.min - 1
        value = ",".join([str(below)] * 2) if f.name.endswith("_betas") else str(below)
        with pytest.raises(ConfigError, match=rf"^{f.name}="):
            resolve_config(cls, overrides=[f"{f.name}={value}"])
        checked += 1
    assert checked >= 15  # most numeric fields declare what they accept
    resolve_config(cls)  # and every default passes


def test_defaults_of_every_preset_pass_the_checks():
    from dishgen.train import cgan, cvae, lora_config

    for cls, presets in ((CGANTrainConfig, cgan.PRESETS), (CVAETrainConfig, cvae.PRESETS),
                         (LoraTrainConfig, lora_config.PRESETS)):
        for name in presets:
            resolve_config(cls, preset=name, presets=presets)


def test_the_trainer_checks_a_config_built_in_python_before_any_work(tmp_path):
    from dishgen.train.cvae import train

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="^batch_size=0 must be at least 1$"):
        train(CVAETrainConfig(batch_size=0), tmp_path / "no-dataset", out)
    assert not out.exists()  # refused before the dataset was read or the run dir made


def test_unknown_keys_still_name_the_nearest_key():
    with pytest.raises(ConfigError, match="unknown override key 'max_step' for CVAETrainConfig; did you mean 'max_steps'"):
        resolve_config(CVAETrainConfig, overrides=["max_step=3"])


@pytest.mark.parametrize("args, message", [
    (["max_steps=-5"], "Error: max_steps=-5 must be at least 1\n"),
    (["batch_size=0"], "Error: batch_size=0 must be at least 1\n"),
    (["resolution=65"], "Error: resolution=65 must be one of 64, 128, 256\n"),
])
def test_train_cvae_cli_gives_one_line_not_a_traceback(args, message, tmp_path, monkeypatch, capsys):
    code, err = run_cli(["train", "cvae", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *args],
                        monkeypatch, capsys)
    assert (code, err) == (2, message)


# -- config files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, message", [
    ("random.yaml", bytes(range(128, 256)) * 3, r"is not UTF-8 text \(byte 0x80 at offset 0\)"),
    ("nul.yaml", b"max_steps: 3\x00\x00\n", "holds NUL bytes, so it is binary"),
    ("bad.yaml", b"max_steps: [1\n", "is not valid YAML: .* at line 2, column 1"),
    ("bad.json", b'{"max_steps": }', r"is not valid JSON: Expecting value"),
    ("list.json", b"[1, 2]", "must hold a mapping of key: value, not a list"),
    ("text.yaml", b"just words\n", "must hold a mapping of key: value, not a str"),
    ("deep.json", b"[" * 100_000, "is not valid JSON"),
    ("keys.yaml", b"1: 2\n", "unknown config file keys.yaml key '1' for CVAETrainConfig"),
    ("type.yaml", b"max_steps: [1, 2]\n", r"max_steps=\[1, 2\] is not an integer"),
    ("list.yaml", b"sample_prompts: 5\n", "sample_prompts=5 must be a list"),
    ("text_encoder.yaml", b"text_encoder: {a: 1}\n", "text_encoder={'a': 1} must be a single text value"),
])
def test_bad_config_files_are_one_line_errors(name, content, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        resolve_config(CVAETrainConfig, config_file=path)
    assert "\n" not in str(err.value)


def test_a_config_file_too_large_or_missing_is_refused(tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text("max_steps: 3\n" * 100)
    monkeypatch.setattr(config_module, "MAX_CONFIG_FILE_BYTES", 1000)
    with pytest.raises(ConfigError, match=r"is 1300 bytes; a config is a small YAML or JSON file"):
        load_config_file(big)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path)


def test_binary_config_file_on_the_command_line_is_one_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "weights.yaml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    code, err = run_cli(["train", "cvae", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                         "--config", str(config)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"Error: config file {str(config)!r} is not UTF-8 text (byte 0x89 at offset 0)")


# -- the wrong family on --resume --------------------------------------------------------------------


def fake_run(path: Path, family: str) -> Path:
    """A run directory as a trainer leaves it: config.json with its family and one checkpoint."""
    (path / "checkpoint-2").mkdir(parents=True)
    (path / "checkpoint-2" / "COMPLETE").write_text("2")
    (path / "config.json").write_text(json.dumps({"family": family, "beta": 1.0, "max_steps": 2}))
    return path


def resolve_for(family: str, out: Path):
    from dishgen.train import cgan, lora_config

    if family == "cgan":
        return cgan.resolve_train_config(out, resume=True)
    if family == "lora":
        return lora_config.resolve_train_config(out, resume=True)
    return resolve_run_config(CVAETrainConfig, out, family="cvae", resume=True)


@pytest.mark.parametrize("run_family, asked", [(a, b) for a in CONFIGS for b in CONFIGS if a != b])
def test_resume_names_the_family_of_the_run_and_its_command(run_family, asked, tmp_path):
    out = fake_run(tmp_path / "run", run_family)
    expected = f"{str(out)!r} is a {run_family} run; resume it with `dishgen train {run_family} --resume`"
    with pytest.raises(ConfigError) as err:
        resolve_for(asked, out)
    assert str(err.value).startswith(expected) and "unknown" not in str(err.value)
    with pytest.raises(RunDirError) as err:  # the library path (train(..., resume=True)) says the same
        RunDir(out, asked).prepare({}, resume=True)
    assert str(err.value).startswith(expected)


def test_train_cgan_resume_on_a_cvae_run_from_the_cli(tmp_path, monkeypatch, capsys):
    out = fake_run(tmp_path / "run", "cvae")
    code, err = run_cli(["train", "cgan", "--data", str(tmp_path), "--out", str(out), "--resume"],
                        monkeypatch, capsys)
    assert code == 2
    assert err == (f"Error: {str(out)!r} is a cvae run; resume it with `dishgen train cvae --resume` "
                   "(or choose another --out for a new cgan run)\n")


def test_a_damaged_run_config_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ConfigError, match="could not be read .*not a dishgen run's config"):
        resolve_run_config(CVAETrainConfig, out, family="cvae", resume=True)
    (out / "config.json").write_text(json.dumps({"max_steps": 3}))
    with pytest.raises(ConfigError, match="names no family"):
        resolve_run_config(CVAETrainConfig, out, family="cvae", resume=True)


# -- leftovers of a killed checkpoint write -----------------------------------------------------------


def kill_during_checkpoint_write(run: Path, step: int) -> None:
    """Start writing checkpoint-<step> with fileio.atomic_directory in another process and SIGKILL it."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from dishgen.fileio import atomic_directory
        with atomic_directory(Path({str(run)!r}) / "checkpoint-{step}") as tmp:
            (tmp / "model.safetensors").write_bytes(b"half written")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9, result.stderr.decode()


@pytest.mark.parametrize("resume", [True, False])
def test_leftover_checkpoint_folders_are_removed_complete_ones_kept(resume, tmp_path, caplog):
    run = tmp_path / "run"
    if resume:
        fake_run(run, "cvae")
        (run / "checkpoint-2" / "model.safetensors").write_bytes(b"complete weights")
    else:
        run.mkdir()
    kill_during_checkpoint_write(run, 4)
    (run / ".model.tmp-x1y2").mkdir()  # an export killed half-way
    leftovers = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert [name.split(".tmp-")[0] for name in leftovers] == [".checkpoint-4", ".model"]
    with caplog.at_level("WARNING", logger="dishgen.train.common"):
        start = RunDir(run, "cvae").prepare({"max_steps": 2}, resume=resume)
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint") or p.name.startswith(".model")]
    assert sum("left by a checkpoint write that did not finish" in r.getMessage() for r in caplog.records) == 1
    assert sum("left by a model export write" in r.getMessage() for r in caplog.records) == 1
    if resume:
        assert start == 2
        assert (run / "checkpoint-2" / "model.safetensors").read_bytes() == b"complete weights"
    else:
        assert start is None


def test_a_checkpoint_killed_while_being_replaced_is_put_back(tmp_path):
    run = fake_run(tmp_path / "run", "cvae")
    # atomic_directory replacing checkpoint-2 was killed between its two renames.
    (run / "checkpoint-2").rename(run / ".checkpoint-2.old-4242")
    assert RunDir(run, "cvae").prepare({}, resume=True) == 2
    assert (run / "checkpoint-2" / "COMPLETE").read_text() == "2"
    assert not (run / ".checkpoint-2.old-4242").exists()


# -- property-based: arbitrary input never escapes as anything but a ConfigError -----------------------

KEYS = st.one_of(st.sampled_from(sorted({f.name for cls in CONFIGS.values() for f in dataclasses.fields(cls)})),
                 st.text(max_size=20))
VALUES = st.one_of(st.text(max_size=30), st.integers().map(str), st.floats().map(str),
                   st.sampled_from(["none", "[", "[1,2]", '["a"]', "1e400", "-0", "nan", "true", ",", "[[]]"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(sorted(CONFIGS)),
       items=st.lists(st.one_of(st.tuples(KEYS, VALUES).map("=".join), st.text(max_size=20)), max_size=4))
def test_arbitrary_overrides_raise_nothing_but_config_error(family, items):
    try:
        parse_overrides(items)
        config = resolve_config(CONFIGS[family], overrides=items)
    except ConfigError as err:
        assert "\n" not in str(err) or "\n" in "".join(items)
        return
    config_module.validate_config(config)  # what resolved is valid


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
       suffix=st.sampled_from([".yaml", ".json"]))
def test_arbitrary_config_file_bytes_raise_nothing_but_config_error(content, suffix, tmp_path):
    path = tmp_path / f"config{suffix}"
    path.write_bytes(content)
    try:
        resolve_config(CVAETrainConfig, config_file=path)
    except ConfigError:
        pass
