"""The file protocol between the Hydra process and the measuring child, in one job folder.

The parent writes `spec.json` (the `JobSpec`) and starts `python -m src.child.worker JOB_DIR PID`. The
child appends JSON lines to `progress.jsonl` as it goes (phase entered, params, tags, metrics, and finally
a status line), flushing each, so whatever was measured survives a hang, a crash or a kill; its output goes
to `child.log`, the files it built to `artifacts/`. The parent folds the lines into one `JobResult`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from src.shared.errors import Status
from src.shared.results import JobResult

SPEC = "spec.json"
PROGRESS = "progress.jsonl"
CHILD_LOG = "child.log"
ARTIFACTS = "artifacts"
START_MODES = ("template", "fresh")  # how a job's child starts: forked by the template, or a new interpreter
LAUNCHED_AT = "BENCH_LAUNCHED_AT"  # in the child's environment: when the launcher asked for it (Unix time)
PHASE_TIME = "time_in_{}_s"  # the metric of a phase's wall time


def phase_times(metrics: dict[str, float]) -> dict[str, float]:
    """The phases' wall times among a run's metrics, by phase name."""
    head, tail = PHASE_TIME.split("{}")
    found = (k for k in metrics if k.startswith(head) and k.endswith(tail))
    return {k.removeprefix(head).removesuffix(tail): metrics[k] for k in found}


def since_launch() -> float | None:
    """Seconds from the launcher asking for this child to now (None when not launched by it)."""
    try:
        return max(0.0, time.time() - float(os.environ[LAUNCHED_AT]))
    except (KeyError, ValueError):
        return None


class ProgressWriter:
    """Child side: append-only, flushed JSON lines. A context manager: the file is closed on the way out."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._phase: tuple[str, float] | None = None  # the phase entered last, and when

    def _end_phase(self) -> None:
        """The phase entered last, ended: its wall time as the metric `time_in_<phase>_s`."""
        if self._phase:
            name, since = self._phase
            self._write({"metrics": {PHASE_TIME.format(name): time.perf_counter() - since}})
            self._phase = None

    def __enter__(self) -> ProgressWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def phase(self, name: str) -> None:
        self._end_phase()
        self._write({"phase": name})
        self._phase = (name, time.perf_counter())

    def params(self, values: dict[str, Any]) -> None:
        self._write({"params": {k: str(v) for k, v in values.items()}})

    def tags(self, values: dict[str, Any]) -> None:
        self._write({"tags": {k: str(v) for k, v in values.items()}})

    def metrics(self, values: dict[str, float]) -> None:
        self._write({"metrics": {k: float(v) for k, v in values.items()}})

    def result(self, result: Any) -> None:
        """A typed result (`src/shared/results.py`): its metrics, then its tags."""
        self.metrics(result.metrics())
        if hasattr(result, "tags"):
            self.tags(result.tags())

    def status(self, status: Status, reason: str = "") -> None:
        self._end_phase()
        self._write({"status": status.value, "reason": reason})


def read_progress(path: Path) -> tuple[JobResult, bool]:
    """Parent side: fold the child's records into a result; the flag says whether a status line came."""
    result = JobResult(status=Status.FAILED)
    reported = False
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        result.phase = record.get("phase", result.phase)
        result.params.update(record.get("params", {}))
        result.tags.update(record.get("tags", {}))
        result.metrics.update(record.get("metrics", {}))
        if "status" in record:
            result.status, result.reason, reported = Status(record["status"]), record.get("reason", ""), True
    return result, reported
