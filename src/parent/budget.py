"""The search preset's budget, in the Hydra process.

`search.budget_s` bounds the time of a whole search (the `job_wall_s` of its jobs). Each study row (a model
at a batch size) may use an equal share of what the rows before it left:

    share = (budget_s - time used by the other rows) / (1 + rows of the sweep not started yet)

so a row that finished early leaves its rest to the rows after it. A job whose row has used its share is not
tried (`skipped`, with the reason); a job that is tried gets the rest of the share as its timeout (at most
its own `measure.timeout_s`), and a build still running when the share is spent is stopped and recorded
`skipped` with that reason. A row's eager fp32 run, the reference of every speed-up, is always measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.parent import answers, tracking
from src.shared.results import JOB
from src.shared.spec import JobSpec


def row_of(model: str, batch_size: int | str) -> str:
    """A study row's name: "densenet bs256"."""
    return f"{model} bs{batch_size}"


def is_reference(spec: JobSpec) -> bool:
    """The eager fp32 run (PyTorch's default TF32 switches, contiguous layout) of its row."""
    params = spec.params()
    return all(params[k] == v for k, v in answers.REFERENCE.items())


@dataclass(frozen=True)
class Allowance:
    """A search job's time: `left_s` the rest of its row's share (None: no budget applies); `refused`:
    why it is not tried."""

    left_s: float | None = None
    refused: str | None = None


def allowance(
    client: Any, budget_s: float | None, spec: JobSpec, parent: str | None, rows: list[str] | None
) -> Allowance:
    """`rows`: the sweep's rows, one per job (the sweep's file; None where its grid is not known: the
    total budget alone then bounds each job)."""
    if not budget_s or not parent or is_reference(spec):
        return Allowance()
    try:
        runs = tracking.children(client, parent)
    except Exception:  # the tracking server is away: measure (the budget is a convenience)
        return Allowance()
    used: dict[str, float] = {}
    for r in runs:
        row = row_of(r.data.params.get("model", "?"), r.data.params.get("batch_size", "?"))
        used[row] = used.get(row, 0.0) + r.data.metrics.get(JOB.job_wall_s, 0.0)
    mine = row_of(spec.model.name, spec.batch_size)
    others = sum(v for k, v in used.items() if k != mine)
    waiting = len(set(rows or ()) - set(used) - {mine})
    share = (budget_s - others) / (1 + waiting)
    left = share - used.get(mine, 0.0)
    if left > 0:
        return Allowance(left_s=left)
    return Allowance(
        refused=(
            f"row {mine} used its share of the search budget ({used.get(mine, 0.0):.0f} of "
            f"{max(share, 0):.0f} s; search.budget_s={budget_s:g} for the whole search, "
            f"{others:.0f} s used by other rows, "
            f"{waiting} rows still to come); raise it to try this configuration"
        )
    )


def stopped(wall_s: float, phase: str, left_s: float, budget_s: float) -> str:
    """The reason of a job stopped because its row's share ran out while it ran."""
    return (
        f"stopped after {wall_s:.0f} s (phase '{phase or 'start'}'): its row's share of the search budget "
        f"({left_s:.0f} s left when it started; search.budget_s={budget_s:g}) ran out; raise it to let "
        "it finish"
    )
