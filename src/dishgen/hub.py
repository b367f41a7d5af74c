"""Hub models without the wait: use the local cache, and fail in seconds when the hub is out of reach.

Offline, ``huggingface_hub`` retries every request for tens of seconds before it gives up
(``dishgen evaluate`` with its defaults spent 27-85 s that way). Every dishgen loader that takes a
hub id calls :func:`resolve_hub_model` first; it decides in at most ~1.5 s:

1. not a hub id (a local folder, a file) -> returned unchanged;
2. already in the local Hugging Face cache -> the cached snapshot folder, loaded with no network
   (a cached model is used as it is; ``hf download ID`` refreshes it);
3. ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) -> :class:`HubModelUnavailable` at once;
4. the hub endpoint (``HF_ENDPOINT``, or the HTTPS proxy when one is set) refuses a TCP connection
   within :data:`CONNECT_TIMEOUT_S` -> :class:`HubModelUnavailable`;
5. otherwise the id itself, and the usual ``from_pretrained`` download runs.

The error is one line naming the model, the ``hf download`` command and the option that takes a
local folder instead (``huggingface_hub`` >= 1.0 ships the ``hf`` command; older ones call it
``huggingface-cli``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from dishgen.errors import DishgenError

CONNECT_TIMEOUT_S = 1.5  # DNS lookup + TCP connect to the hub, together
DEFAULT_ENDPOINT = "https://huggingface.co"
REMEMBER_S = 30.0  # how long one reachability answer is reused
_TRUE = {"1", "ON", "YES", "TRUE"}
_reachable_seen: dict[tuple[str, int], tuple[float, bool]] = {}  # (host, port) -> (when, answer)


class HubModelUnavailable(DishgenError):
    """A hub model that is not in the local cache while the hub cannot be used (offline)."""


def looks_like_hub_id(text: str | Path) -> bool:
    """``owner/name`` that is not an existing path (what ``from_pretrained`` would fetch from the hub)."""
    text = str(text)
    return (text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text
            and not text.endswith("/") and not Path(text).expanduser().exists())


def offline_requested() -> bool:
    """``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value (read now, not at import)."""
    return any(os.environ.get(name, "").strip().upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The hub cache folder, from ``HF_HUB_CACHE`` / ``HF_HOME`` as they are set now.

    ``huggingface_hub`` reads these once, at import; reading them here keeps a later change
    (a test, a notebook) effective.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def cached_snapshot(repo_id: str, *, revision: str | None = None, marker: str | None = None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (no network), or ``None`` when it is not cached.

    Args:
        repo_id: ``owner/name``.
        revision: branch, tag or commit (default ``main``).
        marker: a file the snapshot must hold to count as usable (``config.json``,
            ``model_index.json``); a partly downloaded repository without it is not used.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, and a malformed cache: both mean "not usable offline"
        return None
    if marker is not None and not (folder / marker).is_file():
        return None
    return folder


def hub_endpoint() -> str:
    """The hub URL: ``HF_ENDPOINT`` as set now, else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def endpoint_reachable(endpoint: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or to the HTTPS proxy in front of it) opens within ``timeout``.

    The DNS lookup has no timeout of its own and can hang, so lookup and connect run in a daemon
    thread that is given ``timeout`` seconds in all. An answer is remembered for
    :data:`REMEMBER_S` seconds, so a command that loads several models waits at most once.
    """
    url = urllib.parse.urlsplit(endpoint or hub_endpoint())
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    proxy = urllib.request.getproxies_environment().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass_environment(host):
        proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or host, proxy_url.port or 8080
    seen = _reachable_seen.get((host, port))
    if seen is not None and time.monotonic() - seen[0] < REMEMBER_S:
        return seen[1]
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, name="dishgen-hub-check", daemon=True)
    thread.start()
    thread.join(timeout)
    reachable = bool(result and result[0])
    _reachable_seen[(host, port)] = (time.monotonic(), reachable)
    return reachable


def resolve_hub_model(
    location: str | Path, *, what: str, option: str | None = None, revision: str | None = None,
    marker: str | None = None, error: type[Exception] = HubModelUnavailable,
) -> str:
    """Where to load ``location`` from: itself, its cached snapshot, or a fast one-line failure.

    Args:
        location: a hub id (``owner/name``) or anything else (returned unchanged).
        what: what the model is for, for the message (``"CLIP backbone"``, ``"base model"``).
        option: how to pass a local folder instead, with ``PATH`` in it (``--clip-model PATH``).
        revision: the hub revision wanted (default ``main``).
        marker: a file the cached snapshot must hold (see :func:`cached_snapshot`).
        error: the exception class to raise, so each caller keeps its documented error type
            (``DiffusionError``, ``BackboneUnavailable``...); it takes the message.

    Returns:
        ``location`` unchanged (not a hub id, or the hub is reachable), or the cached snapshot folder.

    Raises:
        HubModelUnavailable: (or ``error``) not cached, and ``HF_HUB_OFFLINE`` is set or the hub
            cannot be reached.
    """
    text = str(location)
    if not looks_like_hub_id(text):
        return text
    snapshot = cached_snapshot(text, revision=revision, marker=marker)
    if snapshot is not None:
        return str(snapshot)
    if offline_requested():
        reason = "HF_HUB_OFFLINE is set"
    elif not endpoint_reachable():
        reason = f"offline: {urllib.parse.urlsplit(hub_endpoint()).netloc} did not answer within {CONNECT_TIMEOUT_S:g} s"
    else:
        return text
    at = f"@{revision}" if revision else ""
    download = f"hf download {text}" + (f" --revision {revision}" if revision else "")
    use = f"pass that folder with {option}" if option else "pass that folder instead of the id"
    raise error(
        f"{what} {text}{at} is not in the local Hugging Face cache ({hub_cache_dir()}) and the hub cannot be "
        f"reached ({reason}). Download it with `{download}` once online, or on a connected machine with "
        f"`{download} --local-dir PATH` and {use}"
    )
