"""A sweep's conclusion, written to its parent run in the Hydra process as the sweep ends, and again by
`src.upload` once results kept on disk are in: the count per status, the speed-ups whose reference ran
later, the report (logged to the run), the best runs tagged, the saved views, and the run's description
with its headline answer."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.parent import answers, tracking
from src.shared.results import JOB, LATENCY, PARITY

log = logging.getLogger(__name__)


@dataclass
class Conclusion:
    runs: list  # the sweep's job runs
    counts: Counter  # per status
    linked: dict[str, dict[str, float]]  # a skipped job's figures: the run it links to -> its metrics
    models: list[str]
    view_keys: list[str]  # the all-models view first
    name: str  # the sweep run's
    exp_id: str
    report: Path | None = None  # the report's folder, where one was written
    headline: list[str] = field(default_factory=list)


# `src.report.make` (the report command's own function, handed down by the entry points that conclude):
# (tracking uri, experiment, parent run, filter, folder, log to the run) -> (files, best) or None
MakeReport = Callable[[str, str, str, str | None, Path, bool], Any]


def conclude(client: Any, parent: str, report_out: Path | None, make_report: MakeReport) -> Conclusion:
    """Bring the sweep's run up to date with every job run under it (`report_out`: None, no report)."""
    runs = tracking.children(client, parent)
    counts = Counter(r.data.tags.get(JOB.status, "unknown") for r in runs)
    tracking.log_all(
        client,
        parent,
        metrics={"jobs_done": len(runs)},
        tags={f"jobs_{k}": str(v) for k, v in counts.items()},
    )
    if answers.annotate_sweep(client, runs):  # speed-ups whose reference ran later: read them back
        runs = tracking.children(client, parent)
    ids = {r.data.tags[JOB.measured_in] for r in runs if JOB.measured_in in r.data.tags}
    linked = {i: client.get_run(i).data.metrics for i in ids}
    sweep = client.get_run(parent)
    exp_id = sweep.info.experiment_id
    experiment = client.get_experiment(exp_id).name
    report = _report(client, parent, experiment, runs, report_out, make_report)
    models = sorted({r.data.params.get("model", "") for r in runs} - {""})
    keys = answers.set_up_views(client, exp_id, models)
    name = sweep.info.run_name
    done = Conclusion(runs, counts, linked, models, keys, name, exp_id, report, headline(runs, linked))
    client.set_tag(parent, answers.NOTE, description(done))
    return done


def _report(
    client: Any, parent: str, experiment: str, runs: list, out: Path | None, make_report: MakeReport
) -> Path | None:
    """The sweep's report, logged to its parent run, and its best runs tagged. A report that cannot be
    made never fails the sweep."""
    if out is None or not runs:
        return None
    try:
        made = make_report(client.tracking_uri, experiment, parent, None, out, True)
    except Exception as exc:
        log.warning("could not write the sweep's report (%s: %s)", type(exc).__name__, exc)
        return None
    if made is None:
        return None
    _, best = made
    best_ids = set(best["run_id"]) if not best.empty else set()
    # a best figure measured in an earlier sweep: tag this sweep's link to it
    links = {r.data.tags.get(JOB.measured_in): r.info.run_id for r in runs}
    answers.tag_best(client, runs, {links.get(i, i) for i in best_ids})
    return out


def headline(runs: list, linked: dict[str, dict[str, float]]) -> list[str]:
    """Per model and batch size: the sweep's fastest ok run whose output did not fail the parity check."""
    best: dict[tuple[str, int], tuple[float, Any, dict]] = {}
    for r in runs:
        tags, params = r.data.tags, r.data.params
        metrics = linked.get(tags.get(JOB.measured_in, ""), r.data.metrics)
        img_s = metrics.get(LATENCY.throughput_img_s)
        if tags.get(JOB.status) not in ("ok", "skipped") or not img_s or tags.get(PARITY.parity) == "fail":
            continue
        cell = (params.get("model", "?"), int(params.get("batch_size", 0) or 0))
        if cell not in best or img_s > best[cell][0]:
            best[cell] = (img_s, r, metrics)
    lines = []
    for (model, batch), (img_s, r, metrics) in sorted(best.items()):
        p = r.data.params
        layout = " CL" if p.get("channels_last") == "true" else ""
        what = f"{p.get('backend')} {p.get('precision')}{layout}"
        gain = metrics.get(answers.SPEEDUP)
        times = f" ({gain:.2f}x eager fp32)" if gain else ""
        lines.append(f"{model} bs{batch}: {what}, {answers.fmt_img_s(img_s)} img/s{times}")
    return lines


def description(done: Conclusion) -> str:
    """The sweep run's description (Markdown, shown in the UI): its jobs, the fastest configuration per
    model and batch size, and where its report is."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(done.counts.items()))
    text = [f"**{len(done.runs)} jobs**: {counts}.", ""]
    if done.headline:
        text += ["Fastest per model and batch size (parity not failed):", ""]
        text += [f"- {line}" for line in done.headline]
    else:
        text.append("No job measured a figure.")
    if done.report is not None:
        text += ["", "Report: the run's artifacts, `report/report.html` (tables and plots)."]
    return "\n".join(text)
