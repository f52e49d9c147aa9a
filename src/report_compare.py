"""Two sets of runs compared cell by cell (`python -m src.report --compare BASE NEW`): did it get slower?

A cell is a model, input, batch, backend, precision, layout, compile mode and GPU, as in the report's wide
table (`src/report.py` tidies both sides). Per cell present on both sides: both figures, the ratio
NEW / BASE and a verdict. A move counts only when it exceeds the noise: the larger of the two cells'
spreads (`spread_pct`: their timed windows', or across repeated runs) and `MIN_MOVE_PCT`; else `same`.
Cells on one side only are listed; so are the settings and versions that differ between the sides (read
from the runs' params and tags), once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIN_MOVE_PCT = 3.0  # the smallest move counted, whatever the spreads (docs/metrics.md)
CELL = ["model", "shape", "batch", "backend", "precision", "tf32", "channels_last", "mode", "gpu"]
# what may differ between two sides beyond the cells: versions, the card and driver, the settings
CONTEXT_TAGS = ("driver_version", "cuda_version", "cudnn_version", "git_commit", "host", "cpu")
# params that name the cells themselves (shown per cell, not as a difference of the sides)
CELL_PARAMS = ("model", "input_shape", "batch_size", "backend", "precision", "tf32", "channels_last", "gpu")


def cells(base: Any, new: Any) -> tuple[Any, Any, Any]:
    """(both sides' ok cells joined, with ratio and verdict; cells of BASE only; cells of NEW only)."""
    ok = [t[(t["status"] == "ok") & t["img_s"].notna()] for t in (base, new)]
    keep = [*CELL, "img_s", "spread_pct", "p99_ms"]
    joined = ok[0][keep].merge(ok[1][keep], on=CELL, how="outer", suffixes=("_base", "_new"), indicator=True)
    both = joined[joined["_merge"] == "both"].drop(columns="_merge").copy()
    both["ratio"] = both["img_s_new"] / both["img_s_base"]
    noise = both[["spread_pct_base", "spread_pct_new"]].fillna(0).max(axis=1).clip(lower=MIN_MOVE_PCT)
    both["noise_pct"] = noise
    move = 100 * (both["ratio"] - 1)
    both["verdict"] = [
        "faster" if m > n else "slower" if -m > n else "same" for m, n in zip(move, noise, strict=True)
    ]
    only_base = joined[joined["_merge"] == "left_only"][CELL]
    only_new = joined[joined["_merge"] == "right_only"][CELL]
    return both.sort_values(CELL).reset_index(drop=True), only_base, only_new


def differences(base_runs: Any, new_runs: Any) -> list[tuple[str, str, str]]:
    """(name, BASE's values, NEW's values) for every param, version tag and context tag whose values
    differ between the sides."""
    names = [
        c
        for c in sorted(set(base_runs.columns) | set(new_runs.columns))
        if (c.startswith(("params.", "tags.version.")) or c in {f"tags.{t}" for t in CONTEXT_TAGS})
        and c not in {f"params.{p}" for p in CELL_PARAMS}
    ]
    out = []
    for name in names:
        values = []
        for runs in (base_runs, new_runs):
            column = runs[name].dropna() if name in runs else []
            values.append(", ".join(sorted({str(v) for v in column})) or "-")
        if values[0] != values[1] and not name.startswith("params.measure.timeout"):
            out.append((name.split(".", 1)[1], values[0], values[1]))
    return out


def slower_beyond(both: Any, pct: float) -> Any:
    """The cells slower by more than `pct`% beyond their noise."""
    drop = 100 * (1 - both["ratio"])
    return both[(both["verdict"] == "slower") & (drop - both["noise_pct"] > pct)]


def plot(both: Any, out: Path, label: Any) -> Path | None:
    """The ratios per model, one panel each, a 1.0 line; None when no cell is on both sides."""
    if both.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(both["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5), squeeze=False)
    colours = {"faster": "tab:green", "slower": "tab:red", "same": "tab:gray"}
    for ax, model in zip(axes[0], models, strict=True):
        rows = both[both["model"] == model]
        names = [f"{label(r)} b{r['batch']}" for _, r in rows.iterrows()]
        ax.barh(names, rows["ratio"], color=[colours[v] for v in rows["verdict"]])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(model)
        ax.set_xlabel("images/s, NEW / BASE")
    fig.tight_layout()
    path = out / "compare_ratios.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(
    sides: tuple[str, str], tidy: tuple[Any, Any], runs: tuple[Any, Any], out: Path, label: Any, markdown: Any
) -> tuple[list[Path], Any]:
    """compare.md, compare.csv and the plot in `out`; returns the files and the joined cells."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    both, only_base, only_new = cells(*tidy)
    table = both.assign(configuration=[label(r) for _, r in both.iterrows()])
    columns = ["model", "shape", "batch", "gpu", "configuration", "img_s_base", "img_s_new", "ratio"]
    shown = table[[*columns, "noise_pct", "verdict", "p99_ms_base", "p99_ms_new"]]
    counts = both["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("faster", "slower", "same"))
    diff = differences(*runs)
    parts = [
        "# Comparison\n",
        f"BASE: {sides[0]}. NEW: {sides[1]}. Ratio = NEW / BASE images/s; a move counts when it exceeds the "
        f"larger spread of the two cells and {MIN_MOVE_PCT:g}% (docs/metrics.md).\n",
        f"{len(both)} cells on both sides: {summary}.\n",
        "## Cells\n",
        markdown(shown),
        "## What differs between the sides\n",
        markdown(pd.DataFrame(diff, columns=["setting", "BASE", "NEW"])) if diff else "Nothing recorded.\n",
        "## Cells on one side only\n",
        f"BASE only ({len(only_base)}):\n\n" + markdown(only_base),
        f"NEW only ({len(only_new)}):\n\n" + markdown(only_new),
    ]
    png = plot(both, out, label)
    if png:
        parts += ["## Ratios\n", f"![ratios]({png.name})\n"]
    (out / "compare.md").write_text("\n".join(parts), encoding="utf-8")
    shown.to_csv(out / "compare.csv", index=False)
    return [out / "compare.md", out / "compare.csv", *([png] if png else [])], both
