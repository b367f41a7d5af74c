"""Atomic file output and JSON Lines helpers.

Every file dishgen writes is either complete or absent: it is written under a temporary name in
the same folder and renamed into place (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dishgen.errors import DishgenError, WeightsFileError

log = logging.getLogger(__name__)

LOCK_FILE = ".dishgen.lock"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Args:
        path: the final file path.
        suffix: suffix of the temporary file (defaults to the final suffix, so that libraries
            which infer a format from the extension keep working).

    Yields:
        The temporary path to write to. It is removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file as 0600; give the result the mode a plain open() would (umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_save_image(image, path: str | os.PathLike, **save_kwargs) -> None:
    """Save a PIL image atomically; the format follows the final path's extension."""
    path = Path(path)
    fmt = save_kwargs.pop("format", None) or _pil_format(path.suffix)
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)


def _pil_format(suffix: str) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(suffix.lower(), "PNG")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it onto ``path`` when the block succeeds.

    An existing ``path`` is replaced only after the new folder is complete, so a crash leaves
    either the old folder or the new one, never a mixture.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Hard-link ``src`` to ``dst`` (instant, no extra disk); copy where links fail (other file systems)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish_directory(finished: str | os.PathLike, out: str | os.PathLike, work: str | os.PathLike | None = None) -> None:
    """Move a finished folder onto ``out`` (replacing it), then remove the ``work`` folder.

    Datasets are assembled in a work folder and published in one rename, so a folder at ``out``
    is always complete.
    """
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    os.replace(finished, out)
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Append rows to a JSON Lines file, one complete line per row, flushed and fsynced.

    A crash can at worst leave a partial last line, which :func:`read_jsonl` skips.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, *, strict: bool = False) -> list[dict]:
    """Read a JSON Lines file.

    Args:
        path: the file.
        strict: raise on a malformed line instead of skipping it. A torn last line (from a
            killed writer) is always skipped.

    Returns:
        The parsed rows, in file order.
    """
    rows: list[dict] = []
    path = Path(path)
    if not path.exists():
        return rows
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if strict and number != len(lines):
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
    return rows


def repair_jsonl(path: str | os.PathLike) -> int:
    """Drop a torn (unterminated) last line left by a killed writer. Returns bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data[: data.rfind(b"\n") + 1]
    atomic_write_bytes(path, keep)
    return len(data) - len(keep)


class OutputLocked(DishgenError):
    """Another live dishgen process holds the output folder's lock."""


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder/.dishgen.lock`` while a command writes into ``folder``.

    The lock file is created with ``O_CREAT | O_EXCL`` (atomic: of two processes, exactly one
    creates it) and holds the owner's pid, host, start time and command line. A lock left by a
    process that has died (same host, pid no longer running), or a lock file that is unreadable
    and over a minute old, is taken over with a warning. The lock is removed on exit if it is
    still this process's.

    Args:
        folder: the output folder (created if missing).

    Yields:
        The lock file's path.

    Raises:
        OutputLocked: a live process holds the lock (the message names its pid, host and start).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    mine = json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:300],
    }) + "\n"
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _take_over_stale_lock(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(mine)
        break
    else:
        raise OutputLocked(f"cannot lock {folder}: {path} keeps reappearing; is another dishgen "
                           "command starting in it? Run one command per output folder")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == mine:
                path.unlink()


def _take_over_stale_lock(path: Path) -> None:
    """Remove ``path`` if its owner is dead; raise :class:`OutputLocked` if it is alive."""
    try:
        raw = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return  # released meanwhile: try again
    try:
        holder = json.loads(raw)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        if age < 60:  # being written by a process that has just created it
            raise OutputLocked(f"{path.parent} is being locked by another dishgen command (its lock file "
                               f"{path} is new and not yet written); run one command per output folder") from None
        log.warning("taking over %s: an unreadable lock file %.0f s old", path, age)
    else:
        if host != socket.gethostname() or _pid_alive(pid):
            raise OutputLocked(
                f"{path.parent} is in use by another dishgen command (pid {pid} on {host}, since "
                f"{holder.get('started', '?')}: {str(holder.get('command', ''))[:120]!r}); wait for it "
                f"or stop it, or, if that process is gone, delete {path}"
            )
        log.warning("taking over %s: its owner (pid %d, started %s) is no longer running",
                    path, pid, holder.get("started", "?"))
    # Remove it only if it is still the file judged stale (another process may have replaced it).
    with contextlib.suppress(FileNotFoundError):
        if path.read_text(encoding="utf-8") == raw:
            path.unlink()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    except OSError:
        return False
    return True


def read_safetensors(path: str | os.PathLike) -> dict:
    """``safetensors.torch.load_file`` with a one-line :class:`~dishgen.errors.WeightsFileError`
    naming the file when it is missing, truncated or not safetensors (a damaged download or disk),
    instead of the library's traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsFileError(f"{str(path)!r} is missing: the folder is incomplete") from None
    except (OSError, SafetensorError) as err:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise WeightsFileError(f"{str(path)!r} is not a readable safetensors file ({first}); "
                               "it may be truncated or damaged: copy or download it again") from None


@contextlib.contextmanager
def damaged_checkpoint_hint(folder: str | os.PathLike) -> Iterator[None]:
    """Add to a :class:`~dishgen.errors.WeightsFileError` raised while a checkpoint is restored
    what to do: move the damaged checkpoint aside, and ``--resume`` goes on from the one before."""
    try:
        yield
    except WeightsFileError as err:
        raise WeightsFileError(f"{err}. Checkpoint {Path(folder).name} is damaged: move it out of the run "
                               "folder and --resume goes on from the checkpoint before it") from None
