"""Print the runs of an MLflow experiment (or one sweep) as a table, read back through MLflow's client.

python scripts/runs_table.py [--uri URI] [--experiment NAME] [--parent RUN_ID]
"""

from __future__ import annotations

import argparse

from src.parent import tracking
from src.shared.results import ENERGY, JOB, LATENCY, NAMEPLATE, STABLE, TRACE


def metric(name: str) -> str:
    return f"metrics.{name}"


def tag(name: str) -> str:
    return f"tags.{name}"


ENERGY_COLUMNS = [
    ("model", "params.model"),
    ("prec", "params.precision"),
    ("batch", "params.batch_size"),
    ("seed", "params.measure.seed"),
    ("hz", "params.telemetry.sample_hz"),
    ("status", tag(JOB.status)),
    ("img/s", metric(LATENCY.throughput_img_s)),
    ("W (counter)", metric(ENERGY.power_mean_w)),
    ("W (trace)", metric(TRACE.power_trace_mean_w)),
    ("W peak", metric(TRACE.power_peak_w)),
    ("W idle", metric(ENERGY.idle_power_w)),
    ("J/img", metric(ENERGY.energy_j_per_img)),
    ("net J/img", metric(ENERGY.energy_net_j_per_img)),
    ("img/J", metric(ENERGY.img_per_j)),
    ("img/s/W plate", metric(NAMEPLATE.img_per_s_per_nameplate_w)),
    ("SM MHz", metric(TRACE.sm_clock_mean_mhz)),
    ("max C", metric(TRACE.temperature_max_c)),
    ("clock events", tag(TRACE.clock_event_reasons)),
    ("others", tag(TRACE.other_gpu_processes)),
    ("energy", tag(ENERGY.energy_status)),
]

COLUMNS = [
    ("model", "params.model"),
    ("backend", "params.backend"),
    ("prec", "params.precision"),
    ("tf32", "params.tf32"),
    ("cl", "params.channels_last"),
    ("batch", "params.batch_size"),
    ("shape", "params.input_shape"),
    ("device", tag(JOB.gpu_name)),
    ("smoke", "params.smoke"),
    ("status", tag(JOB.status)),
    ("stable", tag(STABLE.stable)),
    ("img/s", metric(LATENCY.throughput_img_s)),
    ("spread %", metric(LATENCY.throughput_spread_pct)),
    ("window img/s", metric(LATENCY.throughput_window_img_s)),
    ("p50 ms", metric(LATENCY.latency_p50_ms)),
    ("p99 ms", metric(LATENCY.latency_p99_ms)),
    ("cov %", metric(LATENCY.latency_cov_pct)),
    ("iters", metric(LATENCY.iterations)),
    ("build s", metric(JOB.build_time_s)),
    ("inductor cache", "tags.inductor_cache"),  # backend tags: named by the backend (docs/backends.md)
    ("pkg cache", "tags.aoti_package_cache"),
    ("breaks", "tags.graph_breaks"),
    ("1st ms", metric(JOB.first_call_ms)),
    ("peak MiB", metric(JOB.peak_mem_reserved_mib)),
    ("reason", tag(JOB.reason)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default=None, help="tracking URI (default: as the benchmark resolves it)")
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    ap.add_argument("--parent", default=None, help="only the children of this run")
    ap.add_argument("--energy", action="store_true", help="power and energy columns instead of latency")
    a = ap.parse_args()
    import mlflow

    uri = tracking.tracking_uri(a.uri)
    mlflow.set_tracking_uri(uri)
    flt = f"tags.{JOB.kind} = 'job'" + (f" and tags.mlflow.parentRunId = '{a.parent}'" if a.parent else "")
    df = mlflow.search_runs(experiment_names=[a.experiment], filter_string=flt, order_by=["start_time ASC"])
    if df.empty:
        print(f"no runs in experiment '{a.experiment}' at {uri}")
        return
    columns = ENERGY_COLUMNS if a.energy else COLUMNS
    rows = [[title for title, _ in columns]]
    for _, run in df.iterrows():
        row = []
        for _, key in columns:
            value = run.get(key)
            if isinstance(value, float):
                value = "" if value != value else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
            text = "" if value is None else str(value)
            if key == "params.smoke":
                text = "SMOKE" if text == "true" else ""
            row.append((text.splitlines() or [""])[0][:70])
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
