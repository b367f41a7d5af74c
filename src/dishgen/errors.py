"""One exception hierarchy: every error that means "the user asked for something that cannot be
done" derives from :class:`DishgenError`, and its message says what to do.

The CLI (:func:`dishgen.cli.main`) maps them in one place: the message as one line on stderr (no
traceback) and :attr:`DishgenError.exit_code` as the exit status (2; ``128 + signal`` for
:class:`Interrupted`). Errors that are also a built-in kind (``ValueError``, ``TypeError``,
``RuntimeError``) keep that base too, so existing ``except ValueError`` code still catches them.
"""

from __future__ import annotations

# The exit status of a usage error (click's convention for bad arguments).
USAGE_EXIT_CODE = 2


class DishgenError(Exception):
    """Base class for errors whose message tells the user what to do.

    Attributes:
        exit_code: the CLI's exit status for this error.
        reported: ``True`` when the message was already printed (the CLI does not repeat it).
    """

    exit_code: int = USAGE_EXIT_CODE
    reported: bool = False


class Interrupted(DishgenError):
    """Work stopped on a signal (Ctrl-C, SIGTERM) after saving what is needed to continue.

    The CLI prints the message (it says how to continue) and exits with ``128 + signal number``
    (130 for Ctrl-C), the shell convention for a process ended by a signal.
    """

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class WeightsFileError(DishgenError, ValueError):
    """A weights file that is missing, truncated or not safetensors (see
    :func:`dishgen.fileio.read_safetensors`)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Error classes shown to the user without a traceback: the hierarchy, and a missing file."""
    return (DishgenError, FileNotFoundError)


def exit_code_for(err: BaseException) -> int:
    """The CLI's exit status for a user error (:data:`USAGE_EXIT_CODE` unless the error says)."""
    return int(getattr(err, "exit_code", USAGE_EXIT_CODE))
