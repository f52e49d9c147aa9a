"""The search preset's budget, in the Hydra process: once a model's jobs in a sweep have used
`search.budget_s` seconds, its other jobs are not tried."""

from __future__ import annotations

from typing import Any

from src.parent import tracking
from src.shared.results import JOB
from src.shared.spec import JobSpec


def over_budget(client: Any, budget_s: float | None, spec: JobSpec, parent: str | None) -> str | None:
    """Why a search's job is not run: its model's jobs in this sweep used `budget_s` already."""
    if not budget_s or not parent:
        return None
    try:
        runs = tracking.children(client, parent)
    except Exception:  # the tracking server is away: measure (the budget is a convenience)
        return None
    mine = [r for r in runs if r.data.params.get("model") == spec.model.name]
    spent = sum(r.data.metrics.get(JOB.job_wall_s, 0.0) for r in mine)
    if spent < budget_s:
        return None
    return (
        f"the search budget of model {spec.model.name} is spent ({spent:.0f} s used by {len(mine)} jobs, "
        f"search.budget_s={budget_s:g}); raise it to try this configuration"
    )
