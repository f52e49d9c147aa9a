"""What a run and a sweep say beyond their figures, in the Hydra process: each job's speed-up over eager fp32
and its one-line description, the experiment's saved views for the MLflow UI, the sweep's best
configurations (tagged), and the UI links printed at the end."""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote

from src.parent.tracking import KIND_TAG, is_server
from src.shared.results import ENERGY, JOB, LATENCY, PARITY, STABLE

log = logging.getLogger(__name__)

SPEEDUP = "speedup_vs_eager_fp32"  # metric: img/s over eager fp32 (same model, shape, batch, GPU)
BEST = "best_available"  # tag on the sweep's fastest parity-passing ok run per model, shape, batch and GPU
REFERENCE = {"backend": "eager", "precision": "fp32", "tf32": "default", "channels_last": "false"}
SAME_CELL = ("model", "variant", "input_shape", "batch_size", "smoke")
NOTE = "mlflow.note.content"  # the run's description in the UI
VIEW_TAG = "mlflow.sharedViewState."


def reference_run(client: Any, exp_id: str, params: dict[str, str], gpu_name: str | None) -> Any:
    """The newest ok eager-fp32 job run of the same model, shape, batch and card, or None."""
    if not gpu_name or any(k not in params for k in SAME_CELL):
        return None
    clauses = [f"params.{k} = '{params[k]}'" for k in SAME_CELL]
    clauses += [f"params.{k} = '{v}'" for k, v in REFERENCE.items()]
    clauses += [f"tags.{JOB.status} = 'ok'", f"tags.{JOB.kind} = 'job'"]
    clauses.append(f"tags.{JOB.gpu_name} = '{gpu_name}'")
    found = client.search_runs(
        [exp_id], " and ".join(clauses), order_by=["attributes.start_time DESC"], max_results=1
    )
    return found[0] if found else None


def speedup(client: Any, exp_id: str, params: dict[str, str], tags: dict, metrics: dict) -> float | None:
    """img/s over the reference run's (None: not ok, or no reference run yet)."""
    img_s = metrics.get(LATENCY.throughput_img_s)
    if tags.get(JOB.status) != "ok" or not img_s:
        return None
    ref = reference_run(client, exp_id, params, tags.get(JOB.gpu_name))
    ref_img_s = ref.data.metrics.get(LATENCY.throughput_img_s) if ref else None
    return img_s / ref_img_s if ref_img_s else None


def describe(status: str, reason: str, metrics: dict, tags: dict, gain: float | None) -> str:
    """The run's one-line description: "<N> img/s (<S>x eager fp32), p99 <P> ms, parity pass"."""
    if status != "ok":
        first = (reason.splitlines() or [""])[0]
        return f"{status.upper()}: {first[:200]}" if first else status.upper()
    parts = [f"{fmt_img_s(metrics.get(LATENCY.throughput_img_s))} img/s"]
    if gain is not None:
        parts[0] += f" ({gain:.2f}x eager fp32)"
    if (p99 := metrics.get(LATENCY.latency_p99_ms)) is not None:
        parts.append(f"p99 {p99:.3g} ms" if p99 < 1000 else f"p99 {p99:.0f} ms")
    parts.append(f"parity {tags.get(PARITY.parity, 'not checked')}")
    if tags.get(STABLE.stable) == "false":
        parts.append(f"unstable ({tags.get(STABLE.unstable_reason, '')})")
    return ", ".join(parts)


def fmt_img_s(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def annotate(client: Any, run_id: str, exp_id: str, params: dict, tags: dict, metrics: dict) -> None:
    """Log the run's speed-up (where its reference exists) and write its description and colour, from
    what the run was logged with (one lookup: the reference run)."""
    gain = speedup(client, exp_id, params, tags, metrics)
    if gain is not None:
        client.log_metric(run_id, SPEEDUP, gain)
    note = describe(tags.get(JOB.status, "?"), tags.get(JOB.reason, ""), metrics, tags, gain)
    client.set_tag(run_id, NOTE, note)
    client.set_tag(run_id, COLOR_TAG, run_color(params))


def annotate_sweep(client: Any, runs: list) -> int:
    """Speed-ups the sweep's jobs could not log when they ended (their reference ran after them); how
    many runs were annotated."""
    missing = [r for r in runs if r.data.tags.get(JOB.status) == "ok" and SPEEDUP not in r.data.metrics]
    for r in missing:
        data = r.data
        annotate(client, r.info.run_id, r.info.experiment_id, data.params, data.tags, data.metrics)
    return len(missing)


# --- the MLflow UI: saved views ------------------------------------------------------------------------

COLUMNS = [  # the saved views' columns, in this order, after the run's name
    ("params", "model"),
    ("params", "batch_size"),
    ("params", "backend"),
    ("params", "precision"),
    ("params", "channels_last"),
    ("tags", JOB.status),
    ("tags", STABLE.stable),
    ("metrics", LATENCY.throughput_img_s),
    ("metrics", LATENCY.latency_p99_ms),
    ("metrics", SPEEDUP),
    ("metrics", ENERGY.img_per_j),
    ("attributes", "Description"),
    ("params", "backend.mode"),
    ("metrics", LATENCY.throughput_spread_pct),
]
RUN_NAME_COLUMN = ("attributes", "Run Name")
CHARTS = [
    (LATENCY.throughput_img_s, "images/s"),
    (SPEEDUP, "speed-up over eager fp32"),
    (ENERGY.img_per_j, "images per joule"),
]
SCATTER_TITLE = "p99 latency (ms) against images/s"
SECTION = "bench-section"  # the one chart section of the views
COLOR_TAG = "mlflow.runColor"  # a run's colour in the UI's charts and run list


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's canonical column key


def _charts(metric_keys: set[str]) -> list[dict[str, Any]]:
    """The four named charts, then every other metric as a deleted chart: MLflow's UI adds a chart for
    each metric that no chart (deleted or not) names, which would bury the four under dozens."""
    shown = {"deleted": False, "isGenerated": False, "metricSectionId": SECTION}
    charts: list[dict[str, Any]] = [
        {**shown, "type": "BAR", "uuid": f"bench-{key}", "metricKey": key, "displayName": title}
        for key, title in CHARTS
    ]
    charts.append(
        {
            **shown,
            "type": "SCATTER",
            "uuid": "bench-p99-vs-throughput",
            "displayName": SCATTER_TITLE,
            "xaxis": {"key": LATENCY.throughput_img_s, "type": "METRIC"},
            "yaxis": {"key": LATENCY.latency_p99_ms, "type": "METRIC"},
        }
    )
    named = {key for key, _ in CHARTS}
    hidden = {"deleted": True, "isGenerated": True, "metricSectionId": SECTION, "type": "BAR"}
    charts += [
        {**hidden, "uuid": f"bench-hidden-{key}", "metricKey": key} for key in sorted(metric_keys - named)
    ]
    return charts


def view_state(search_filter: str, metric_keys: set[str] = frozenset()) -> dict[str, Any]:
    """A saved view: the key columns first, the fastest run first, every run charted, and the charts of
    throughput, speed-up, energy and p99 against throughput alone in the chart tab (`metric_keys`: the
    metrics the view's runs have)."""
    columns = [_column(k, n) for k, n in COLUMNS]
    return {
        "searchFilter": search_filter,
        "orderByKey": _column("metrics", LATENCY.throughput_img_s),
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        "columnOrder": [_column(*RUN_NAME_COLUMN), *columns],
        "columnWidths": {_column(*RUN_NAME_COLUMN): 330, _column("attributes", "Description"): 420},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": _charts(set(metric_keys)),
        "compareRunSections": [
            {"uuid": SECTION, "name": "Benchmark comparison", "display": True, "isReordered": True}
        ],
        "isAccordionReordered": True,
        "viewMaximized": False,
        "runListHidden": False,
        "hideEmptyCharts": True,
    }


def view_key(model: str | None = None) -> str:
    return "bench-compare" + (f"-{model}" if model else "")


def view_name(model: str | None = None) -> str:
    return "Benchmark comparison" + (f": {model}" if model else "")


def set_up_views(client: Any, exp_id: str, models: list[str]) -> list[str]:
    """The experiment's kind and a saved view of every job, plus one per model (its charts never put
    models on one axis), each listed in the UI's Views menu. Written each sweep: a view edited in the
    UI under another key is left alone."""
    client.set_experiment_tag(exp_id, KIND_TAG, "custom_model_development")
    jobs = f"tags.{JOB.kind} = 'job'"
    found = client.search_runs([exp_id], jobs, max_results=50000)
    metric_keys = {k for r in found for k in r.data.metrics}
    now = int(time.time() * 1000)
    keys = []
    for model in [None, *(m for m in models if m)]:
        state = view_state(jobs + (f" and params.model = '{model}'" if model else ""), metric_keys)
        # the envelope MLflow's Views menu lists; the share link opens it as well
        saved = {"name": view_name(model), "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        client.set_experiment_tag(exp_id, VIEW_TAG + view_key(model), json.dumps(saved))
        keys.append(view_key(model))
    return keys


def saved_view(tag_value: str) -> dict[str, Any]:
    """A saved view's state, from the experiment tag's envelope (`set_up_views`)."""
    return json.loads(json.loads(tag_value)["state"])


def run_color(params: dict[str, str]) -> str:
    """A colour per configuration (backend, precision, layout), the same in every model's view: the hue
    names the backend, the shade the precision, channels-last a lighter tone."""
    import colorsys
    import zlib

    hue = zlib.crc32(params.get("backend", "").encode()) % 360 / 360
    shade = {"fp32": 0.38, "tf32": 0.46, "fp16": 0.54, "bf16": 0.62}.get(params.get("precision", ""), 0.5)
    shade += 0.12 if params.get("channels_last") == "true" else 0.0
    r, g, b = colorsys.hls_to_rgb(hue, min(shade, 0.8), 0.75)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def ui_base(tracking_uri: str) -> str:
    """Where the UI of this store is: the server itself, else the address `mlflow ui` serves by default."""
    if is_server(tracking_uri):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def view_link(tracking_uri: str, exp_id: str, key: str) -> str:
    return f"{ui_base(tracking_uri)}/#/experiments/{exp_id}/runs?viewStateShareKey={quote(key)}"


def run_link(tracking_uri: str, exp_id: str, run_id: str) -> str:
    return f"{ui_base(tracking_uri)}/#/experiments/{exp_id}/runs/{run_id}"


def ui_hint(tracking_uri: str) -> str:
    if is_server(tracking_uri):
        return ""
    return f" (start the UI with `mlflow ui --backend-store-uri {tracking_uri}`)"


def tag_best(client: Any, runs: list, best_ids: set[str]) -> None:
    """`best_available=true` on the given runs of the sweep, `false` on its other ok runs that had it."""
    for r in runs:
        want = r.info.run_id in best_ids
        if want or r.data.tags.get(BEST) == "true":
            client.set_tag(r.info.run_id, BEST, str(want).lower())
