"""The cVAE trainer under torchrun with two CPU processes (gloo, DDP through accelerate)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_dishgen_torchrun
from safetensors.torch import load_file


@pytest.mark.slow
def test_two_processes_train_and_only_rank0_writes(tiny_dataset_64, tmp_path):
    out = tmp_path / "run"
    overrides = dict(base_channels=8, max_channels=32, z_dim=16, cond_dim=32, batch_size=4, lr_warmup_steps=1,
                     max_steps=4, checkpoint_every=2, sample_every=100, log_every=1, samples_per_prompt=1,
                     num_recon_images=2)
    result = run_dishgen_torchrun(["train", "cvae", "--data", str(tiny_dataset_64), "--out", str(out),
                                   *[f"{k}={v}" for k, v in overrides.items()]])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "recon" in r]
    assert steps == [1, 2, 3, 4]  # one writer: no duplicated rows
    # Two processes really shared the work: an epoch took num_train // (batch_size * 2) steps.
    num_train = len((tiny_dataset_64 / "train" / "metadata.jsonl").read_text().splitlines())
    last = [r for r in rows if "recon" in r][-1]
    assert last["epoch"] == pytest.approx(4 / (num_train // (4 * 2)), abs=1e-3)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert not list(out.glob(".checkpoint-*"))  # no temporary folders left behind
