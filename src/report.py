"""The study's tables and plots, read from MLflow (never from output folders).

    python -m src.report                         # the default experiment's runs -> reports/
    python -m src.report --parent RUN_ID         # one sweep; the report is also logged to that run
    python -m src.report --sweep latest          # the experiment's newest sweep, same
    python -m src.report --filter "params.model = 'yolo'" --out docs/results/NAME

Writes `report.md` (the study's table per GPU with the best available configuration of each row, the
headline table per model across GPUs, the best configurations, the wide table of every backend, precision,
layout and mode), the same tables as CSV, and plots (`src/report_plots.py`). A cell shows the newest
configuration measured for it, its figure the median over every ok run of the same config key, with the
spread beside it. A cell that has no figure says why: OOM, UNSUPPORTED, UNAVAILABLE, FAILED, TIMEOUT. A
figure whose output failed the parity check against eager fp32 carries a dagger, an unstable one a tilde.
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
from src.parent.answers import fmt_img_s
from src.shared.errors import ConfigError
from src.shared.results import (
    COMPUTE,
    COST,
    ENERGY,
    JOB,
    KINDS,
    LATENCY,
    LINK,
    NAMEPLATE,
    PARITY,
    PROFILE,
    STABLE,
    TRACE,
    Stability,
)
from src.shared.spec import NAMED_FLAGS, Precision, variant

FAIL_MARK = " †"
UNSTABLE_MARK = " ~"


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


SHARES = [*(f"time_{k}_pct" for k in KINDS), PROFILE.idle_pct]  # where the time goes (measure.profile)
CLOCKS = ["sm_clock_mhz", "clock_limits"]  # the SM clock's mean over the timed window, and what held it down
COST_COLUMNS = ("usd_per_million_images", "Best USD/M img")  # shown only where a price was set


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
    found = sweeps(uri, experiment)
    return found[0] if found else None


def tidy(df: Any) -> Any:
    """One row per cell (model, batch, backend, precision, tf32, layout, compile mode, GPU): the newest run,
    whose figure is the median over every ok run of the same `config_key` (`img_s_min`/`img_s_max`/`runs`
    beside it; one run: its timed windows' spread, `spread_pct`)."""
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
            "mode": _variants(df),
            "smoke": col("params.smoke", "false").fillna("false"),
            "gpu": col(f"tags.{JOB.gpu_name}").fillna("(not identified)"),
            "status": col(f"tags.{JOB.status}").fillna("unknown"),
            "img_s": pd.to_numeric(col(f"metrics.{LATENCY.throughput_img_s}"), errors="coerce"),
            "p50_ms": col(f"metrics.{LATENCY.latency_p50_ms}"),
            "p99_ms": col(f"metrics.{LATENCY.latency_p99_ms}"),
            "img_per_j": col(f"metrics.{ENERGY.img_per_j}"),
            "img_s_per_plate_w": col(f"metrics.{NAMEPLATE.img_per_s_per_nameplate_w}"),
            "parity": col(f"tags.{PARITY.parity}").fillna("-"),
            "rel_l2": col(f"metrics.{PARITY.parity_rel_l2_err}"),
            "windows_spread_pct": col(f"metrics.{LATENCY.throughput_spread_pct}"),
            "tflops": col(f"metrics.{COMPUTE.achieved_tflops}"),
            "usd_per_million_images": col(f"metrics.{COST.usd_per_million_images}"),
            "peak_pct": col(f"metrics.{COMPUTE.peak_used_pct}"),
            **{share: col(f"metrics.{share}") for share in SHARES},
            "sm_clock_mhz": col(f"metrics.{TRACE.sm_clock_mean_mhz}"),
            "clock_limits": col(f"tags.{TRACE.clock_event_reasons}").fillna("-"),
            "stable": col(f"tags.{STABLE.stable}").fillna("-"),
            "config_key": col(f"tags.{JOB.config_key}").fillna(""),
            "run_id": col("run_id"),
        }
    )
    keys = ["model", "shape", "batch", "backend", "precision", "tf32", "channels_last", "mode", "gpu"]
    ok = t[(t["status"] == "ok") & t["img_s"].notna() & (t["config_key"] != "")]
    agg = ok.groupby("config_key")["img_s"].agg(["median", "min", "max", "count"])
    # a run that did not end ok and was run again (a resumed sweep re-measuring an interrupted job) is no
    # result of its configuration: the newer run of its config key stands for it, in whatever cell
    superseded = t.duplicated("config_key", keep="first") & (t["config_key"] != "") & (t["status"] != "ok")
    t = t[~superseded].drop_duplicates(keys, keep="first").reset_index(drop=True)  # input is newest first
    measured = t["config_key"].isin(agg.index) & (t["status"] == "ok")
    picked = agg.reindex(t["config_key"]).set_index(t.index)
    t["runs"] = picked["count"].where(measured).fillna(0).astype(int)
    t["img_s_min"] = picked["min"].where(measured)
    t["img_s_max"] = picked["max"].where(measured)
    t.loc[measured, "img_s"] = picked.loc[measured, "median"]
    across = 100 * (t["img_s_max"] - t["img_s_min"]) / t["img_s"]
    t["spread_pct"] = across.where(t["runs"] > 1, t["windows_spread_pct"])
    wobbly = (t["runs"] > 1) & (t["spread_pct"] > Stability.SPREAD_PCT)
    t.loc[wobbly & measured, "stable"] = "false"
    return t


def _variants(df: Any) -> Any:
    """The compile mode and the flags named beside it (`variant`), "-" where a backend has neither."""
    import pandas as pd

    keys = {k: f"params.backend.{k}" for k in ("mode", *NAMED_FLAGS)}
    present = {k: c for k, c in keys.items() if c in df}
    if "mode" not in present:
        return pd.Series(["-"] * len(df), index=df.index)
    names = []
    for _, row in df.iterrows():
        mode = row[present["mode"]]
        has_mode = isinstance(mode, str) and mode != ""  # NaN: a backend without a mode
        names.append((variant({k: row[c] for k, c in present.items()}) or "default") if has_mode else "-")
    return pd.Series(names, index=df.index)


def cell(row: Any) -> str:
    if row is None:
        return "-"
    if row["status"] != "ok" or row["img_s"] != row["img_s"]:
        return str(row["status"]).upper()
    marks = FAIL_MARK if row["parity"] == "fail" else ""
    marks += UNSTABLE_MARK if row["stable"] == "false" else ""
    return fmt_img_s(row["img_s"]) + marks


def best_available(t: Any, max_p99_ms: float | None = None) -> Any:
    """Per model, input shape, batch size and GPU: the fastest ok cell whose output passed the parity check,
    with its speed-up over eager fp32, measured images per joule and img/s per nameplate watt. With a
    latency budget (`max_p99_ms`): per model, input shape and GPU, the fastest such cell whose p99 latency
    is within it, at any batch size measured (column `any_batch`)."""
    import pandas as pd

    wide = wide_table(t)
    ok = wide[(wide["status"] == "ok") & (wide["parity"] == "pass") & wide["img_s"].notna()]
    keys = ["model", "shape", "batch", "gpu"]
    if max_p99_ms is not None:
        ok = ok[pd.to_numeric(ok["p99_ms"], errors="coerce") <= max_p99_ms]
        keys = ["model", "shape", "gpu"]
    rows = []
    for _, group in ok.groupby(keys, sort=True):
        best = group.sort_values("img_s", ascending=False).iloc[0]
        name = label(best) + (f" (batch {int(best['batch'])})" if max_p99_ms is not None else "")
        rows.append(
            {
                "model": best["model"],
                "shape": best["shape"],
                "batch": int(best["batch"]),
                "gpu": best["gpu"],
                "configuration": name,
                "img_s": best["img_s"],
                "p99_ms": best["p99_ms"],
                "speedup_vs_eager_fp32": best["speedup_vs_eager_fp32"],
                "img_per_j": best["img_per_j"],
                "img_s_per_plate_w": best["img_s_per_plate_w"],
                "tflops": best["tflops"],
                "peak_pct": best["peak_pct"],
                "usd_per_million_images": best["usd_per_million_images"],
                "stable": best["stable"],
                **{share: best[share] for share in SHARES},
                **{clock: best[clock] for clock in CLOCKS},
                "any_batch": max_p99_ms is not None,
                "run_id": best["run_id"],
            }
        )
    return pd.DataFrame(rows)


def over_budget(t: Any, best: Any) -> list[str]:
    """The model, input and GPU rows measured ok that have no configuration within the latency budget."""
    ok = t[t["status"] == "ok"]
    measured = {(r.model, r.shape, r.gpu) for r in ok.itertuples()}
    within = {(r.model, r.shape, r.gpu) for r in best.itertuples()} if not best.empty else set()
    return [f"{m} {s} on {g}" for m, s, g in sorted(measured - within)]


def time_shares(best: Any, wide: Any) -> str:
    """Per row, the best run's profiled window (and the other profiled candidates'): the share of the
    device's busy time by kind of kernel, the idle share of the window, and the SM clock with what held it
    down (a card at its power limit runs its kernels below its top clock)."""
    import pandas as pd

    if best.empty or best[SHARES].isna().all().all():
        return "No run of these rows was profiled (`measure.profile=true`; the search preset profiles).\n"
    rows = []
    names = {f"time_{k}_pct": k.replace("_", "/") + " %" for k in KINDS} | {PROFILE.idle_pct: "idle %"}
    keys = ["model", "shape", "batch", "gpu"]
    for _, b in best.iterrows():
        same = wide[(wide[keys] == b[keys]).all(axis=1) & wide[SHARES[0]].notna()]
        for _, r in same.sort_values("img_s", ascending=False).iterrows():
            mark = " (best)" if r["run_id"] == b["run_id"] else ""
            row = {"model": r["model"], "batch": int(r["batch"]), "gpu": r["gpu"]}
            row |= {"configuration": label(r) + mark, "img_s": r["img_s"], "peak_pct": r["peak_pct"]}
            clocks = {"SM MHz": r["sm_clock_mhz"], "clock limits": r["clock_limits"]}
            rows.append(row | {names[s]: r[s] for s in SHARES} | clocks)
    text = (
        "Share of the device's busy time by kind of kernel, and the idle share of the profiled window "
        '(docs/metrics.md, "Where the time goes"), for each row\'s profiled runs, fastest first; the SM '
        "clock's mean over the timed window, and the reasons NVML gave for holding it down (`sw_power_cap`: "
        "at the card's power limit).\n\n"
    )
    return text + markdown(pd.DataFrame(rows))


def best_cell(best: Any, model: str, shape: str, batch: int, gpu: str) -> dict[str, str]:
    """The study table's "Best available" columns for one row."""
    if best.empty:
        match = best
    else:  # under a latency budget, a model's best is at any batch: every row of the model shows it
        same_batch = (best["batch"] == batch) | best.get("any_batch", False)
        match = best[(best["model"] == model) & (best["shape"] == shape) & same_batch & (best["gpu"] == gpu)]
    if match.empty:
        return dict.fromkeys(
            (
                "Best available",
                "Best img/s",
                "Best speed-up",
                "Best img/J",
                "Best img/s/W",
                "Best TFLOPS",
                "Best % of peak",
                "Best USD/M img",
            ),
            "-",
        )
    b = match.iloc[0]
    gain = b["speedup_vs_eager_fp32"]
    return {
        "Best available": b["configuration"],
        "Best img/s": fmt_img_s(b["img_s"]) + (UNSTABLE_MARK if b["stable"] == "false" else ""),
        "Best speed-up": f"{gain:.2f}x" if gain == gain and gain is not None else "-",
        "Best img/J": _fmt(b["img_per_j"]) or "-",
        "Best img/s/W": _fmt(b["img_s_per_plate_w"]) or "-",
        "Best TFLOPS": _fmt(b.get("tflops")) or "-",
        "Best % of peak": _fmt(b.get("peak_pct")) or "-",
        "Best USD/M img": _fmt(b.get("usd_per_million_images")) or "-",
    }


def _pick(t: Any, **match: Any) -> Any:
    rows = t
    for k, v in match.items():
        rows = rows[rows[k] == v]
    return None if rows.empty else rows.iloc[0]


def study_table(t: Any, gpu: str, best: Any = None) -> Any:
    """The study's layout for one GPU: Task | Batch Size | four columns | Improvement | Energy efficiency,
    then the best available configuration of the row (any backend, precision, layout or mode)."""
    import pandas as pd

    best = best_available(t) if best is None else best
    base = t[(t["gpu"] == gpu) & (t["tf32"] == "default") & (t["channels_last"] == "false")]
    base = base[base["mode"].isin(["-", "default"])]
    rows = []
    for (model, shape, batch), group in base.groupby(["model", "shape", "batch"], sort=True):
        picked = {name: _pick(group, backend=b, precision=p) for name, (b, p) in STUDY_COLUMNS.items()}
        tags = group["task"].dropna()
        task = task_title(model, tags.iloc[0] if len(tags) else None)
        smoke = " smoke" if (group["smoke"] == "true").any() else ""
        row: dict[str, Any] = {"Task": f"{task} ({model}, {shape}{smoke})", "Batch Size": int(batch)}
        row.update({name: cell(r) for name, r in picked.items()})
        pt, trt = picked[next(iter(STUDY_COLUMNS))], picked[list(STUDY_COLUMNS)[-1]]
        ok = pt is not None and trt is not None and pt["status"] == "ok" and trt["status"] == "ok"
        row["Improvement (TRT vs PT)"] = f"{trt['img_s'] / pt['img_s']:.2f}x" if ok else "-"
        eff = trt["img_s_per_plate_w"] if trt is not None and trt["status"] == "ok" else None
        row["Energy efficiency (img/s/W)"] = f"{eff:.2f}" if eff is not None and eff == eff else "-"
        row.update(best_cell(best, model, shape, int(batch), gpu))
        rows.append(row)
    return pd.DataFrame(rows)


def headline(t: Any, best: Any = None) -> Any:
    """Per model and batch, across GPUs: the four columns' images/s and the best available."""
    import pandas as pd

    best = best_available(t) if best is None else best
    rows = []
    base = t[(t["tf32"] == "default") & (t["channels_last"] == "false") & t["mode"].isin(["-", "default"])]
    for (model, shape, batch, gpu), group in base.groupby(["model", "shape", "batch", "gpu"], sort=True):
        row = {"Model": model, "Input": shape, "Batch Size": int(batch), "GPU": gpu}
        row.update(
            {name: cell(_pick(group, backend=b, precision=p)) for name, (b, p) in STUDY_COLUMNS.items()}
        )
        row.update(best_cell(best, model, shape, int(batch), gpu))
        rows.append(row)
    return pd.DataFrame(rows)


def wide_table(t: Any) -> Any:
    """Every backend and precision: images/s, speed-up over eager fp32, energy, latency, parity."""
    t = t.copy()
    ref = t[(t["backend"] == "eager") & (t["precision"] == "fp32") & (t["tf32"] == "default")]
    ref = ref[(ref["channels_last"] == "false") & (ref["status"] == "ok") & (ref["mode"] == "-")]
    base = {(r.model, r.shape, r.batch, r.gpu): r.img_s for r in ref.itertuples()}
    t["speedup_vs_eager_fp32"] = [
        r.img_s / base[k] if r.status == "ok" and (k := (r.model, r.shape, r.batch, r.gpu)) in base else None
        for r in t.itertuples()
    ]
    order = ["gpu", "model", "shape", "batch", "backend", "precision", "tf32", "channels_last", "mode"]
    columns = [*order, "status", "img_s", "img_s_min", "img_s_max", "runs", "spread_pct", "stable"]
    columns += ["speedup_vs_eager_fp32", "p50_ms", "p99_ms", "img_per_j", "img_s_per_plate_w", "tflops"]
    columns += ["peak_pct", "usd_per_million_images", "parity"]
    columns += ["rel_l2", "smoke", *SHARES, *CLOCKS, "run_id"]
    return t.sort_values(order)[columns].reset_index(drop=True)


def label(r: Any) -> str:
    """backend, precision, layout and compile mode: "compile fp16 CL max-autotune-no-cudagraphs"."""
    precision = Precision.from_params(r["precision"], r["tf32"]).label
    mode = r.get("mode", "-")
    text = f"{r['backend']} {precision}" + (" CL" if r["channels_last"] == "true" else "")
    return text + (f" {mode}" if mode not in ("-", "default", None) and mode == mode else "")


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


def _without_absent(frame: Any) -> Any:
    """The table without the cost columns when no run had a price (absent, not zero)."""
    gone = [c for c in COST_COLUMNS if c in frame and (frame[c].isin(["-", ""]) | frame[c].isna()).all()]
    return frame.drop(columns=gone)


def write(
    t: Any, out: Path, source: str, best: Any = None, max_p99_ms: float | None = None
) -> tuple[list[Path], Any]:
    """report.md, the tables as CSV and the plots; returns the files and the best-available table
    (`best`: chosen among other runs than the report's, e.g. the whole experiment's). `max_p99_ms`: a
    latency budget for Best available."""
    from src import report_batch, report_html, report_plots

    out.mkdir(parents=True, exist_ok=True)
    wide = _without_absent(wide_table(t))
    best = best_available(t, max_p99_ms) if best is None else best
    reference, subject = next(iter(STUDY_COLUMNS)), list(STUDY_COLUMNS)[-1]
    parts = [
        "# Inference benchmark report\n",
        f"Source: {source}. Figures are images/s (batch size / mean latency, CUDA events on a GPU): per "
        "cell the newest configuration, its figure the median over every ok run of the same config key "
        "(`runs`, `img_s_min`-`img_s_max` in the wide table; one run: the spread of its timed windows). "
        f"Improvement = {subject} / {reference}; energy efficiency = {subject} images/s per nameplate watt, "
        "as the study states it. **Best available**: the fastest ok run of the row, any backend, "
        "precision, layout and compile mode, whose output passed the parity check against eager fp32, with "
        "its speed-up over eager fp32, measured images per joule and images/s per nameplate watt.\n",
        f"Marks:{FAIL_MARK} the output failed the parity check;{UNSTABLE_MARK} unstable (its spread, latency "
        "CoV or GPU busy share passed the thresholds of docs/metrics.md, or a smoke run); `smoke` in the "
        "task: tiny smoke inputs, not for comparing.\n",
    ]
    if max_p99_ms is not None:
        missing = over_budget(t, best)
        parts.append(
            f"**Latency budget: p99 <= {max_p99_ms:g} ms.** Best available is the fastest configuration "
            "within it at any batch size measured for the model and GPU, named with its batch. "
            + (
                f"No configuration within the budget: {'; '.join(missing)}.\n"
                if missing
                else "Every model has a configuration within it.\n"
            )
        )
    files = []
    tables = {gpu: study_table(t, gpu, best) for gpu in sorted(t["gpu"].unique())}
    # a GPU without a row (e.g. "(not identified)": only runs stopped before the card was known) is left out
    shown = {g: tab for g, tab in tables.items() if not tab.empty} or dict(list(tables.items())[:1])
    for i, (gpu, table) in enumerate(shown.items()):
        table = _without_absent(table)
        parts += [f"## {gpu}\n", markdown(table)]
        files.append(out / f"study_{i}.csv")
        table.assign(GPU=gpu).to_csv(files[-1], index=False)
    head = _without_absent(headline(t, best))
    parts += ["## Headline: each model across GPUs\n", markdown(head)]
    shown_best = _without_absent(best.drop(columns=[*SHARES, *CLOCKS, "any_batch"], errors="ignore"))
    parts += ["## Best available per model, input, batch size and GPU\n", markdown(shown_best)]
    parts += ["## Where the time goes\n", time_shares(best, wide)]
    batches = report_batch.scaling(wide, label)
    if not batches.empty:
        parts += ["## Largest batch and the knee\n", report_batch.INTRO, markdown(batches)]
        batches.to_csv(out / "max_batch.csv", index=False)
    parts += ["## Every backend and precision\n", markdown(wide.drop(columns=["run_id", *SHARES, *CLOCKS]))]
    head.to_csv(out / "headline.csv", index=False)
    best.to_csv(out / "best.csv", index=False)
    wide.to_csv(out / "wide.csv", index=False)
    drawn = report_plots.draw(wide, out, label)
    if not batches.empty:
        drawn.append(("Largest batch and the knee", report_plots.max_batch(wide, batches, out), ""))
    parts += ["## Plots\n"]
    for title, png, note in drawn:
        parts.append(f"### {title}\n\n![{png.stem}]({png.name})\n" if png else f"### {title}\n\n{note}\n")
    text = "\n".join(parts)
    (out / "report.md").write_text(text, encoding="utf-8")
    (out / "report.html").write_text(report_html.to_html(text, out), encoding="utf-8")
    pngs = [png for _, png, _ in drawn if png]
    tables = [out / f for f in ("headline.csv", "best.csv", "wide.csv", "report.md", "report.html")]
    tables += [out / "max_batch.csv"] if not batches.empty else []
    return [*files, *tables, *pngs], best


MAX_P99_TAG = "report_max_p99_ms"  # on a sweep's run: the latency budget its reports apply
SLOWER_EXIT = 5  # --compare with --fail-on-slower: a cell is slower beyond noise by more than allowed


def make(
    uri: str | None,
    experiment: str,
    parent: str | None,
    extra: str | None,
    out: Path,
    log_to_run: bool,
    max_p99_ms: float | None = None,
) -> tuple[list[Path], Any] | None:
    """Read the runs, write the report, log it to the sweep's parent run; None when there is no job run.
    `max_p99_ms`: a latency budget (None: the sweep's own, tag `report_max_p99_ms`, if it has one)."""
    df = load_runs(uri, experiment, parent, extra)
    if df.empty:
        return None
    client = tracking.open_client(tracking.tracking_uri(uri)) if parent else None
    if max_p99_ms is None and client is not None:
        budget = client.get_run(parent).data.tags.get(MAX_P99_TAG)
        max_p99_ms = float(budget) if budget else None
    source = f"experiment '{experiment}'" + (f", sweep {parent}" if parent else "")
    source += f", filter {extra}" if extra else ""
    best = None
    if parent:  # a sweep's rows, and for each the best run of the whole experiment (any sweep, any preset)
        best = best_available(tidy(load_runs(uri, experiment, None, extra)), max_p99_ms)
        source += "; best available: among every job run of the experiment"
    files, best = write(tidy(df), out, source, best, max_p99_ms)
    if client is not None and log_to_run:
        for f in files:
            client.log_artifact(parent, str(f), artifact_path="report")
    return files, best


def sweeps(uri: str | None, experiment: str) -> list[str]:
    """The experiment's sweep runs, newest first."""
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri(uri))
    df = mlflow.search_runs(
        experiment_names=[experiment], filter_string="tags.kind = 'sweep'", order_by=["start_time DESC"]
    )
    return [] if df.empty else [str(i) for i in df["run_id"]]


def side(uri: str | None, experiment: str, name: str) -> tuple[str | None, str | None]:
    """A side of --compare as (sweep run id, MLflow filter): `latest`, `previous` (the sweep before it),
    a sweep's run id, or a filter over the experiment's job runs."""
    if name in ("latest", "previous"):
        found = sweeps(uri, experiment)
        i = 0 if name == "latest" else 1
        if len(found) <= i:
            raise SystemExit(
                f"--compare: experiment '{experiment}' has {len(found)} sweep(s); '{name}' needs {i + 1}"
            )
        return found[i], None
    if len(name) == 32 and all(c in "0123456789abcdef" for c in name):
        return name, None
    return None, name


def compare(a: Any) -> int:
    from src import report_compare

    base, new = (side(a.uri, a.experiment, s) for s in a.compare)
    runs = [load_runs(a.uri, a.experiment, parent, flt) for parent, flt in (base, new)]
    if any(r.empty for r in runs):
        print(f"--compare: no job runs on {'BASE' if runs[0].empty else 'NEW'} ({a.compare})")
        return 1
    out = Path(a.out)
    files, both = report_compare.write(
        tuple(a.compare), (tidy(runs[0]), tidy(runs[1])), tuple(runs), out, label, markdown
    )
    counts = both["verdict"].value_counts()
    print(
        f"{len(both)} cells on both sides: "
        + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("faster", "slower", "same"))
    )
    for _, r in both[both["verdict"] != "same"].iterrows():
        print(
            f"  {r['verdict']}: {label(r)} {r['model']} b{r['batch']} on {r['gpu']}: "
            f"{r['img_s_base']:.1f} -> {r['img_s_new']:.1f} img/s "
            f"({r['ratio']:.3f}x, noise {r['noise_pct']:.1f}%)"
        )
    parent = new[0]
    if parent and not a.no_log:
        client = tracking.open_client(tracking.tracking_uri(a.uri))
        for f in files:
            client.log_artifact(parent, str(f), artifact_path="compare")
    print(
        f"wrote {len(files)} files to {out}"
        + (f" and logged them to run {parent}" if parent and not a.no_log else "")
    )
    if a.fail_on_slower is not None:
        worse = report_compare.slower_beyond(both, a.fail_on_slower)
        if not worse.empty:
            print(f"{len(worse)} cell(s) slower by more than {a.fail_on_slower:g}% beyond their noise")
            return SLOWER_EXIT
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default=None, help="tracking URI (default: as the benchmark resolves it)")
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    ap.add_argument("--parent", default=None, help="one sweep: its parent run's id")
    ap.add_argument("--sweep", choices=["latest"], default=None, help="the experiment's newest sweep")
    ap.add_argument("--filter", default=None, help="an MLflow filter, e.g. \"params.model = 'yolo'\"")
    ap.add_argument("--out", default="reports", help="folder for report.md, CSV and PNG files")
    ap.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's run")
    ap.add_argument("--max-p99-ms", type=float, default=None, help="Best available within this p99 latency")
    ap.add_argument(
        "--compare",
        nargs=2,
        metavar=("BASE", "NEW"),
        default=None,
        help="compare two sides cell by cell: latest, previous, a sweep's run id, or an MLflow filter",
    )
    ap.add_argument(
        "--fail-on-slower",
        type=float,
        default=None,
        metavar="PCT",
        help=f"with --compare: exit {SLOWER_EXIT} when a cell is slower by more than PCT%% beyond its noise",
    )
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and " " in argv[0]:  # `mlflow run . -e report -P args="..."` passes one quoted string
        argv = shlex.split(argv[0])
    a = ap.parse_args(argv)
    if a.fail_on_slower is not None and not a.compare:
        ap.error("--fail-on-slower needs --compare BASE NEW")
    if a.compare:
        return compare(a)
    parent = a.parent or (latest_sweep(a.uri, a.experiment) if a.sweep else None)
    made = make(a.uri, a.experiment, parent, a.filter, Path(a.out), not a.no_log, a.max_p99_ms)
    if made is None:
        print(f"no job runs in experiment '{a.experiment}'" + (f" under sweep {parent}" if parent else ""))
        return 1
    files, _ = made
    logged = bool(parent) and not a.no_log
    print(f"wrote {len(files)} files to {a.out}" + (f" and logged them to run {parent}" if logged else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
