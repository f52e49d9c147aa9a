"""`python -m src.upload FOLDER...`: send the results a sweep or run kept on disk because the tracking
server could not be reached (`src/parent/offline.py`), then conclude and end their sweeps' runs.

    python -m src.upload multirun/2026-11-30/12-00-00-052611  # every pending job under these folders
    python -m src.upload outputs --uri http://mlflow.internal:5000   # to another address of the server
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src import report
from src.parent.offline import PARENT_PENDING, end_parent, pending, upload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", default=["outputs", "multirun"], help="searched recursively")
    ap.add_argument("--uri", default=None, help="tracking URI to use instead of the one each job had")
    a = ap.parse_args(argv)
    found = [p for folder in a.folders for p in pending(Path(folder))]
    failed = 0
    for path in found:
        try:
            print(f"uploaded {path.parent.parent}: run {upload(path, a.uri)}")
        except Exception as exc:  # still unreachable: keep it pending, try the next
            failed += 1
            print(f"still pending {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
    for path in sorted(p for folder in a.folders for p in Path(folder).rglob(PARENT_PENDING)):
        if failed:  # conclude a sweep's parent run only once all its jobs are in
            break
        try:
            print(f"ended sweep run {end_parent(path, report.make, a.uri)}")
        except Exception as exc:
            failed += 1
            print(f"still pending {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"{len(found) - failed} uploaded, {failed} still pending")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
