"""The search's order that learns, in the Hydra process: as a study row starts, its candidates are put in
the order of what won at its neighbours (the rows already searched: the same model at the nearest batch
sizes first, then other models at the same batch index), the rest kept as listed (cheap ones first). The
row's first job, the eager fp32 reference that every speed-up and the budget need, keeps its place.
"""

from __future__ import annotations

from dataclasses import dataclass

CANDIDATE = "+candidate"  # the sweep axis the search reorders (conf/candidate/)


@dataclass(frozen=True)
class Row:
    """One study row of the grid: the overrides its jobs share, and where its jobs start in the grid."""

    key: tuple[str, ...]
    start: int
    jobs: list[list[str]]

    def value(self, name: str) -> str | None:
        return value_of(self.key, name)


def value_of(overrides: list[str] | tuple[str, ...], name: str) -> str | None:
    """The value an override list gives `name` (`model=densenet` -> "densenet"), or None."""
    return next((v for k, _, v in (o.partition("=") for o in overrides) if k == name), None)


def candidate(job: list[str]) -> str | None:
    return value_of(job, CANDIDATE)


def rows(jobs: list[list[str]]) -> list[Row]:
    """The grid's jobs grouped into rows: consecutive jobs that differ only in their candidate."""
    found: list[Row] = []
    for i, job in enumerate(jobs):
        key = tuple(o for o in job if o.partition("=")[0] != CANDIDATE)
        if found and found[-1].key == key:
            found[-1].jobs.append(job)
        else:
            found.append(Row(key, i, [job]))
    return found


def neighbours(row: Row, done: list[Row]) -> list[Row]:
    """The rows already searched, nearest first: the same model by batch index distance, then the rows of
    other models at the same batch index."""

    def index(r: Row) -> int:
        value = r.value("batch_index")
        return int(value) if value is not None and value.isdigit() else 0

    same = [r for r in done if r.value("model") == row.value("model")]
    same.sort(key=lambda r: abs(index(r) - index(row)))
    others = [r for r in done if r.value("model") != row.value("model") and index(r) == index(row)]
    return same + others


def ordered(row: Row, winners: list[str]) -> list[list[str]]:
    """The row's jobs: its first kept first, then the candidates in `winners` (nearest neighbour's first),
    then the rest as listed."""
    first, rest = row.jobs[:1], row.jobs[1:]
    rank = {name: i for i, name in enumerate(dict.fromkeys(winners))}
    return first + sorted(rest, key=lambda job: rank.get(candidate(job) or "", len(rank)))
