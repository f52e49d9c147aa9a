"""Entry point of the measuring child: `python -m src.worker JOB_DIR` (started by `src.isolation`)."""

from __future__ import annotations

import faulthandler
import logging
import sys
import traceback
from pathlib import Path

from src.errors import Status, Unavailable, Unsupported, is_out_of_memory
from src.isolation import PROGRESS, ProgressWriter
from src.spec import JobSpec


def main(argv: list[str]) -> int:
    faulthandler.enable()  # a crash leaves a Python traceback in the log (and so in the run's reason)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    job_dir = Path(argv[1])
    spec = JobSpec.from_json((job_dir / "spec.json").read_text(encoding="utf-8"))
    progress = ProgressWriter(job_dir / PROGRESS)
    try:
        from src.job import execute  # inside the try: even an import failure is reported

        execute(spec, job_dir, progress)
    except Unsupported as exc:
        progress.status(Status.UNSUPPORTED, str(exc))
    except Unavailable as exc:
        progress.status(Status.UNAVAILABLE, str(exc))
    except Exception as exc:
        traceback.print_exc()
        status = Status.OOM if is_out_of_memory(exc) else Status.FAILED
        progress.status(status, f"{type(exc).__name__}: {exc}")
    else:
        progress.phase("done")
        progress.status(Status.OK)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
