"""Model registry: `conf/model/<name>.yaml` <-> the class registered as `<name>` in this package."""

from src.models.base import MODELS, ModelDef

__all__ = ["MODELS", "ModelDef"]
