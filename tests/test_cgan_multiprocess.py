"""The cGAN trainer under torchrun with two CPU processes (gloo): ranks stay in sync, rank 0 writes."""

from __future__ import annotations

import json

import pytest
from conftest import run_dishgen_torchrun
from safetensors.torch import load_file


@pytest.mark.slow
def test_two_processes_train_in_sync(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    overrides = dict(resolution=32, base_channels=8, max_channel_mult=4, z_dim=16, cond_dim=16, batch_size=2, mismatch_weight=0.5,
                     max_steps=4, checkpoint_every=2, sample_every=100, log_every=1, r1_every=2)
    result = run_dishgen_torchrun(["train", "cgan", "--data", str(tiny_dataset), "--out", str(out),
                                   *[f"{k}={v}" for k, v in overrides.items()]])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one writer: no duplicated rows
    assert rows[-1]["images_per_s"] > 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert "fc.weight" in load_file(str(out / "model" / "model.safetensors"))
    assert not list(out.glob(".checkpoint-*"))  # no temporary folders left behind
