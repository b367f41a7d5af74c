"""Pickle-free training state: nested dicts/lists of tensors and numbers <-> safetensors + JSON.

Optimizer and scaler state dicts are nested Python structures holding tensors. ``torch.save``
would pickle them; a run directory must load without unpickling, so the tensors go into a
safetensors file and the structure into JSON (no library does this flattening for arbitrary
state dicts, hence these few lines).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from dishgen.fileio import read_safetensors

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """Replace tensors in ``obj`` by references, collecting them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        int_keys = all(isinstance(k, int) for k in obj) and len(obj) > 0
        out = {str(k): flatten_state(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        if int_keys:
            out[_INTKEYS] = True
        return out
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(unflatten_state(v, tensors) for v in obj[_TUPLE])
        int_keys = obj.get(_INTKEYS, False)
        return {(int(k) if int_keys else k): unflatten_state(v, tensors) for k, v in obj.items() if k != _INTKEYS}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def save_state(path_prefix: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as ``<prefix>.safetensors`` + ``<prefix>.json`` (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, tensors)
    # safetensors refuses tensors that share memory; clone to be safe (state is small).
    save_file({k: v.clone() for k, v in tensors.items()}, str(path_prefix) + ".safetensors")
    Path(str(path_prefix) + ".json").write_text(json.dumps(skeleton), encoding="utf-8")


def load_state(path_prefix: Path) -> dict[str, Any]:
    """Read what :func:`save_state` wrote."""
    tensors = read_safetensors(str(path_prefix) + ".safetensors")
    skeleton = json.loads(Path(str(path_prefix) + ".json").read_text(encoding="utf-8"))
    return unflatten_state(skeleton, tensors)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) random states."""
    np_state = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _to_lists(obj):
    if isinstance(obj, (tuple, list)):
        return [_to_lists(o) for o in obj]
    return obj


def _to_tuples(obj):
    if isinstance(obj, list):
        return tuple(_to_tuples(o) for o in obj)
    return obj
