"""Exclusive file locks (flock): one measuring job per device, one creator of a fresh SQLite store.

Device locks are taken by the launching (Hydra) process around the whole child, so waiting for one never
counts against the job's timeout, and a lock is released when its holder ends, however it ends. A device's
key is its GPU UUID (the same card under any CUDA_VISIBLE_DEVICES numbering) or `cpu`. Device locks live in
$BENCH_LOCK_DIR, else the system's temporary folder: node-local, like the devices they guard.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def lock_dir() -> Path:
    root = os.environ.get("BENCH_LOCK_DIR") or tempfile.gettempdir()
    return Path(root) / "gpu-inference-bench-locks"


@contextmanager
def file_lock(path: Path, what: str) -> Iterator[float]:
    """Hold an exclusive lock on `path`; yields the seconds spent waiting for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        start = time.monotonic()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s: another process holds it", what)
            fcntl.flock(f, fcntl.LOCK_EX)
        waited = time.monotonic() - start
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield waited
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def device_lock(key: str) -> contextmanager:
    """Hold the device's lock (one measuring job on it at a time); yields the seconds waited."""
    return file_lock(lock_dir() / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".lock"), f"device {key}")


@contextmanager
def any_device_lock(keys: list[str], poll_s: float = 0.5) -> Iterator[tuple[int, float]]:
    """Hold the lock of whichever of these devices is free first; yields (its position, seconds waited).

    For `gpu=any`: jobs launched in parallel spread over the cards, never two on one card."""
    paths = [lock_dir() / (re.sub(r"[^A-Za-z0-9._-]", "_", k) + ".lock") for k in keys]
    lock_dir().mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    told = False
    while True:
        for position, path in enumerate(paths):
            f = path.open("a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
                yield position, time.monotonic() - start
                return
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
        if not told:
            log.info("waiting for a free device among %d: every one is measuring", len(keys))
            told = True
        time.sleep(poll_s)
