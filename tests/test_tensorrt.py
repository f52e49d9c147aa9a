"""The TensorRT backend: what can be checked without TensorRT (unavailable path, typing per release, cache
keys, the torch.export step) and, marked `tensorrt`, real engines where torch_tensorrt imports."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import torch
import torchvision

from src.backends.support.engine_cache import EngineCache, cache_key, key_inputs
from src.backends.support.exporting import export_program
from src.backends.tensorrt import INSTALL_HINT, TensorRT, typing_kwargs
from src.child.job import place
from src.models import MODELS
from src.parent.launch import run_in_child
from src.shared.errors import Status
from tests.conftest import QUICK, make_spec, run_bench, tensorrt_missing

GPU = {"name": "NVIDIA H200", "capability": "9.0"}
VERSIONS = {"torch": "2.14.1", "torch_tensorrt": "2.14.0", "tensorrt": "11.1.0"}


def test_without_tensorrt_or_a_gpu_the_job_is_unavailable_with_the_install_hint(tmp_path: Path) -> None:
    if tensorrt_missing() is None:
        pytest.skip("torch_tensorrt imports here: the real tests below cover this machine")
    result = run_in_child(
        make_spec("backend=tensorrt", "smoke=true", "batch_size=2", *QUICK), tmp_path / "job"
    )
    assert result.status is Status.UNAVAILABLE
    if torch.cuda.is_available():
        assert "cannot be imported" in result.reason and INSTALL_HINT in result.reason
    else:
        assert result.reason == "TensorRT needs a CUDA GPU; this job runs on cpu"
    assert result.tags["backend_version"] in ("not installed",) or result.tags["backend_version"][0].isdigit()


def test_a_missing_torch_tensorrt_is_named_with_the_install_hint() -> None:
    backend = TensorRT(TensorRT.Options(), make_spec("backend=tensorrt"))
    why = backend.unavailable(torch.device("cuda"))  # only the device type is read before the imports
    try:
        import tensorrt  # noqa: F401
        import torch_tensorrt  # noqa: F401
    except Exception:
        assert why.startswith("torch_tensorrt/tensorrt cannot be imported (") and why.endswith(INSTALL_HINT)
    else:
        assert why is None


def test_a_sweep_with_tensorrt_goes_on_and_records_why_it_could_not_run(store: str, tmp_path: Path) -> None:
    if tensorrt_missing() is None:
        pytest.skip("torch_tensorrt imports here")
    args = ["-m", "backend=eager,tensorrt", "precision=fp32,fp16", "smoke=true", "batch_size=2", *QUICK]
    out = run_bench([*args, "gpu=cpu", f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-2000:]
    mlflow.set_tracking_uri(store)
    jobs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.kind = 'job'")
    by_backend = jobs.groupby("params.backend")["tags.status"].apply(set).to_dict()
    assert by_backend["tensorrt"] == {"unavailable"}
    assert by_backend["eager"] == {"ok"} or by_backend["eager"] == {"ok", "failed"}  # fp16 on some CPUs


@pytest.mark.parametrize(
    ("version", "dtype", "kwargs", "label"),
    [
        ("2.9.0", torch.float16, {"enabled_precisions": {torch.float16}}, "weak typing: enabled_precisions="),
        ("2.9.1", torch.float32, {}, "weak typing (fp32 engine)"),
        ("2.10.0", torch.float16, {"use_explicit_typing": True}, "explicit typing: use_explicit_typing=True"),
        (
            "2.12.1",
            torch.bfloat16,
            {"use_explicit_typing": True},
            "explicit typing: use_explicit_typing=True",
        ),
        ("2.13.0", torch.float16, {}, "explicit typing (the graph's dtypes"),
        ("2.14.0", torch.float16, {}, "explicit typing (the graph's dtypes"),
    ],
)
def test_fp16_is_asked_for_the_way_each_release_wants(version, dtype, kwargs, label) -> None:
    got, tag = typing_kwargs(version, dtype)
    assert got == kwargs and tag.startswith(label)


def key(job, device=GPU, versions=VERSIONS, settings=None) -> str:
    return cache_key(key_inputs(job, device, versions, settings or {"min_block_size": 5}))


def test_the_engine_cache_key_covers_everything_that_changes_an_engine(tmp_path: Path) -> None:
    base = make_spec("backend=tensorrt", "precision=fp16", "batch_size=32")
    k = key(base)
    assert k == key(make_spec("backend=tensorrt", "precision=fp16", "batch_size=32"))  # stable
    # what does not change the engine does not change the key
    assert k == key(replace(base, measure=replace(base.measure, min_iters=99, timeout_s=5)))
    assert k == key(replace(base, telemetry=replace(base.telemetry, sample_hz=0)))
    changed = [
        make_spec("backend=tensorrt", "precision=fp16", "batch_size=256"),
        make_spec("backend=tensorrt", "precision=fp32", "batch_size=32"),
        make_spec("backend=tensorrt", "precision=fp16", "batch_size=32", "model.variant=densenet121"),
        make_spec("backend=tensorrt", "precision=fp16", "batch_size=32", "model.input_shape=[3,256,256]"),
        make_spec("backend=tensorrt", "precision=fp16", "batch_size=32", "channels_last=true"),
        make_spec("backend=tensorrt", "precision=fp16", "batch_size=32", "model.options.num_classes=10"),
        make_spec(
            "backend=tensorrt", "precision=fp16", "batch_size=32", "measure.seed=1"
        ),  # other random weights
        make_spec("backend=tensorrt", "precision=fp16", "batch_size=32", "model=yolo"),
    ]
    keys = {key(job) for job in changed}
    assert k not in keys and len(keys) == len(changed)
    assert key(base, device={"name": "NVIDIA L4", "capability": "8.9"}) != k
    assert key(base, versions={**VERSIONS, "tensorrt": "11.2.0"}) != k
    assert key(base, settings={"min_block_size": 3}) != k
    weights = tmp_path / "w.pt"

    def save_weights(seed: int) -> None:  # a real state dict: weights files are checked
        torch.manual_seed(seed)
        torch.save(torchvision.models.densenet201().state_dict(), weights)

    save_weights(1)
    with_file = make_spec("backend=tensorrt", "precision=fp16", "batch_size=32", f"model.weights={weights}")
    first = key(with_file)
    assert first == key(
        replace(with_file, measure=replace(with_file.measure, seed=7))
    )  # seed moot with a file
    save_weights(2)
    assert key(with_file) != first  # the file's content, not its name


def test_a_cache_entry_counts_only_once_complete(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, "tensorrt")
    (tmp_path / "tensorrt" / "abc").mkdir(parents=True)  # a build that died half-way
    assert cache.lookup("abc") is None
    src = tmp_path / "program.ep"
    src.write_bytes(b"\x00program")
    entry = cache.store("def", {"program.ep": src}, {"engines": 2})
    assert cache.lookup("def") == {"engines": 2}
    assert (entry / "program.ep").read_bytes() == b"\x00program"
    cache.store("def", {"program.ep": src}, {"engines": 3})  # a second writer keeps the first entry
    assert json.loads((entry / "meta.json").read_text()) == {"engines": 2}


@pytest.mark.parametrize("model_name", ["densenet", "yolo", "segresnet"])
def test_each_model_exports_and_the_program_matches_eager(model_name: str) -> None:
    """Everything up to TensorRT, on the CPU at tiny shapes (scripts/export_check.py does it on a GPU at the
    study's shapes, fp32 and fp16)."""
    spec = make_spec(f"model={model_name}", "backend=tensorrt", "smoke=true", "batch_size=2")
    model, x = place(MODELS.get(model_name).build(spec.model), spec, torch.device("cpu"))
    with torch.inference_mode():
        expected = model(x)
    program, seconds = export_program(model, x)
    assert seconds > 0
    with torch.inference_mode():
        torch.testing.assert_close(program.module()(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(x), expected)  # exporting left the model itself intact


@pytest.mark.tensorrt
def test_real_engines_are_built_cached_and_logged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    spec = make_spec("backend=tensorrt", "precision=fp16", "batch_size=8", *QUICK)
    first = run_in_child(spec, tmp_path / "first")
    assert first.status is Status.OK, first.reason
    assert first.tags["tensorrt_engine_cache"] == "miss" and first.metrics["tensorrt_engines"] >= 1
    assert first.metrics["engine_build_s"] > 0 and first.tags["tensorrt_typing"]
    files = {p.name for p in (tmp_path / "first" / "artifacts" / "engine").iterdir()}
    assert "program.ep" in files and "engine_0.plan" in files
    second = run_in_child(spec, tmp_path / "second")
    assert second.status is Status.OK and second.tags["tensorrt_engine_cache"] == "hit"
    assert second.metrics["build_time_s"] < first.metrics["build_time_s"]
