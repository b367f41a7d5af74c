"""The error types that mean "the user asked for something that cannot be done".

The CLI prints these as one clear line (no traceback) and exits with status 2.
"""

from __future__ import annotations


class DishgenError(Exception):
    """Base class for errors whose message tells the user what to do."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Error classes shown to the user without a traceback (imported lazily where possible)."""
    import sys

    from dishgen.config import ConfigError
    from dishgen.data.dataset import DatasetError
    from dishgen.generation import ModelReferenceError

    types_: list[type[BaseException]] = [DishgenError, ConfigError, DatasetError, ModelReferenceError, FileNotFoundError]
    # Error types of modules that are already imported (so none is imported just for this).
    for module_name, attrs in {
        "dishgen.train.common": ("TrainingDiverged", "RunDirError"),
        "dishgen.text": ("TextEncoderNotAvailable",),
        "dishgen.data.build": ("BuildError",),
    }.items():
        module = sys.modules.get(module_name)
        for attr in attrs:
            if module is not None and hasattr(module, attr):
                types_.append(getattr(module, attr))
    return tuple(types_)
