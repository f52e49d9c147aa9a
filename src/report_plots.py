"""The report's plots (`src/report.py` makes the tables): one panel per model, never models averaged
together; value labels on bars and cells; a 1.0 line where a speed-up is plotted. A plot that cannot be
drawn from the runs at hand is left out with a note saying why."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from src.shared.forks import MISSING, run_forked

Plot = tuple[str, Path | None, str]  # title, file (None: left out), note


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (more img/s AND lower p99), by img/s."""
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any(x2 >= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in points)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def draw(wide: Any, out: Path, label: Any) -> list[Plot]:
    import matplotlib

    matplotlib.use("Agg")
    ok = wide[wide["status"] == "ok"].copy()
    if ok.empty:
        return [("every plot", None, "left out: no run ended ok")]
    ok["label"] = [label(r) for _, r in ok.iterrows()]
    multi_gpu = ok["gpu"].nunique() > 1
    ok["point"] = [f"{r.label} b{r.batch}" + (f" ({r.gpu})" if multi_gpu else "") for r in ok.itertuples()]
    models = sorted(ok["model"].unique())
    import matplotlib.pyplot  # once, here: the forks drawing the plots inherit it

    plots = [partial(plot, ok, models, out) for plot in PLOTS]
    drawn = run_forked(plots)  # each plot in a fork of its own, where the cores allow
    return [plot() if got is MISSING else got for plot, got in zip(plots, drawn, strict=True)]


def _panels(models: list[str], width: float = 5.5, height: float = 4.5) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(width * len(models), height), squeeze=False)
    return fig, axes[0]


def _throughput(ok: Any, models: list[str], out: Path) -> Plot:
    fig, axes = _panels(models)
    for ax, model in zip(axes, models, strict=True):
        d = ok[ok["model"] == model]
        for (lab, gpu), g in d.groupby(["label", "gpu"]):
            g = g.sort_values("batch")
            ax.plot(g["batch"], g["img_s"], marker="o", label=f"{lab} ({gpu})")
        batches = sorted(d["batch"].unique())
        ax.set(title=model, xlabel="batch size", ylabel="images/s", xscale="log")
        ax.set_xticks(batches, [str(b) for b in batches], minor=False)  # the batch sizes run
        ax.set_xticks([], minor=True)
        ax.set_ylim(bottom=0)  # from zero: a 1% gap looks like a 1% gap
        ax.legend(fontsize=6)
    return ("Throughput against batch size", _save(fig, out / "throughput_vs_batch.png"), "")


def _p99_vs_throughput(ok: Any, models: list[str], out: Path) -> Plot:
    d = ok.dropna(subset=["p99_ms", "img_s"])
    if d.empty:
        return ("p99 latency against throughput", None, "left out: no ok run has a p99 latency")
    fig, axes = _panels(models, 6.5, 5)
    for ax, model in zip(axes, models, strict=True):
        m = d[d["model"] == model].reset_index(drop=True)
        pts = list(zip(m["img_s"], m["p99_ms"], strict=True))
        ax.scatter(m["img_s"], m["p99_ms"], s=18, color="tab:gray")
        front = pareto(pts)
        fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
        ax.plot(fx, fy, marker="o", color="tab:red", label="Pareto front (faster and lower p99)")
        for i, xy in enumerate(pts):  # every point named; the front's in red
            on = i in front
            text = f"{m.loc[i, 'point']}: {xy[0]:.4g} img/s, {xy[1]:.3g} ms" if on else m.loc[i, "point"]
            ax.annotate(
                text,
                xy,
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
                color="tab:red" if on else "dimgray",
            )
        ax.set(title=model, xlabel="images/s", ylabel="p99 latency (ms)", yscale="log")
        ax.legend(fontsize=7)
    title = "p99 latency against throughput, Pareto front marked"
    return (title, _save(fig, out / "p99_vs_throughput.png"), "")


def _speedup_heatmap(ok: Any, models: list[str], out: Path) -> Plot:
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    d = ok.dropna(subset=["speedup_vs_eager_fp32"])
    if d.empty:
        return ("Speed-up heat map", None, "left out: no ok run has an eager fp32 reference to compare with")
    fig, axes = _panels(models, 6, 4.5)
    for ax, model in zip(axes, models, strict=True):
        m = d[d["model"] == model]
        if m.empty:
            ax.set_axis_off()
            ax.set_title(f"{model}: no eager fp32 reference")
            continue
        batch = int(m["batch"].max())  # the largest batch measured: where backends differ most
        m = m[m["batch"] == batch]
        backends, precisions = sorted(m["backend"].unique()), sorted(m["precision"].unique())
        grid = [[float("nan")] * len(precisions) for _ in backends]
        for i, b in enumerate(backends):
            for j, p in enumerate(precisions):
                cell = m[(m["backend"] == b) & (m["precision"] == p)]
                if cell.empty:
                    continue
                best = cell.sort_values("speedup_vs_eager_fp32", ascending=False).iloc[0]
                grid[i][j] = best["speedup_vs_eager_fp32"]
                extra = (" CL" if best["channels_last"] == "true" else "") + (
                    f"\n{best['mode']}" if best["mode"] not in ("-", "default") else ""
                )
                dark = not 0.5 <= grid[i][j] <= 2.0
                color = "white" if dark else "black"
                ax.text(j, i, f"{grid[i][j]:.2f}x{extra}", ha="center", va="center", fontsize=7, color=color)
        top = max(2.0, max(v for row in grid for v in row if v == v))
        cmap = plt.get_cmap("RdBu").with_extremes(bad="#dddddd")  # none: grey, never the white of 1.0x
        masked = np.ma.masked_invalid(np.array(grid, dtype=float))
        im = ax.imshow(masked, cmap=cmap, norm=TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=top), aspect="auto")
        ax.set_xticks(range(len(precisions)), precisions)
        ax.set_yticks(range(len(backends)), backends)
        ax.set_title(f"{model} b{batch}: speed-up over eager fp32 (best layout/mode; grey: none)", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8, label="x eager fp32 (1.0: white)")
    plt.setp(axes, xlabel="precision")
    return ("Speed-up heat map, backend x precision", _save(fig, out / "speedup_heatmap.png"), "")


def _speedup_bars(ok: Any, models: list[str], out: Path) -> Plot:
    d = ok.dropna(subset=["speedup_vs_eager_fp32"])
    if d.empty:
        return ("Speed-up over eager fp32", None, "left out: no ok run has an eager fp32 reference")
    fig, axes = _panels(models, 6, max(4, 0.22 * d.groupby("model").size().max()))
    for ax, model in zip(axes, models, strict=True):
        m = d[d["model"] == model].sort_values(["batch", "speedup_vs_eager_fp32"])
        bars = ax.barh(m["point"], m["speedup_vs_eager_fp32"])
        ax.bar_label(bars, fmt="%.2fx", fontsize=6)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set(title=f"{model}: speed-up over eager fp32", xlabel="x eager fp32")
        ax.tick_params(axis="y", labelsize=6)
    return ("Speed-up over eager fp32", _save(fig, out / "speedup_vs_eager_fp32.png"), "")


def _energy(ok: Any, models: list[str], out: Path) -> Plot:
    d = ok.dropna(subset=["img_per_j"])
    if d.empty:
        why = "left out: no run has a measured energy (no energy counter: a CPU, or NVML without one)"
        return ("Images per joule against throughput", None, why)
    fig, axes = _panels(models, 6, 4.5)
    for ax, model in zip(axes, models, strict=True):
        m = d[d["model"] == model]
        ax.scatter(m["img_s"], m["img_per_j"], s=18)
        for r in m.itertuples():
            ax.annotate(f"{r.point}: {r.img_per_j:.3g}", (r.img_s, r.img_per_j), fontsize=6)
        ax.set(title=model, xlabel="images/s", ylabel="images per joule (measured)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    return ("Images per joule against throughput", _save(fig, out / "images_per_joule.png"), "")


def max_batch(wide: Any, table: Any, out: Path) -> Path:
    """Throughput against batch per configuration of `report_batch.scaling`'s table (its curves, in its
    order), the knee starred, the out-of-memory boundary dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from src.report_batch import curves

    models = sorted(table["model"].unique())
    fig, axes = _panels(models, width=6)
    panel = dict(zip(models, axes, strict=True))
    for (_, _, ok), (_, row) in zip(curves(wide), table.iterrows(), strict=True):
        ax = panel[row["model"]]
        name = f"{row['configuration']} ({row['gpu']})"
        (line,) = ax.plot(ok["batch"], ok["img_s"], marker="o", markersize=3, label=name)
        knee, oom = row["knee_batch"], row["smallest_oom_batch"]
        if knee == knee and knee is not None:  # NaN: no run fit
            ax.plot(
                [knee],
                [row["img_s_at_knee"]],
                marker="*",
                markersize=14,
                color=line.get_color(),
                linestyle="none",
                label=f"knee: batch {knee:g}",
            )
        if oom == oom and oom is not None:
            ax.axvline(
                oom,
                color=line.get_color(),
                linestyle="--",
                linewidth=1,
                label=f"out of memory from batch {oom:g}",
            )
    for model, ax in panel.items():
        ax.set(title=model, xlabel="batch size (log scale)", ylabel="images/s", xscale="log")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
    return _save(fig, out / "max_batch.png")


PLOTS = (_throughput, _p99_vs_throughput, _speedup_heatmap, _speedup_bars, _energy)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
