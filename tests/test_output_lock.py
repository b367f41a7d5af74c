"""The output-folder lock: one command per folder; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from dishgen.errors import DishgenError
from dishgen.fileio import LOCK_FILE, OutputLocked, output_lock


def test_a_live_lock_refuses_a_second_holder_and_is_released(tmp_path):
    out = tmp_path / "raw"
    with output_lock(out) as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        with pytest.raises(OutputLocked, match=rf"in use by another dishgen command \(pid {os.getpid()} "):
            with output_lock(out):
                pass
        assert path.is_file()  # the refused attempt left the holder's lock alone
    assert not (out / LOCK_FILE).exists()
    with output_lock(out):  # free again
        pass
    assert issubclass(OutputLocked, DishgenError)


def test_a_lock_held_in_another_process_is_refused_with_its_pid(tmp_path):
    code = ("import sys, time; from dishgen.fileio import output_lock\n"
            "with output_lock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match=rf"pid {holder.pid} on "):
            with output_lock(tmp_path):
                pass
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and not (tmp_path / LOCK_FILE).exists()


def test_a_dead_owners_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    code = "import os, sys; from dishgen.fileio import output_lock\nwith output_lock(sys.argv[1]):\n    os._exit(9)"
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path)])
    assert killed.returncode == 9  # died holding the lock: no cleanup ran
    stale = json.loads((tmp_path / LOCK_FILE).read_text())
    assert stale["pid"] != os.getpid()
    caplog.set_level(logging.WARNING)
    with output_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"pid {stale['pid']}" in caplog.text and "no longer running" in caplog.text


def test_a_fresh_unwritten_lock_counts_as_held_and_an_old_one_as_stale(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("")
    with pytest.raises(OutputLocked, match="being locked"):
        with output_lock(tmp_path):
            pass
    os.utime(lock, (0, 0))  # 1970: left by a process that died while creating it
    with output_lock(tmp_path):
        pass
    assert not lock.exists()
