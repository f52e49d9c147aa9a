"""Print the runs of an MLflow experiment (or one sweep) as a table, read back through MLflow's client.

python scripts/runs_table.py [--uri URI] [--experiment NAME] [--parent RUN_ID]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src import tracking

ENERGY_COLUMNS = [
    ("model", "params.model"),
    ("prec", "params.precision"),
    ("batch", "params.batch_size"),
    ("seed", "params.measure.seed"),
    ("hz", "params.telemetry.sample_hz"),
    ("status", "tags.status"),
    ("img/s", "metrics.throughput_img_s"),
    ("W (counter)", "metrics.power_mean_w"),
    ("W (trace)", "metrics.power_trace_mean_w"),
    ("W peak", "metrics.power_peak_w"),
    ("W idle", "metrics.idle_power_w"),
    ("J/img", "metrics.energy_j_per_img"),
    ("net J/img", "metrics.energy_net_j_per_img"),
    ("img/J", "metrics.img_per_j"),
    ("img/s/W plate", "metrics.img_per_s_per_nameplate_w"),
    ("SM MHz", "metrics.sm_clock_mean_mhz"),
    ("max C", "metrics.temperature_max_c"),
    ("clock events", "tags.clock_event_reasons"),
    ("others", "tags.other_gpu_processes"),
    ("energy", "tags.energy_status"),
]

COLUMNS = [
    ("model", "params.model"),
    ("backend", "params.backend"),
    ("prec", "params.precision"),
    ("tf32", "params.tf32"),
    ("cl", "params.channels_last"),
    ("batch", "params.batch_size"),
    ("shape", "params.input_shape"),
    ("device", "tags.gpu_name"),
    ("status", "tags.status"),
    ("img/s", "metrics.throughput_img_s"),
    ("window img/s", "metrics.throughput_window_img_s"),
    ("p50 ms", "metrics.latency_p50_ms"),
    ("p99 ms", "metrics.latency_p99_ms"),
    ("cov %", "metrics.latency_cov_pct"),
    ("iters", "metrics.iterations"),
    ("build s", "metrics.build_time_s"),
    ("inductor cache", "tags.inductor_cache"),
    ("pkg cache", "tags.aoti_package_cache"),
    ("breaks", "tags.graph_breaks"),
    ("1st ms", "metrics.first_call_ms"),
    ("peak MiB", "metrics.peak_mem_reserved_mib"),
    ("reason", "tags.reason"),
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
    flt = "tags.kind = 'job'" + (f" and tags.mlflow.parentRunId = '{a.parent}'" if a.parent else "")
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
            row.append((text.splitlines() or [""])[0][:70])
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
