"""The report's "Largest batch and the knee": for every configuration measured at three or more batch sizes
(`+experiment=max_batch` makes such runs; a study sweep's SegResNet rows are another), the largest batch
that ran, the smallest that ran out of memory above it, and the knee: the smallest batch within
KNEE_GROWTH_PCT of the configuration's highest throughput, beyond which a larger batch adds less than that.
"""

from __future__ import annotations

from typing import Any

KNEE_GROWTH_PCT = 10.0  # a larger batch than the knee raises throughput by less than this (docs/metrics.md)
CONFIG = ["gpu", "model", "shape", "backend", "precision", "tf32", "channels_last", "mode"]
MIN_BATCHES = 3  # a configuration measured at fewer batch sizes has no curve to speak of


def knee(points: list[tuple[int, float]], growth_pct: float = KNEE_GROWTH_PCT) -> int | None:
    """The smallest batch whose throughput is within `growth_pct` of the highest: every larger batch
    measured raises it by less than that share. `points`: (batch, images/s) of the runs that fit."""
    if not points:
        return None
    top = max(img_s for _, img_s in points)
    return min(b for b, img_s in points if img_s * (1 + growth_pct / 100) >= top)


def curves(wide: Any) -> Any:
    """Each configuration with MIN_BATCHES batch sizes or more that ran ok or out of memory: its key
    (CONFIG's values), its runs, and those that ran ok with a figure, in CONFIG's order."""
    tried = wide[wide["status"].isin(["ok", "oom"])]
    for key, g in tried.groupby(CONFIG, dropna=False):
        if g["batch"].nunique() >= MIN_BATCHES:
            yield key, g, g[(g["status"] == "ok") & g["img_s"].notna()].sort_values("batch")


def scaling(wide: Any, label: Any) -> Any:
    """One row per configuration of `curves`, in its order."""
    import pandas as pd

    rows = []
    for key, g, ok in curves(wide):
        fits = int(ok["batch"].max()) if not ok.empty else None
        above = g[(g["status"] == "oom") & ((g["batch"] > fits) if fits else True)]
        points = [(int(b), float(v)) for b, v in zip(ok["batch"], ok["img_s"], strict=True)]
        bend = knee(points)
        first = g.iloc[0]
        rows.append(
            {
                **dict(zip(CONFIG[:3], key[:3], strict=True)),
                "configuration": label(first),
                "batches_tried": int(g["batch"].nunique()),
                "largest_fitting_batch": fits,
                "smallest_oom_batch": int(above["batch"].min()) if not above.empty else None,
                "knee_batch": bend,
                "img_s_at_knee": dict(points).get(bend) if bend else None,
                "max_img_s": max(v for _, v in points) if points else None,
                "at_batch": max(points, key=lambda p: p[1])[0] if points else None,
            }
        )
    return pd.DataFrame(rows)


INTRO = (
    "Per configuration measured at three or more batch sizes: the largest batch that ran, the smallest that "
    f"ran out of memory above it, and the knee, the smallest batch within {KNEE_GROWTH_PCT:g}% of the "
    "highest throughput measured (a larger batch adds less than that). With `+experiment=max_batch` the "
    "two batches are the search's bounds; otherwise they are only the batches that were run.\n"
)
