"""The LoRA trainer under ``torchrun`` with 2 CPU processes (gloo): ranks stay in sync, gradients are
all-reduced once per accumulation, rank 0 writes.

``accelerate launch --cpu --num_processes 2`` starts only one process on a CPU-only machine
(ENVIRONMENT.md), so the test uses ``torchrun``, which is what accelerate runs underneath on GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HARNESS = textwrap.dedent('''
    import json, os, sys

    import torch

    data, out, base, report = sys.argv[1:5]
    rank = int(os.environ["RANK"])
    writes = []
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def audit(event, args):
        # Every file or folder this process creates, changes or removes under the run directory.
        if event == "open" and args and isinstance(args[0], (str, os.PathLike)):
            path, mode, flags = str(args[0]), args[1], args[2]
            writing = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS)
            if writing and os.path.abspath(path).startswith(out):
                writes.append((event, path))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree"):
            if str(args[0]).startswith(out):
                writes.append((event, str(args[0])))

    sys.addaudithook(audit)

    import dishgen.train.lora as lora
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    batches, checksums = [], []
    allreduced_at = []  # for every gradient bucket all-reduced: how many micro-batches had been drawn
    original_ddp_init = DistributedDataParallel.__init__

    def counting_ddp_init(self, *args, **kwargs):
        original_ddp_init(self, *args, **kwargs)

        def hook(process_group, bucket):
            allreduced_at.append(len(batches))
            return allreduce_hook(process_group, bucket)

        self.register_comm_hook(None, hook)

    DistributedDataParallel.__init__ = counting_ddp_init
    original_batches = lora.micro_batch_indices

    def recording_batches(*args, **kwargs):
        indices, epoch = original_batches(*args, **kwargs)
        batches.append(indices)
        return indices, epoch

    lora.micro_batch_indices = recording_batches
    original_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        result = original_step(self, *args, **kwargs)
        params = [p.detach().double() for group in self.param_groups for p in group["params"]]
        checksums.append([float(sum(p.sum() for p in params)), float(sum(p.abs().sum() for p in params))])
        return result

    torch.optim.AdamW.step = recording_step
    config = lora.resolve_train_config(out, base=base, overrides=[
        "resolution=64", "batch_size=2", "lora_rank=4", "max_steps=3", "checkpoint_every=2", "sample_every=2",
        "validation_steps=2", "validation_prompts=[\\"sarma\\"]", "learning_rate=1e-2", "train_text_encoder=true",
        "gradient_accumulation_steps=2"])
    lora.train(config, data, out, device="cpu")
    with open(f"{report}-{rank}.json", "w") as f:  # outside the run directory
        json.dump({"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "batches": batches,
                   "checksums": checksums, "writes": writes,
                   "allreduced_at": allreduced_at}, f)
''')


@pytest.mark.slow
def test_two_cpu_processes_stay_in_sync_and_only_rank0_writes(tiny_sd_dir, tiny_dataset_64, tmp_path):
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(harness),
         str(tiny_dataset_64), str(out), str(tiny_sd_dir), str(tmp_path / "report")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {rank: json.loads((tmp_path / f"report-{rank}.json").read_text()) for rank in (0, 1)}
    assert results[0]["world"] == results[1]["world"] == 2
    zero, one = results[0], results[1]
    # each rank read its own half of every batch (3 steps x 2 micro-batches) ...
    assert len(zero["batches"]) == len(one["batches"]) == 6
    for a, b in zip(zero["batches"], one["batches"], strict=True):
        assert len(a) == len(b) == 2 and not set(a) & set(b)
    # ... and yet both hold the same LoRA weights after every optimizer step (gradients all-reduced)
    assert len(zero["checksums"]) == 3 and zero["checksums"] == one["checksums"]
    assert zero["checksums"][0] != zero["checksums"][-1]
    # ... only at the last micro-step of each accumulation (no_sync on the DDP-wrapped UNet and
    # text encoder; on the bare modules it did nothing and every micro-step all-reduced)
    for result in (zero, one):
        assert set(result["allreduced_at"]) == {2, 4, 6}
    # only rank 0 touched the run directory; it wrote every rank's random state
    assert one["writes"] == [] and zero["writes"]
    assert (out / "checkpoint-2" / "rng_state_0.json").is_file()
    assert (out / "checkpoint-2" / "rng_state_1.json").is_file()
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "samples" / "step-2.png").is_file()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # one row per step, not one per rank
    assert rows[0]["images_per_s"] > 0
