"""The GAN trainers' checkpoint I/O (cGAN, FastGAN): everything needed to resume exactly, as
safetensors + JSON (no pickle), beside the training loops rather than inside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dishgen.errors import DishgenError
from dishgen.fileio import damaged_checkpoint_hint, read_safetensors


class CheckpointWriteError(DishgenError):
    """A checkpoint could not be written (the previous ones are intact)."""


def save_checkpoint(folder: Path, meta: dict, G, D, G_ema, opt_G, opt_D, scaler_G, scaler_D) -> None:
    """Fill ``folder`` with everything needed to resume exactly (safetensors + JSON, no pickle)."""
    from safetensors.torch import save_file

    from dishgen.exports import state_dict_for_file
    from dishgen.train.state import rng_state, save_state

    (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        save_file(state_dict_for_file(net), str(folder / f"{name}.safetensors"))
    save_state(folder / "optimizer_G", opt_G.state_dict())
    save_state(folder / "optimizer_D", opt_D.state_dict())
    save_state(folder / "scaler_G", scaler_G.state_dict())
    save_state(folder / "scaler_D", scaler_D.state_dict())
    save_state(folder / "rng", rng_state())
    (folder / "trainer_state.json").write_text(json.dumps({"step": meta["step"]}) + "\n", encoding="utf-8")


def load_checkpoint(folder: Path, G, D, G_ema, opt_G, opt_D, scaler_G, scaler_D) -> int:
    """Restore what :func:`save_checkpoint` wrote; returns the step."""
    from dishgen.train.state import load_state, set_rng_state

    with damaged_checkpoint_hint(folder):
        for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
            net.load_state_dict(read_safetensors(folder / f"{name}.safetensors"))
        for optimizer, name in ((opt_G, "optimizer_G"), (opt_D, "optimizer_D")):
            optimizer.load_state_dict(load_state(folder / name))
            match_param_layout(optimizer)
        for scaler, name in ((scaler_G, "scaler_G"), (scaler_D, "scaler_D")):
            state = load_state(folder / name)
            if state:
                scaler.load_state_dict(state)
        set_rng_state(load_state(folder / "rng"))
    return int(json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["step"])


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give restored optimizer state the memory layout (e.g. channels-last) of its parameter.

    Checkpoints store contiguous tensors; the fused Adam kernel walks parameter, gradient and
    state in memory order, so their strides must agree or the update lands on the wrong elements.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
