"""Backend registry: `conf/backend/<name>.yaml` <-> the class registered as `<name>` in this package."""

from src.backends.base import BACKENDS, Backend

__all__ = ["BACKENDS", "Backend"]
