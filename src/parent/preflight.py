"""What a command needs from its surroundings, checked before anything runs (the Hydra process): a
tracking store that answers, is an MLflow database and can be written, and output folders that can be
created. Each problem is one sentence naming what to change; `src/parent/sweep.py` refuses with them."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from src.parent import tracking

SERVER_TIMEOUT_S = 5.0
QUICK_CHECK_MAX_BYTES = 256 * 2**20  # larger stores: the schema is read, not every page


def problems(uri_setting: str | None, output_dirs: list[Path]) -> list[str]:
    """Everything wrong with the store and the output folders, as messages (empty: all is well)."""
    explicit = bool(uri_setting or os.environ.get("MLFLOW_TRACKING_URI"))
    found = store_problems(tracking.tracking_uri(uri_setting), explicit)
    for folder in output_dirs:
        found += folder_problems(folder, "the output folder (hydra.run.dir / hydra.sweep.dir)")
    return found


def store_problems(uri: str, explicit: bool) -> list[str]:
    setting = "tracking.uri (or $MLFLOW_TRACKING_URI)"
    if tracking.is_server(uri):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S)
        except urllib.error.HTTPError:  # it answered (a server without /health, or behind a proxy)
            return []
        except Exception as exc:
            return [
                f"the tracking server {uri} did not answer within {SERVER_TIMEOUT_S:g} s "
                f"({type(exc).__name__}: {exc}); start it, or set {setting} to one that answers"
            ]
        return []
    db = tracking.sqlite_path(uri)
    if db is None:  # another back end (PostgreSQL, Databricks, ...): MLflow's own errors apply
        return []
    if explicit and not db.parent.is_dir():
        return [
            f"the folder of the MLflow store {uri} does not exist ({db.parent}); create it, or set "
            f"{setting} to an existing folder"
        ]
    if db.exists():
        broken = _sqlite_problem(db)
        if broken:
            return [f"the MLflow store {db} cannot be used: {broken}; restore it, or set {setting} elsewhere"]
    return folder_problems(db.parent, f"the MLflow store's folder (set by {setting})")


def _sqlite_problem(db: Path) -> str | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
            if db.stat().st_size <= QUICK_CHECK_MAX_BYTES:
                (verdict,) = con.execute("pragma quick_check").fetchone()
                if verdict != "ok":
                    return f"it is damaged ({verdict})"
    except sqlite3.DatabaseError as exc:
        return f"it is not a readable SQLite database ({exc})"
    if tables and "runs" not in tables:
        return "it is an SQLite database but not an MLflow store (no 'runs' table)"
    try:
        with db.open("r+b"):
            pass
    except OSError as exc:
        return f"it cannot be written ({exc.strerror})"
    return None


def folder_problems(folder: Path, what: str) -> list[str]:
    """Can `folder` be created (or written, if it exists)? Probed with a file made and removed in its
    nearest existing ancestor, so nothing is left behind."""
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [f"{what} {folder} cannot be created: {existing} is not a folder"]
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".bench-write-probe-"):
            pass
    except OSError as exc:
        return [f"{what} {folder} cannot be written ({exc.strerror} in {existing}); choose another"]
    return []
