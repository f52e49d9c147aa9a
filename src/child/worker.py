"""Entry point of the measuring child: `python -m src.child.worker JOB_DIR [LAUNCHER_PID]` (started by
`src/parent/launch.py`, which passes its own pid: the child ends if that process dies). Runs `src.child`."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from src.shared.errors import Status, Unavailable, Unsupported, is_out_of_memory
from src.shared.progress import PROGRESS, SPEC, ProgressWriter, since_launch
from src.shared.results import JOB
from src.shared.spec import JobSpec


def end_with_launcher(launcher_pid: int, every_s: float = 0.5) -> None:
    """If the launching process dies without ending this one (joblib SIGKILLs a stopped parallel sweep's
    workers), end this process group, the child and what it started, instead of measuring on, orphaned."""

    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(every_s)
        leader = os.getpgid(0) == os.getpid()  # started in a session of its own, as src.parent.launch does
        os.killpg(0, signal.SIGKILL) if leader else os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="end-with-launcher", daemon=True).start()


def main(argv: list[str]) -> int:
    started, start_s = time.perf_counter(), since_launch()
    faulthandler.enable()  # a crash leaves a Python traceback in the log (and so in the run's reason)
    if len(argv) > 2:
        end_with_launcher(int(argv[2]))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    job_dir = Path(argv[1])
    spec = JobSpec.from_json((job_dir / SPEC).read_text(encoding="utf-8"))
    with ProgressWriter(job_dir / PROGRESS) as progress:
        if start_s is not None:
            progress.metrics({JOB.child_start_s: start_s})
        try:
            from src.child.job import execute  # inside the try: even an import failure is reported

            execute(spec, job_dir, progress, started)
        except Unsupported as exc:
            progress.status(Status.UNSUPPORTED, str(exc))
        except Unavailable as exc:
            progress.status(Status.UNAVAILABLE, str(exc))
        except Exception as exc:
            traceback.print_exc()
            limited = spec.measure.memory_limit_gib is not None
            status = Status.OOM if is_out_of_memory(exc, limited) else Status.FAILED
            progress.status(status, f"{type(exc).__name__}: {exc}")
        else:
            progress.phase("done")
            progress.status(Status.OK)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
