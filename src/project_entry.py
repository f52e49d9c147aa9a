"""`mlflow run` entry: MLflow passes the `overrides` parameter as ONE shell-quoted word; split it here
(shell rules, so quoted values keep their spaces) and hand the words to the Hydra entry point."""

from __future__ import annotations

import shlex
import sys

from src import bench
from src.parent.config import shorthands

if __name__ == "__main__":
    sys.argv = shorthands([sys.argv[0], *(word for arg in sys.argv[1:] for word in shlex.split(arg))])
    sys.exit(bench.run())
