"""Dense peak throughput of known cards, in TFLOPS, per arithmetic: what "share of the card's peak" is
measured against.

Figures are NVIDIA's datasheet numbers without structured sparsity (the datasheets print the sparse ones
too, twice as large): tensor-core FP16 and BF16 (FP32 accumulate where the datasheet distinguishes it),
TF32 tensor-core, and plain FP32 (CUDA cores). A card is found by the first pattern its name (as NVML
reports it) matches; a card that is not listed has no peak, and its runs log no share.
"""

from __future__ import annotations

import re

# (pattern on the card's name, {arithmetic: dense TFLOPS}, source)
PEAKS: tuple[tuple[str, dict[str, float], str], ...] = (
    (r"H200 NVL", {"fp16": 835.0, "bf16": 835.0, "tf32": 418.0, "fp32": 60.0}, "NVIDIA H200 NVL datasheet"),
    (r"H200", {"fp16": 989.5, "bf16": 989.5, "tf32": 494.7, "fp32": 67.0}, "NVIDIA H200 SXM datasheet"),
    (r"H100 NVL", {"fp16": 835.0, "bf16": 835.0, "tf32": 418.0, "fp32": 60.0}, "NVIDIA H100 NVL datasheet"),
    (r"H100 PCIe", {"fp16": 756.5, "bf16": 756.5, "tf32": 378.0, "fp32": 51.0}, "NVIDIA H100 PCIe datasheet"),
    (r"H100", {"fp16": 989.5, "bf16": 989.5, "tf32": 494.7, "fp32": 67.0}, "NVIDIA H100 SXM datasheet"),
    (r"A100", {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0, "fp32": 19.5}, "NVIDIA A100 datasheet"),
    (r"L40S", {"fp16": 362.1, "bf16": 362.1, "tf32": 183.0, "fp32": 91.6}, "NVIDIA L40S datasheet"),
    (r"RTX A6000", {"fp16": 154.8, "bf16": 154.8, "tf32": 77.4, "fp32": 38.7}, "NVIDIA RTX A6000 datasheet"),
    (r"\bA10\b", {"fp16": 125.0, "bf16": 125.0, "tf32": 62.5, "fp32": 31.2}, "NVIDIA A10 datasheet"),
    (r"\bL4\b", {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0, "fp32": 30.3}, "NVIDIA L4 datasheet"),
    (r"\bA2\b", {"fp16": 18.0, "bf16": 18.0, "tf32": 9.0, "fp32": 4.5}, "NVIDIA A2 datasheet"),
    (r"V100.*PCIE", {"fp16": 112.0, "fp32": 14.0}, "NVIDIA V100 PCIe datasheet"),
    (r"V100", {"fp16": 125.0, "fp32": 15.7}, "NVIDIA V100 SXM2 datasheet"),
    (r"\bT4\b", {"fp16": 65.0, "fp32": 8.1}, "NVIDIA T4 datasheet"),
)


def peak_tflops(card: str, arithmetic: str) -> tuple[float, str] | None:
    """The card's dense peak for this arithmetic (fp32, tf32, fp16, bf16) and its source, or None. A card
    without TF32 (before Ampere) computes TF32 requests in FP32."""
    for pattern, peaks, source in PEAKS:
        if re.search(pattern, card, flags=re.IGNORECASE):
            value = peaks.get(arithmetic) or (peaks.get("fp32") if arithmetic == "tf32" else None)
            return (value, source) if value else None
    return None
