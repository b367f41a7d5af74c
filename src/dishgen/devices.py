"""Device and dtype selection. The library never moves anything to CUDA on its own."""

from __future__ import annotations

from dishgen.errors import DishgenError


class DeviceError(DishgenError, ValueError):
    """A --device or --dtype that cannot be used here."""


_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(device: str | None = None):
    """Return a ``torch.device``: the one asked for, else CPU.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (CUDA when present,
            else CPU). ``None`` means CPU, the safe default.
    """
    import torch

    if device in (None, "", "cpu"):
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device!r} was asked for, but CUDA is not available here; use --device cpu")
    return dev


def resolve_dtype(dtype: str | None, device=None):
    """Return a ``torch.dtype`` from a name (``fp32``, ``fp16``, ``bf16``...); ``None`` -> float32.

    fp16 on a CPU is refused: most CPU kernels do not support it and the result would be slow or wrong.
    """
    import torch

    if dtype in (None, ""):
        return torch.float32
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise DeviceError(f"unknown dtype {dtype!r}; choose one of fp32, fp16, bf16")
    if name == "float16" and device is not None and torch.device(device).type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use --dtype bf16 or fp32, or --device cuda")
    return getattr(torch, name)
