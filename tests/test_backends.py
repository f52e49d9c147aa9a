"""Eager and TorchScript on the real models (tiny shapes, CPU): outputs, artifacts, refusals, fuser choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.backends import BACKENDS
from src.backends.torchscript import MAX_NNC_CAT_INPUTS, max_cat_inputs
from src.child.job import place
from src.models import MODELS
from src.shared.errors import Unsupported
from tests.conftest import make_spec

CPU = torch.device("cpu")


def prepared(*overrides: str):
    spec = make_spec("smoke=true", "batch_size=2", *overrides)
    backend_cls = BACKENDS.get(spec.backend.name)
    backend = backend_cls(backend_cls.parse_options(spec.backend.name, spec.backend.options), spec)
    model, x = place(MODELS.get(spec.model.name).build(spec.model), spec, CPU)
    return backend, model, x


def test_eager_is_the_model_itself() -> None:
    backend, model, x = prepared("backend=eager")
    assert backend.prepare(model, x) is model
    assert backend.export(Path("unused")) == []


@pytest.mark.parametrize("model_name", ["densenet", "yolo", "segresnet"])
def test_torchscript_matches_eager_and_saves_a_loadable_file(model_name: str, tmp_path: Path) -> None:
    backend, model, x = prepared("backend=torchscript", f"model={model_name}")
    fn = backend.prepare(model, x)
    assert backend.tags["torchscript_method"] == "trace"
    assert backend.tags["torchscript_fuser"] == "nnc"  # on the CPU, PyTorch's default is kept
    with torch.inference_mode():
        expected, got = model(x), fn(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    (path,) = backend.export(tmp_path)
    assert path.name == "model.torchscript.pt" and path.stat().st_size > 0
    with torch.inference_mode():
        torch.testing.assert_close(torch.jit.load(str(path))(x), expected, rtol=1e-4, atol=1e-4)


def test_torchscript_script_method_is_used_when_asked() -> None:
    backend, model, x = prepared("backend=torchscript", "model=segresnet", "backend.options.method=script")
    backend.prepare(model, x)
    assert backend.tags["torchscript_method"] == "script"


def test_a_model_torchscript_cannot_handle_is_unsupported_with_the_reason() -> None:
    backend, model, x = prepared("backend=torchscript", "model=yolo", "model.options.postprocess=true")
    with pytest.raises(
        Unsupported, match=r"(?s)TorchScript cannot handle this model\. trace: .* \| script: "
    ):
        backend.prepare(model, x)


def test_fuser_auto_turns_nnc_off_for_wide_concatenations_on_a_gpu() -> None:
    backend, model, x = prepared("backend=torchscript", "model=densenet")
    traced = torch.jit.trace(model, x, check_trace=False)
    assert max_cat_inputs(traced.graph) == 49 > MAX_NNC_CAT_INPUTS  # DenseNet201's widest dense block
    was = torch._C._jit_texpr_fuser_enabled()
    try:
        backend._set_fuser(traced, torch.device("cuda"))  # only the device type is read
        assert backend.tags["torchscript_fuser"] == "none"
        assert "aten::cat of 49 inputs" in backend.tags["torchscript_fuser_reason"]
        assert not torch._C._jit_texpr_fuser_enabled()
        backend._set_fuser(traced, CPU)
        assert backend.tags["torchscript_fuser"] == "nnc"
    finally:
        torch._C._jit_set_texpr_fuser_enabled(was)


@pytest.mark.parametrize(
    ("model_name", "fmt"), [("densenet", "channels_last"), ("segresnet", "channels_last_3d")]
)
def test_channels_last_places_model_and_input_in_that_layout(model_name: str, fmt: str) -> None:
    backend, model, x = prepared("backend=eager", f"model={model_name}", "channels_last=true")
    memory_format = getattr(torch, fmt)
    assert x.is_contiguous(memory_format=memory_format) and not x.is_contiguous()
    weight = next(p for p in model.parameters() if p.dim() == x.dim())
    assert weight.is_contiguous(memory_format=memory_format)
    with torch.inference_mode():
        backend.prepare(model, x)(x)
