"""The study's tables and plots, read from MLflow (never from output folders).

    python -m src.report                         # the default experiment's runs -> reports/
    python -m src.report --parent RUN_ID         # one sweep; the report is also logged to that run
    python -m src.report --sweep latest          # the experiment's newest sweep, same
    python -m src.report --filter "params.model = 'yolo'" --out docs/results/NAME

Writes `report.md` (the study's table per GPU, the headline table per model across GPUs, the wide table of
every backend and precision), the same tables as CSV, and PNG plots. Where several runs measured the same
cell, the newest counts. A cell that has no figure says why: OOM, UNSUPPORTED, UNAVAILABLE, FAILED, TIMEOUT.
A figure whose output failed the parity check against eager fp32 carries a dagger.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from src import PROJECT_ROOT
from src.models import MODELS
from src.parent import tracking
from src.shared.errors import ConfigError
from src.shared.results import JOB, LATENCY, LINK, NAMEPLATE, PARITY
from src.shared.spec import Precision

FAIL_MARK = " †"


def study_columns(conf: Path = PROJECT_ROOT / "conf") -> dict[str, tuple[str, str]]:
    """The study's columns, title -> (backend, precision), in the order of the study preset's `+study`
    axis; each from its file in conf/study/ (its `study_column` title and its backend/precision)."""
    from omegaconf import OmegaConf

    preset = OmegaConf.load(conf / "experiment" / "study.yaml")
    columns = {}
    for name in str(preset.hydra.sweeper.params["+study"]).split(","):
        study = OmegaConf.load(conf / "study" / f"{name.strip()}.yaml")
        chosen = {k.split("/")[-1]: v for entry in study.defaults for k, v in entry.items()}
        columns[str(study.study_column)] = (chosen["backend"], chosen["precision"])
    return columns


STUDY_COLUMNS = study_columns()  # the first is the reference of "Improvement", the last its subject


def task_title(model: str, task_tag: Any) -> str:
    """The model's task as the study's tables name it: from the model registry, else the run's tag."""
    try:
        cls = MODELS.get(model)
        return cls.task_title or cls.task.capitalize()
    except ConfigError:  # a plugin model this process has not loaded
        return str(task_tag).capitalize() if isinstance(task_tag, str) else model


def load_runs(uri: str | None, experiment: str, parent: str | None, extra: str | None) -> Any:
    """The job runs as a DataFrame (mlflow.search_runs), newest first. For one sweep, its skipped jobs
    (runs of kind `link`, a resumed sweep's) count with the runs that hold their figures."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking.tracking_uri(uri))
    under = f" and tags.mlflow.parentRunId = '{parent}'" if parent else ""
    also = f" and {extra}" if extra else ""

    def search(flt: str) -> Any:
        newest = ["start_time DESC"]
        return mlflow.search_runs(experiment_names=[experiment], filter_string=flt, order_by=newest)

    runs = search(f"tags.{JOB.kind} = 'job'{under}{also}")
    if not parent:
        return runs
    links = search(f"tags.{JOB.kind} = '{LINK}'{under}")
    ids = ", ".join(f"'{i}'" for i in links.get(f"tags.{JOB.measured_in}", pd.Series(dtype=str)).dropna())
    if not ids:
        return runs
    linked = search(f"attributes.run_id IN ({ids}){also}")
    return pd.concat([runs, linked], ignore_index=True) if not runs.empty else linked


def latest_sweep(uri: str | None, experiment: str) -> str | None:
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri(uri))
    df = mlflow.search_runs(
        experiment_names=[experiment], filter_string="tags.kind = 'sweep'", order_by=["start_time DESC"]
    )
    return None if df.empty else str(df.iloc[0]["run_id"])


def tidy(df: Any) -> Any:
    """One row per cell (model, batch, backend, precision, tf32, layout, GPU): the newest run."""
    import pandas as pd

    def col(name: str, default: Any = None) -> Any:
        return df[name] if name in df else pd.Series([default] * len(df), index=df.index)

    t = pd.DataFrame(
        {
            "model": col("params.model"),
            "task": col(f"tags.{JOB.task}"),
            "shape": col("params.input_shape", "?"),
            "batch": pd.to_numeric(col("params.batch_size"), errors="coerce").astype("Int64"),
            "backend": col("params.backend"),
            "precision": col("params.precision"),
            "tf32": col("params.tf32", "default"),
            "channels_last": col("params.channels_last", "false"),
            "gpu": col(f"tags.{JOB.gpu_name}").fillna("(not identified)"),
            "status": col(f"tags.{JOB.status}").fillna("unknown"),
            "img_s": col(f"metrics.{LATENCY.throughput_img_s}"),
            "p50_ms": col(f"metrics.{LATENCY.latency_p50_ms}"),
            "p99_ms": col(f"metrics.{LATENCY.latency_p99_ms}"),
            "img_per_j": col("metrics.img_per_j"),
            "img_s_per_plate_w": col(f"metrics.{NAMEPLATE.img_per_s_per_nameplate_w}"),
            "parity": col(f"tags.{PARITY.parity}").fillna("-"),
            "rel_l2": col(f"metrics.{PARITY.parity_rel_l2_err}"),
            "run_id": col("run_id"),
        }
    )
    keys = ["model", "shape", "batch", "backend", "precision", "tf32", "channels_last", "gpu"]
    return t.drop_duplicates(keys, keep="first").reset_index(drop=True)  # input is newest first


def cell(row: Any) -> str:
    if row is None:
        return "-"
    if row["status"] != "ok" or row["img_s"] != row["img_s"]:
        return str(row["status"]).upper()
    figure = f"{row['img_s']:.1f}" if row["img_s"] < 100 else f"{row['img_s']:.0f}"
    return figure + (FAIL_MARK if row["parity"] == "fail" else "")


def _pick(t: Any, **match: Any) -> Any:
    rows = t
    for k, v in match.items():
        rows = rows[rows[k] == v]
    return None if rows.empty else rows.iloc[0]


def study_table(t: Any, gpu: str) -> Any:
    """The study's layout for one GPU: Task | Batch Size | four columns | Improvement | Energy efficiency."""
    import pandas as pd

    base = t[(t["gpu"] == gpu) & (t["tf32"] == "default") & (t["channels_last"] == "false")]
    rows = []
    for (model, shape, batch), group in base.groupby(["model", "shape", "batch"], sort=True):
        picked = {name: _pick(group, backend=b, precision=p) for name, (b, p) in STUDY_COLUMNS.items()}
        tags = group["task"].dropna()
        task = task_title(model, tags.iloc[0] if len(tags) else None)
        row: dict[str, Any] = {"Task": f"{task} ({model}, {shape})", "Batch Size": int(batch)}
        row.update({name: cell(r) for name, r in picked.items()})
        pt, trt = picked[next(iter(STUDY_COLUMNS))], picked[list(STUDY_COLUMNS)[-1]]
        ok = pt is not None and trt is not None and pt["status"] == "ok" and trt["status"] == "ok"
        row["Improvement (TRT vs PT)"] = f"{trt['img_s'] / pt['img_s']:.2f}x" if ok else "-"
        eff = trt["img_s_per_plate_w"] if trt is not None and trt["status"] == "ok" else None
        row["Energy efficiency (img/s/W)"] = f"{eff:.2f}" if eff is not None and eff == eff else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def headline(t: Any) -> Any:
    """Per model and batch, across GPUs: the four columns' images/s."""
    import pandas as pd

    rows = []
    base = t[(t["tf32"] == "default") & (t["channels_last"] == "false")]
    for (model, shape, batch, gpu), group in base.groupby(["model", "shape", "batch", "gpu"], sort=True):
        row = {"Model": model, "Input": shape, "Batch Size": int(batch), "GPU": gpu}
        row.update(
            {name: cell(_pick(group, backend=b, precision=p)) for name, (b, p) in STUDY_COLUMNS.items()}
        )
        rows.append(row)
    return pd.DataFrame(rows)


def wide_table(t: Any) -> Any:
    """Every backend and precision: images/s, speed-up over eager fp32, energy, latency, parity."""
    t = t.copy()
    ref = t[(t["backend"] == "eager") & (t["precision"] == "fp32") & (t["tf32"] == "default")]
    ref = ref[(ref["channels_last"] == "false") & (ref["status"] == "ok")]
    base = {(r.model, r.shape, r.batch, r.gpu): r.img_s for r in ref.itertuples()}
    t["speedup_vs_eager_fp32"] = [
        r.img_s / base[k] if r.status == "ok" and (k := (r.model, r.shape, r.batch, r.gpu)) in base else None
        for r in t.itertuples()
    ]
    order = ["gpu", "model", "shape", "batch", "backend", "precision", "tf32", "channels_last"]
    columns = [*order, "status", "img_s", "speedup_vs_eager_fp32", "p50_ms", "p99_ms", "img_per_j"]
    columns += ["img_s_per_plate_w", "parity", "rel_l2", "run_id"]
    return t.sort_values(order)[columns].reset_index(drop=True)


def label(r: Any) -> str:
    precision = Precision.from_params(r["precision"], r["tf32"]).label
    return f"{r['backend']} {precision}" + (" CL" if r["channels_last"] == "true" else "")


def plots(wide: Any, out: Path) -> list[Path]:
    """Throughput vs batch per backend (a panel per model), images per joule, speed-up over eager fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = wide[wide["status"] == "ok"].copy()
    if ok.empty:
        return []
    ok["label"] = [label(r) for _, r in ok.iterrows()]
    models = sorted(ok["model"].unique())
    files = []
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for (lab, gpu), g in ok[ok["model"] == model].groupby(["label", "gpu"]):
            g = g.sort_values("batch")
            ax.plot(g["batch"], g["img_s"], marker="o", label=f"{lab} ({gpu})")
        batches = sorted(ok.loc[ok["model"] == model, "batch"].unique())
        ax.set(title=model, xlabel="batch size", ylabel="images/s", xscale="log")
        ax.set_xticks(batches, [str(b) for b in batches], minor=False)  # the batch sizes run
        ax.set_xticks([], minor=True)
        ax.set_ylim(bottom=0)  # from zero: a 1% gap looks like a 1% gap
        ax.legend(fontsize=7)
    files.append(_save(fig, out / "throughput_vs_batch.png"))
    for metric, title, name in (
        ("img_per_j", "images per joule (measured)", "images_per_joule.png"),
        ("speedup_vs_eager_fp32", "speed-up over eager fp32", "speedup_vs_eager_fp32.png"),
    ):
        data = ok.dropna(subset=[metric])
        if data.empty:
            continue
        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            d = data[data["model"] == model].sort_values(["batch", "label"])
            ax.barh([f"{r.label} b{r.batch} ({r.gpu})" for r in d.itertuples()], d[metric])
            ax.set(title=f"{model}: {title}")
            ax.tick_params(axis="y", labelsize=7)
        files.append(_save(fig, out / name))
    return files


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def markdown(frame: Any) -> str:
    if frame.empty:
        return "(no runs)\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def write(t: Any, out: Path, source: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    wide = wide_table(t)
    reference, subject = next(iter(STUDY_COLUMNS)), list(STUDY_COLUMNS)[-1]
    parts = [
        "# Inference benchmark report\n",
        f"Source: {source}. Figures are images/s (batch size / mean latency, CUDA events on a GPU), the "
        f"newest run per cell. Improvement = {subject} / {reference}; energy efficiency = {subject} "
        f"images/s per nameplate watt, as the study states it.{FAIL_MARK}: the output failed the parity "
        "check against eager fp32.\n",
    ]
    files = []
    for i, gpu in enumerate(sorted(t["gpu"].unique())):
        table = study_table(t, gpu)
        parts += [f"## {gpu}\n", markdown(table)]
        files.append(out / f"study_{i}.csv")
        table.assign(GPU=gpu).to_csv(files[-1], index=False)
    head = headline(t)
    parts += ["## Headline: each model across GPUs\n", markdown(head)]
    parts += ["## Every backend and precision\n", markdown(wide.drop(columns=["run_id"]))]
    head.to_csv(out / "headline.csv", index=False)
    wide.to_csv(out / "wide.csv", index=False)
    pngs = plots(wide, out)
    parts += ["## Plots\n", *(f"![{p.stem}]({p.name})\n" for p in pngs)]
    (out / "report.md").write_text("\n".join(parts), encoding="utf-8")
    return [*files, out / "headline.csv", out / "wide.csv", out / "report.md", *pngs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default=None, help="tracking URI (default: as the benchmark resolves it)")
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    ap.add_argument("--parent", default=None, help="one sweep: its parent run's id")
    ap.add_argument("--sweep", choices=["latest"], default=None, help="the experiment's newest sweep")
    ap.add_argument("--filter", default=None, help="an MLflow filter, e.g. \"params.model = 'yolo'\"")
    ap.add_argument("--out", default="reports", help="folder for report.md, CSV and PNG files")
    ap.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's run")
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and " " in argv[0]:  # `mlflow run . -e report -P args="..."` passes one quoted string
        argv = shlex.split(argv[0])
    a = ap.parse_args(argv)
    parent = a.parent or (latest_sweep(a.uri, a.experiment) if a.sweep else None)
    df = load_runs(a.uri, a.experiment, parent, a.filter)
    if df.empty:
        print(f"no job runs in experiment '{a.experiment}'" + (f" under sweep {parent}" if parent else ""))
        return 1
    source = (
        f"experiment '{a.experiment}'"
        + (f", sweep {parent}" if parent else "")
        + (f", filter {a.filter}" if a.filter else "")
    )
    files = write(tidy(df), Path(a.out), source)
    logged = bool(parent) and not a.no_log
    if logged:
        client = tracking.open_client(tracking.tracking_uri(a.uri))
        for f in files:
            client.log_artifact(parent, str(f), artifact_path="report")
    print(f"wrote {len(files)} files to {a.out}" + (f" and logged them to run {parent}" if logged else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
