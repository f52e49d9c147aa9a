"""A cache of built engines, keyed by everything that changes an engine.

The key covers the model (name, variant, options, input shape, and the weights: a digest of the weights
file, or the seed of the random initialisation), the batch size, precision and layout, the GPU (name and
compute capability), the library versions and the backend's compile settings. A repeated sweep then reuses
an engine instead of rebuilding it, and the run records whether it did. Entries are folders:
`<root>/<backend>/<key>/` holding the backend's files and `meta.json` (the key's inputs and what the build
found, e.g. how many engines and fallback operators).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.shared.envinfo import cpu_model
from src.shared.spec import JobSpec

if TYPE_CHECKING:
    import torch


def cache_root(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    default = os.environ.get("BENCH_CACHE_DIR") or Path.home() / ".cache" / "gpu-inference-bench"
    return Path(default)


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_inputs(
    job: JobSpec, device: dict[str, str], versions: dict[str, str], settings: dict[str, Any]
) -> dict:
    model = job.model.identity()
    model["input_shape"] = list(job.model.input_shape)
    model["weights"] = f"sha256:{file_digest(job.model.weights)}" if job.model.weights else None
    return {
        "model": model,
        "seed": None if job.model.weights else job.measure.seed,  # random weights depend on the seed
        "batch_size": job.batch_size,
        "precision": job.precision,
        "tf32": job.tf32,
        "channels_last": job.channels_last,
        "backend": job.backend.name,
        "device": device,
        "versions": versions,
        "settings": settings,
    }


def cache_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:32]


class EngineCache:
    def __init__(self, root: Path, backend: str) -> None:
        self.root = root / backend

    def entry(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The entry's metadata if a complete entry exists (a half-written one never counts)."""
        meta = self.entry(key) / "meta.json"
        return json.loads(meta.read_text()) if meta.is_file() else None

    def store(self, key: str, files: dict[str, Path], meta: dict[str, Any]) -> Path:
        """Copy the files in, write meta.json last, then move the folder into place in one rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        for name, src in files.items():
            shutil.copy(src, staging / name)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        final = self.entry(key)
        try:
            staging.rename(final)
        except OSError:  # another job stored the same key meanwhile: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
        return final


def device_identity(device: torch.device) -> dict[str, str]:
    """What of the device changes compiled code: the GPU's name and compute capability, or the CPU's."""
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"name": props.name, "capability": f"{props.major}.{props.minor}"}
    return {"name": cpu_model(), "capability": "cpu"}
