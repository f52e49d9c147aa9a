"""Independent pieces of single-threaded Python work (Hydra's composition of a sweep's jobs, the report's
plots) run in forked copies of this process, up to `MAX_FORKS` at once and one less than the cores this
process may use (at least one), while this process goes on with something else. A fork inherits what the
work needs; only each piece's result comes back (pickled). A piece whose result does not come back (it
raised, it does not pickle, no process could be forked) is `MISSING`, for the caller to do at home, where
its exception, if any, is raised as it would be without forks. Nothing here is used by a measuring child."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

MAX_FORKS = 8
MISSING: Any = object()
_pieces: Sequence[Callable[[], Any]] = ()  # what the forks inherit


def forks(pieces: int) -> int:
    """How many processes share `pieces` pieces of work on this host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_FORKS, cores - 1, pieces))


def run_forked(
    pieces: Sequence[Callable[[], Any]], meanwhile: Callable[[], object] | None = None
) -> list[Any]:
    """Each piece's result, in order (`MISSING` where it did not come back); `meanwhile()` runs here as
    the forks work, once, whatever happens to them. With nothing to do meanwhile and one fork to spare,
    nothing is forked (all `MISSING`): one fork would only add its start and the pickling."""
    global _pieces
    results = [MISSING] * len(pieces)
    if meanwhile is None:
        if forks(len(pieces)) < 2:
            return results
        meanwhile = _nothing
    started = False
    _pieces = pieces
    try:
        with ProcessPoolExecutor(forks(len(pieces)), get_context("fork"), initializer=_own_signals) as pool:
            futures = [pool.submit(_run, i) for i in range(len(pieces))]
            started = True
            meanwhile()
            for i, future in enumerate(futures):
                try:
                    results[i] = future.result()
                except Exception:  # raised there, or its result does not pickle: done at home
                    continue
    except OSError:  # no process could be forked
        pass
    finally:
        _pieces = ()
    if not started:
        meanwhile()
    return results


def _nothing() -> None:
    pass


def _own_signals() -> None:
    """A fork leaves Ctrl-C to this process (which waits for the pieces under way, then stops) and ends
    at once on SIGTERM (its pieces are then done at home)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(i: int) -> Any:
    return _pieces[i]()
