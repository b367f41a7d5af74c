"""The error types that mean "the user asked for something that cannot be done".

The CLI prints these as one clear line (no traceback) and exits with status 2.
"""

from __future__ import annotations


class DishgenError(Exception):
    """Base class for errors whose message tells the user what to do."""


class Interrupted(DishgenError):
    """Work stopped on a signal (Ctrl-C, SIGTERM) after saving what is needed to continue.

    The CLI prints the message (it says how to continue) and exits with ``128 + signal number``
    (130 for Ctrl-C), the shell convention for a process ended by a signal.
    """

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


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
