"""Stopping a training run cleanly, for every family: Ctrl-C / SIGTERM, max_minutes, time-based
checkpoints, the resume command, and the progress bar.

A run interrupted part-way and resumed must end with the weights of a run that never stopped
(bit-identical, like the families' own resume tests). Wall-clock limits are tested with a fake
clock (``dishgen.train.common.now``) that advances one minute per step, so no test waits.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import dishgen.train.common as common
from dishgen.cli import cli
from dishgen.config import ConfigError, resolve_config
from dishgen.diffusion import LORA_WEIGHTS_NAME
from dishgen.errors import Interrupted

CVAE_TINY = {
    "base_channels": 8, "max_channels": 32, "z_dim": 16, "cond_dim": 32, "batch_size": 8, "lr": 2e-3,
    "lr_warmup_steps": 2, "log_every": 2, "samples_per_prompt": 2, "num_recon_images": 4, "text_encoder": "lstm",
    "lstm_embed_dim": 16, "lstm_hidden_dim": 16, "lstm_out_dim": 16, "sample_every": 100, "checkpoint_every": 100,
    "validate_every_epochs": 100, "keep_checkpoints": 10,
}
CGAN_TINY = dict(resolution=32, base_channels=8, max_channel_mult=4, z_dim=16, cond_dim=16, batch_size=4,
                 mismatch_weight=0.5, r1_every=2, log_every=1, sample_every=3, checkpoint_every=3,
                 keep_checkpoints=0, max_steps=6)
LORA_TINY = ["resolution=64", "batch_size=4", "lora_rank=4", "learning_rate=5e-3", "validation_steps=2",
             "validation_prompts=[\"sarma in a clay pot\"]", "keep_checkpoints=0", "sample_every=0",
             "checkpoint_every=100"]


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def at_step(module, name: str, step: int, action):
    """Wrap ``module.check_finite`` (called once per step by every trainer) to run ``action`` at ``step``."""
    real = getattr(module, name)

    def wrapped(s, losses, run):
        real(s, losses, run)
        if s == step:
            action()

    return wrapped


def fake_clock(monkeypatch, module, name: str = "check_finite", minutes_per_step: float = 1.0) -> None:
    """Every training step takes ``minutes_per_step`` on StopControl's clock."""
    clock = [1000.0]
    monkeypatch.setattr(common, "now", lambda: clock[0])
    real = getattr(module, name)

    def tick(step, losses, run):
        clock[0] += 60 * minutes_per_step
        real(step, losses, run)

    monkeypatch.setattr(module, name, tick)


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*"))


# -- Ctrl-C on the real command line (cVAE, a subprocess) ---------------------------------------------

HARNESS = textwrap.dedent('''
    import signal, sys, time
    from pathlib import Path

    import dishgen.train.common as common

    marker, real = Path(sys.argv[1]), common.check_finite

    def check_then_wait(step, losses, run):
        real(step, losses, run)
        if step == 6:  # step 6 is under way: tell the test, then wait for its Ctrl-C
            marker.write_text("6")
            control = signal.getsignal(signal.SIGINT).__self__  # the trainer's StopControl
            deadline = time.monotonic() + 120
            while not control.signum and time.monotonic() < deadline:
                time.sleep(0.02)

    common.check_finite = check_then_wait
    from dishgen.cli import main

    sys.argv = ["dishgen", *sys.argv[2:]]
    main()
''')


def test_ctrl_c_on_the_cli_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tiny_dataset_64, tmp_path):
    overrides = [f"{k}={v}" for k, v in {**CVAE_TINY, "max_steps": 10}.items()]
    out, marker = tmp_path / "run", tmp_path / "at-step-6"
    args = ["train", "cvae", "--data", str(tiny_dataset_64), "--out", str(out), *overrides]
    proc = subprocess.Popen([sys.executable, "-c", HARNESS, str(marker), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=60)[1][-3000:]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=180)

    assert proc.returncode == 130, stderr[-3000:]
    assert "SIGINT: finishing this step, then saving a checkpoint" in stderr
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted at step 6; checkpoint saved: (\S+)\. Resume with: (.+)", last)
    assert match, last
    assert match.group(1) == str(out / "checkpoint-6")
    assert shlex.split(match.group(2)) == ["dishgen", "train", "cvae", "--data", str(tiny_dataset_64),
                                           "--out", str(out), "--resume"]
    assert checkpoint_steps(out) == [6] and (out / "checkpoint-6" / "COMPLETE").is_file()
    assert not (out / "model").exists()  # no export after Ctrl-C: the run is not finished
    assert not list(out.glob(".checkpoint-*"))

    # The printed command, as printed, continues the run to step 10. Both it and the uninterrupted
    # run go through fresh interpreters too, like the interrupted part: a test run earlier in this
    # worker may have changed torch's global settings (threads...), which moves the last bits.
    def dishgen(*words):
        done = subprocess.run([sys.executable, "-m", "dishgen", *words], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    dishgen(*shlex.split(match.group(2))[1:])
    straight = tmp_path / "straight"
    dishgen("train", "cvae", "--data", str(tiny_dataset_64), "--out", str(straight), *overrides)
    for name in ("model/model.safetensors", "checkpoint-10/model.safetensors", "checkpoint-10/optimizer.safetensors"):
        assert same_tensors(out / name, straight / name), name
    log = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == [2, 4, 6, 8, 10]


# -- Ctrl-C in-process (cGAN): a signal at a chosen step, and a second one during the save --------------


def test_cgan_interrupted_then_resumed_equals_an_uninterrupted_run(tiny_dataset, tmp_path, monkeypatch):
    from dishgen.train import cgan as trainer

    config = resolve_config(trainer.CGANTrainConfig, overrides=CGAN_TINY)
    trainer.train(config, tiny_dataset, tmp_path / "straight")

    out = tmp_path / "run"
    handler_before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(trainer, "check_finite", at_step(trainer, "check_finite", 4,
                                                         lambda: os.kill(os.getpid(), signal.SIGINT)))
    with pytest.raises(Interrupted) as caught:
        trainer.train(config, tiny_dataset, out, device="cpu")
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    assert caught.value.exit_code == 130
    assert str(caught.value) == (f"interrupted at step 4; checkpoint saved: {out / 'checkpoint-4'}. Resume with: "
                                 f"dishgen train cgan --data {tiny_dataset} --out {out} --resume --device cpu")
    assert checkpoint_steps(out) == [3, 4] and not (out / "model").exists()

    trainer.train(trainer.resolve_train_config(out, resume=True), tiny_dataset, out, resume=True)
    for name in ("G", "D", "G_ema", "optimizer_G", "optimizer_D"):
        assert same_tensors(out / "checkpoint-6" / f"{name}.safetensors",
                            tmp_path / "straight" / "checkpoint-6" / f"{name}.safetensors"), name
    assert same_tensors(out / "model" / "model.safetensors", tmp_path / "straight" / "model" / "model.safetensors")


def test_a_second_ctrl_c_during_the_save_leaves_no_half_written_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    from dishgen.train import cgan as trainer
    from dishgen.train import gan_run  # the GAN trainers' checkpoint writer

    real_save = gan_run.save_checkpoint

    def save_then_ctrl_c_again(folder, *args):
        real_save(folder, *args)  # the files are in the temporary folder, not yet renamed
        if folder.name.startswith(".checkpoint-4"):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(gan_run, "save_checkpoint", save_then_ctrl_c_again)
    monkeypatch.setattr(trainer, "check_finite", at_step(trainer, "check_finite", 4,
                                                         lambda: os.kill(os.getpid(), signal.SIGINT)))
    handler_before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(resolve_config(trainer.CGANTrainConfig, overrides=CGAN_TINY), tiny_dataset, out)
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert checkpoint_steps(out) == [3] and (out / "checkpoint-3" / "COMPLETE").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".checkpoint")]  # temporary folder removed


# -- SIGTERM in-process (LoRA) ---------------------------------------------------------------------------


def test_lora_sigterm_then_resume_equals_an_uninterrupted_run(tiny_sd_dir, tiny_dataset_64, tmp_path, monkeypatch):
    import dishgen.train.lora as lora

    def run(out, *overrides, resume=False):
        config = lora.resolve_train_config(out, base=str(tiny_sd_dir), overrides=[*LORA_TINY, *overrides],
                                           resume=resume)
        return lora.train(config, tiny_dataset_64, out, resume=resume)

    run(tmp_path / "straight", "max_steps=4")
    out = tmp_path / "run"
    monkeypatch.setattr(lora, "check_finite", at_step(lora, "check_finite", 2,
                                                      lambda: os.kill(os.getpid(), signal.SIGTERM)))
    with pytest.raises(Interrupted, match=r"^interrupted at step 2; checkpoint saved: .*checkpoint-2\. "
                                          r"Resume with: dishgen train lora --data .* --resume$") as caught:
        run(out, "max_steps=4")
    monkeypatch.undo()
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert checkpoint_steps(out) == [2] and not (out / LORA_WEIGHTS_NAME).exists()
    run(out, resume=True)
    assert same_tensors(out / LORA_WEIGHTS_NAME, tmp_path / "straight" / LORA_WEIGHTS_NAME)
    for name in ("optimizer", "scheduler", "rng_state_0"):
        assert (out / "checkpoint-4" / f"{name}.safetensors").is_file()
    assert same_tensors(out / "checkpoint-4" / "optimizer.safetensors",
                        tmp_path / "straight" / "checkpoint-4" / "optimizer.safetensors")


# -- max_minutes and checkpoint_every_minutes -------------------------------------------------------------


def test_cvae_time_limit_and_time_based_checkpoints(tiny_dataset_64, tmp_path, monkeypatch, capsys):
    """One fake minute per step: checkpoints every 2 minutes (the step-3 and step-6 ones restart the
    interval), a 5.5-minute limit stops after step 6 with an export and exit 0."""
    from dishgen.train.cvae import CVAETrainConfig, train

    fake_clock(monkeypatch, common)
    config = resolve_config(CVAETrainConfig, overrides={**CVAE_TINY, "max_steps": 100, "checkpoint_every": 3,
                                                   "checkpoint_every_minutes": 2, "max_minutes": 5.5})
    out = tmp_path / "run"
    train(config, tiny_dataset_64, out)
    assert checkpoint_steps(out) == [2, 3, 5, 6]
    assert json.loads((out / "model" / "metrics.json").read_text())["step"] == 6  # a clean stop exports
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("time limit")]
    assert line == [f"time limit reached (max_minutes=5.5) at step 6; checkpoint saved: {out / 'checkpoint-6'}. "
                    f"Resume with: dishgen train cvae --data {tiny_dataset_64} --out {out} --resume"]


@pytest.mark.parametrize("family", ["cgan", "lora"])
def test_every_family_stops_at_its_time_limit(family, tiny_dataset, tiny_dataset_64, tiny_sd_dir, tmp_path,
                                              monkeypatch, capsys):
    import dishgen.train.cgan as cgan
    import dishgen.train.lora as lora

    out = tmp_path / "run"
    module = {"cgan": cgan, "lora": lora}[family]
    fake_clock(monkeypatch, module)
    if family == "cgan":
        config = resolve_config(cgan.CGANTrainConfig, overrides={**CGAN_TINY, "max_steps": 50, "max_minutes": 1.5})
        cgan.train(config, tiny_dataset, out)
        assert json.loads((out / "model" / "config.json").read_text())["step"] == 2
    else:
        config = lora.resolve_train_config(out, base=str(tiny_sd_dir),
                                           overrides=[*LORA_TINY, "max_steps=50", "max_minutes=1.5"])
        lora.train(config, tiny_dataset_64, out)
        assert (out / LORA_WEIGHTS_NAME).is_file()
    assert checkpoint_steps(out) == [2]
    assert f"time limit reached (max_minutes=1.5) at step 2; checkpoint saved: {out / 'checkpoint-2'}" in \
        capsys.readouterr().out


def test_time_settings_are_validated():
    from dishgen.train.cgan import CGANTrainConfig
    from dishgen.train.cvae import CVAETrainConfig
    from dishgen.train.lora import LoraTrainConfig

    for cls in (CGANTrainConfig, CVAETrainConfig, LoraTrainConfig):
        for key in ("max_minutes", "checkpoint_every_minutes"):
            with pytest.raises(ConfigError, match=rf"^{key}=-1(\.0)? must be a number of minutes >= 0"):
                resolve_config(cls, overrides=[f"{key}=-1"])
        config = resolve_config(cls, overrides=["max_minutes=90", "checkpoint_every_minutes=0"])
        assert (config.max_minutes, config.checkpoint_every_minutes) == (90, 0)


def test_the_cli_rejects_a_negative_time_limit_in_one_line(tiny_dataset_64, tmp_path):
    result = CliRunner().invoke(cli, ["train", "cvae", "--data", str(tiny_dataset_64), "--out", str(tmp_path / "r"),
                                      "max_minutes=-5"])
    assert result.exit_code != 0 and "max_minutes=-5" in str(result.exception)
    assert not (tmp_path / "r").exists()


# -- progress bar ---------------------------------------------------------------------------------------------


def test_cvae_progress_bar_counts_images(tiny_dataset_64, tmp_path, capsys):
    from dishgen.train.cvae import CVAETrainConfig, train

    train(resolve_config(CVAETrainConfig, overrides={**CVAE_TINY, "max_steps": 4}), tiny_dataset_64, tmp_path / "run")
    err = capsys.readouterr().err
    # 4 steps x batch 8 = 32 images; the rate is in images per second, the postfix has step and losses
    assert re.search(r"cvae: 100%.*\| 32/32 \[[^\]]*img/s, step=4, recon=\d\.\d{4}, kl=", err), err[-2000:]
    assert "it/s" not in err


# -- several processes: a signal to one rank stops all of them at the same step ----------------------------

TORCHRUN_HARNESS = textwrap.dedent('''
    import os, signal, sys

    import dishgen.train.common as common

    real = common.check_finite

    def sigterm_rank1_at_step_3(step, losses, run):
        real(step, losses, run)
        if step == 3 and os.environ["RANK"] == "1":  # only rank 1 is told to stop
            os.kill(os.getpid(), signal.SIGTERM)

    common.check_finite = sigterm_rank1_at_step_3
    from dishgen.cli import main

    sys.argv = ["dishgen", *sys.argv[1:]]
    main()
''')


@pytest.mark.slow
def test_a_signal_to_one_of_two_processes_stops_both_and_rank0_saves(tiny_dataset_64, tmp_path):
    harness = tmp_path / "harness.py"
    harness.write_text(TORCHRUN_HARNESS)
    out = tmp_path / "run"
    overrides = {**CVAE_TINY, "batch_size": 4, "max_steps": 20, "log_every": 1}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(harness),
         "train", "cvae", "--data", str(tiny_dataset_64), "--out", str(out), *[f"{k}={v}" for k, v in overrides.items()]],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    # The first worker to exit has status 143 (SIGTERM); torchrun then stops the other and fails.
    assert proc.returncode != 0 and re.search(r"exitcode\s*: 143", proc.stderr), proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("interrupted at step")]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted at step 3; checkpoint saved: {out / 'checkpoint-3'}")
    assert lines[0].endswith("--resume (under the same launcher)")
    assert checkpoint_steps(out) == [3] and (out / "checkpoint-3" / "COMPLETE").is_file()
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # both ranks stopped at step 3 (rank 0 had no signal of its own)
