"""GPU inference benchmark: Hydra sweeps -> isolated, measured jobs -> MLflow."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
