"""The real models, built from code without network, at tiny shapes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src import PROJECT_ROOT
from src.models import MODELS
from tests.conftest import make_spec


def build_and_run(*overrides: str, batch: int = 2) -> torch.Tensor:
    spec = make_spec("smoke=true", f"batch_size={batch}", *overrides)
    model = MODELS.get(spec.model.name).build(spec.model)
    assert not model.training
    with torch.inference_mode():
        return model(torch.randn(spec.batch_shape))


def test_densenet201_classifies() -> None:
    spec = make_spec()
    model = MODELS.get("densenet").build(spec.model)
    assert sum(p.numel() for p in model.parameters()) == 20_013_928  # torchvision's DenseNet201
    assert build_and_run("model=densenet").shape == (2, 1000)


def test_yolo_returns_the_raw_prediction_tensor() -> None:
    out = build_and_run("model=yolo")  # 64x64: 8x8 + 4x4 + 2x2 anchors, 4 box + 80 class channels
    assert out.shape == (2, 84, 84)


def test_yolo_postprocess_appends_nms() -> None:
    out = build_and_run("model=yolo", "model.options.postprocess=true")
    assert isinstance(out, list) and len(out) == 2 and out[0].shape[1] == 6


def test_segresnet_segments_with_the_brats_settings() -> None:
    spec = make_spec("model=segresnet", "smoke=true")
    model = MODELS.get("segresnet").build(spec.model)
    assert model.init_filters == 16 and model.blocks_down == (1, 2, 2, 4) and model.blocks_up == (1, 1, 1)
    assert build_and_run("model=segresnet", batch=1).shape == (1, 3, 16, 16, 16)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("densenet", []), ("yolo", ["model.options.fuse=false"]), ("segresnet", ["smoke=true"])],
)
def test_each_model_declares_the_normalisation_layers_its_network_holds(
    name: str, overrides: list[str]
) -> None:
    """`norms` is what the real network holds (YOLO unfused: fused, its BatchNorms are gone)."""
    model = MODELS.get(name).build(make_spec(f"model={name}", *overrides).model)
    held = {type(m).__name__ for m in model.modules() if type(m).__module__.startswith("torch.nn.")}
    assert {layer for layer in held if "Norm" in layer} == MODELS.get(name).norms


def test_weights_come_from_a_local_file(tmp_path: Path) -> None:
    spec = make_spec("model=segresnet", "smoke=true")
    reference = MODELS.get("segresnet").build(spec.model)
    path = tmp_path / "segresnet.pt"
    torch.save(reference.state_dict(), path)
    loaded = MODELS.get("segresnet").build(make_spec("model=segresnet", f"model.weights={path}").model)
    for a, b in zip(reference.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_ultralytics_stays_offline_and_writes_nothing_in_home(tmp_path: Path) -> None:
    """Build the YOLO model in a fresh interpreter whose HOME is empty: nothing may land there."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONPATH=str(PROJECT_ROOT))
    code = (
        "import json, os; from tests.conftest import make_spec; from src.models import MODELS;"
        "MODELS.get('yolo').build(make_spec('model=yolo').model);"
        "print(json.dumps({k: os.environ[k] for k in ('YOLO_OFFLINE', 'YOLO_CONFIG_DIR')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["YOLO_OFFLINE"] == "1"
    assert str(home) not in seen["YOLO_CONFIG_DIR"]
    assert list(home.rglob("*")) == []
