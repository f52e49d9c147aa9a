"""torch.compile, CUDA graphs, AOTInductor and ONNX Runtime on the real models (tiny shapes): outputs
match eager, artifacts load, caches are hit on a repeat, what a backend cannot run is refused, with why."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

from src.backends.onnxruntime import OnnxRuntime
from src.backends.support import precompile
from src.parent.config import unsupported_combination
from src.parent.launch import run_in_child
from src.shared.errors import ConfigError, Status, Unavailable
from tests.conftest import QUICK, make_spec, run_bench
from tests.test_backends import prepared

CPU = torch.device("cpu")


def outputs(backend, model, x):
    fn = backend.prepare(model, x)
    with torch.inference_mode():
        expected, got = model(x), fn(x)
    return expected, got[0] if isinstance(got, (list, tuple)) else got


@pytest.mark.slow
def test_a_repeated_compile_sweep_hits_inductors_caches(store: str, tmp_path: Path) -> None:
    """Two jobs compiling the same graph, each in its own process: the second reads the first's cache."""
    from mlflow import MlflowClient

    cache = tmp_path / "cache"
    args = ["-m", "model=segresnet", "smoke=true", "batch_size=2", "backend=compile", "gpu=cpu", *QUICK]
    args += ["measure.warmup_iters=1,2", f"backend.options.cache_dir={cache}", f"tracking.uri={store}"]
    args.append("backend.options.precompile=false")  # the JIT path, which Inductor's caches serve
    out = run_bench(args, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.kind = 'job'",
        order_by=["start_time ASC"],
    )
    assert [r.data.tags["status"] for r in runs] == ["ok", "ok"]
    first, second = (r.data for r in runs)
    assert first.tags["inductor_cache"] == "miss" and second.tags["inductor_cache"] == "hit"
    assert first.tags["graph_breaks"] == "0" and first.metrics["dynamo_recompiles_timed"] == 0
    assert second.metrics["compile_s"] < first.metrics["compile_s"]
    assert (cache / "inductor").is_dir()


def test_compile_matches_eager_on_the_cpu(tmp_path: Path) -> None:
    backend, model, x = prepared(
        "backend=compile", "model=segresnet", f"backend.options.cache_dir={tmp_path}"
    )
    expected, got = outputs(backend, model, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert backend.metrics["dynamo_unique_graphs"] >= 1 and backend.metrics["compile_s"] > 0


def test_compile_precompiles_once_then_loads_and_falls_back_when_the_module_is_bad(tmp_path: Path) -> None:
    """Dynamo's precompile: the first job traces and stores the compiled module, the next loads it without
    tracing (and runs it with its own model's weights); a module that no longer loads is removed and the
    job compiles on its first call instead."""
    settings = ("backend=compile", "model=segresnet", f"backend.options.cache_dir={tmp_path}")

    def job(tag: str, graphs: int):
        backend, model, x = prepared(*settings)  # a new model: new random weights
        expected, got = outputs(backend, model, x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        assert backend.tags["precompile"].startswith(tag), backend.tags["precompile"]
        assert backend.metrics["dynamo_unique_graphs"] == graphs
        backend.close()

    job("miss", 1)
    (module,) = (tmp_path / "compile").glob("*/module.bin")
    job("hit", 0)
    module.write_bytes(b"not a compiled module")
    job("off: failed, compiled on the first call instead", 1)
    assert not module.parent.exists()  # the bad module was removed: the next job stores a new one
    assert "records CUDA graphs" in (precompile.problem("reduce-overhead") or "")
    assert "freezing" in (precompile.problem("default", {"freezing": True}) or "")  # fails after a compile


def test_aotinductor_builds_a_loadable_package_and_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cxx = shutil.which("g++") or shutil.which("c++")  # the compiler asked for is the one used and recorded
    settings = ("backend=aotinductor", "model=segresnet", f"backend.options.cache_dir={tmp_path / 'cache'}")
    backend, model, x = prepared(*settings, f"backend.options.cxx={cxx}")
    expected, got = outputs(backend, model, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert backend.tags["aoti_package_cache"] == "miss" and backend.metrics["aoti_compile_s"] > 0
    assert backend.tags["aoti_cxx"] == cxx
    (package,) = backend.export(tmp_path / "engine")
    assert package.name == "model.pt2" and package.stat().st_size > 0
    with torch.inference_mode():
        reloaded = torch._inductor.aoti_load_package(str(package))(x)
    torch.testing.assert_close(reloaded, expected, rtol=1e-4, atol=1e-4)

    def compare_hosts(device_type: str) -> None:  # aoti_load_package's host check: probes per CPU ISA
        raise AssertionError("the cached package was loaded through the host comparison")

    monkeypatch.setattr(torch._inductor.codecache, "get_device_information", compare_hosts)
    again, model, x = prepared(*settings, f"backend.options.cxx={cxx}")
    _, got_again = outputs(again, model, x)
    assert again.tags["aoti_package_cache"] == "hit" and "aoti_compile_s" not in again.metrics
    torch.testing.assert_close(got_again, expected, rtol=1e-4, atol=1e-4)
    backend.close()  # the scratch folders, as the child removes them
    again.close()


def test_aotinductor_freezes_the_weights_into_its_package_when_asked(tmp_path: Path) -> None:
    """`freezing`: the package's constants are Inductor's folded ones, not the model's parameters, and a
    package built without it is not reused for it (the setting is in the cache key)."""
    cache = f"backend.options.cache_dir={tmp_path / 'cache'}"
    plain, model, x = prepared("backend=aotinductor", "model=segresnet", cache)
    outputs(plain, model, x)
    frozen, model, x = prepared(
        "backend=aotinductor", "model=segresnet", cache, "backend.options.freezing=true"
    )
    expected, got = outputs(frozen, model, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert frozen.tags["aoti_package_cache"] == "miss"
    (package,) = frozen.export(tmp_path / "engine")
    names = torch._inductor.aoti_load_package(str(package)).get_constant_fqns()
    assert names and all(n.startswith("_frozen_param") for n in names), names
    plain.close()
    frozen.close()


@pytest.mark.parametrize("shape", [(2, 16, 5, 6, 7), (2, 16, 9, 10)])
@pytest.mark.parametrize("affine", [True, False])
def test_groupnorm_from_channel_statistics_is_groupnorm(shape: tuple[int, ...], affine: bool) -> None:
    """The rewrite behind `gn_channel_stats` computes what `nn.GroupNorm` does (in float64, the reference),
    on a channels-last input whose values sit far from zero: its variance comes from per-channel
    statistics, not from sums of squares (PyTorch's float32 GroupNorm on the CPU is 0.02-0.04 off here)."""
    from src.backends.support.groupnorm import ChannelStatsGroupNorm

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, shape[1], affine=affine)
    if affine:
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    fmt = torch.channels_last_3d if len(shape) == 5 else torch.channels_last
    per_channel = (1, shape[1], *[1] * (len(shape) - 2))
    means = 300 + torch.arange(shape[1], dtype=torch.float32).view(per_channel)  # they differ in a group
    x = (torch.randn(shape) * torch.rand(per_channel) + means).to(memory_format=fmt)
    with torch.no_grad():
        expected = copy.deepcopy(norm).double()(x.double()).float()
        torch.testing.assert_close(ChannelStatsGroupNorm(norm)(x), expected, rtol=1e-4, atol=5e-4)


def test_a_groupnorm_rewrite_candidate_compiles_segresnet_and_is_unsupported_without_groupnorm(
    tmp_path: Path,
) -> None:
    """The search's candidate, each job in its own child: SegResNet's 25 GroupNorms replaced, its output
    checked against eager fp32 and the flag in the run's name; DenseNet, which has none, `unsupported` (the
    child's own check, for a model that declares no `norms`; the Hydra process refuses it earlier)."""
    settings = ["+candidate=compile_fp16_cl_ro_freezing_gn", "smoke=true", "batch_size=2", "gpu=cpu", *QUICK]
    settings.append(f"backend.options.cache_dir={tmp_path / 'cache'}")
    spec = make_spec("model=segresnet", *settings)
    assert spec.label == "segresnet-compile-reduce-overhead+freezing+gn-channel-stats-fp16-cl-bs2"
    result = run_in_child(spec, tmp_path / "segresnet")
    assert result.status is Status.OK, result.reason
    assert result.tags["gn_channel_stats_replaced"] == "25" and result.tags["parity"] == "pass"
    result = run_in_child(make_spec("model=densenet", *settings), tmp_path / "densenet")
    assert result.status is Status.UNSUPPORTED and "has no GroupNorm" in result.reason, result.reason


@pytest.mark.parametrize("model_name", ["densenet", "yolo"])
def test_onnxruntime_on_the_cpu_matches_eager_and_logs_the_onnx_file(model_name: str, tmp_path: Path) -> None:
    backend, model, x = prepared("backend=onnxruntime", f"model={model_name}")
    assert backend.unavailable(CPU) is None
    expected, got = outputs(backend, model, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert backend.tags["onnxruntime_provider"] == "CPUExecutionProvider"
    (path,) = backend.export(tmp_path)
    assert path.name == "model.onnx" and path.stat().st_size > 1e6
    backend.close()


def test_onnxruntime_never_runs_a_gpu_job_on_another_provider() -> None:
    backend, _, _ = prepared("backend=onnxruntime")
    gpu = torch.device("cuda", 0)
    only_cpu = ["AzureExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(
        Unavailable, match=r"no TensorrtExecutionProvider or CUDAExecutionProvider .* onnxruntime-gpu"
    ):
        backend._choose(gpu, only_cpu)
    assert backend._choose(gpu, ["CUDAExecutionProvider", *only_cpu]) == "CUDAExecutionProvider"
    both = ["TensorrtExecutionProvider", "CUDAExecutionProvider", *only_cpu]
    assert backend._choose(gpu, both) == "TensorrtExecutionProvider"
    cuda_only = OnnxRuntime(OnnxRuntime.parse_options("onnxruntime", {"provider": "cuda"}), None)
    assert cuda_only._choose(gpu, both) == "CUDAExecutionProvider"
    assert backend._choose(CPU, only_cpu) == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backend=onnxruntime", "precision=bf16"], "cannot run precision 'bf16'; allowed: fp32, fp16"),
        (["backend=onnxruntime", "channels_last=true"], "cannot take a channels-last input"),
        (
            ["model=yolo", "+candidate=compile_fp16_cl_autotune_gn"],  # declared: ModelDef.norms
            "the model has no GroupNorm, so the run would repeat the one without it (model 'yolo' holds "
            "BatchNorm2d); allowed: a model with GroupNorm, or the option off",
        ),
    ],
)
def test_each_backend_declares_the_combinations_it_cannot_run(overrides: list[str], message: str) -> None:
    assert message in unsupported_combination(make_spec(*overrides))
    assert unsupported_combination(make_spec("backend=onnxruntime", "precision=fp16")) is None
    with_groupnorm = make_spec("model=segresnet", "+candidate=compile_fp16_cl_autotune_gn")
    assert unsupported_combination(with_groupnorm) is None


@pytest.mark.slow
def test_a_declared_combination_is_refused_alone_and_unsupported_in_a_sweep(store: str) -> None:
    from mlflow import MlflowClient

    single = run_bench(["backend=onnxruntime", "channels_last=true", f"tracking.uri={store}"], timeout=300)
    assert single.returncode == 2 and "cannot take a channels-last input" in single.stderr
    rewrite = ["model=densenet", "+candidate=compile_fp16_cl_ro_freezing_gn", f"tracking.uri={store}"]
    single = run_bench(rewrite, timeout=300)  # a rewrite of a layer DenseNet does not hold: refused unbuilt
    assert single.returncode == 2 and "the model has no GroupNorm" in single.stderr
    args = ["-m", "backend=eager,onnxruntime", "precision=bf16", "model=segresnet", "smoke=true", "gpu=cpu"]
    out = run_bench([*args, "batch_size=2", *QUICK, f"tracking.uri={store}"], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'job'")
    statuses = {
        r.data.params["backend"]: (r.data.tags["status"], r.data.tags.get("reason", "")) for r in runs
    }
    assert statuses["eager"][0] == "ok"
    assert statuses["onnxruntime"] == (
        "unsupported",
        "backend 'onnxruntime' cannot run precision 'bf16'; allowed: fp32, fp16",
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backend=compile", "backend.options.mode=fast"], "mode 'fast'; allowed: default, reduce-overhead"),
        (["backend=onnxruntime", "backend.options.provider=dml"], "allowed: auto, tensorrt, cuda, cpu"),
        (["backend=cudagraphs", "backend.options.warmup_calls=0"], "warmup_calls must be >= 1"),
        (["backend=aotinductor", "backend.options.cxx=/nonexistent/cc"], "cxx '/nonexistent/cc' is not an"),
    ],
)
def test_bad_backend_options_are_refused_up_front(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_spec(*overrides)


def test_tf32_is_a_precision_preset_and_shows_in_the_run_name() -> None:
    spec = make_spec("precision=tf32", "channels_last=true")
    assert (spec.precision, spec.tf32) == ("fp32", True)
    assert spec.label == "densenet-eager-tf32-cl-bs32" and spec.params()["tf32"] == "true"
    assert make_spec("precision.tf32=false").label == "densenet-eager-fp32-notf32-bs32"


def test_cuda_graphs_and_fp16_onnxruntime_are_unsupported_on_the_cpu(tmp_path: Path) -> None:
    for overrides in (["backend=cudagraphs"], ["backend=onnxruntime", "precision=fp16"]):
        spec = make_spec("smoke=true", "batch_size=2", "gpu=cpu", *QUICK, *overrides)
        result = run_in_child(spec, tmp_path / overrides[0])
        assert result.status is Status.UNSUPPORTED, result.reason
        assert "CUDA GPU" in result.reason or "fp32 only" in result.reason


@pytest.mark.gpu
@pytest.mark.parametrize("backend_name", ["compile", "cudagraphs", "aotinductor"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fast_paths_run_on_the_gpu(backend_name: str, precision: str, tmp_path: Path) -> None:
    settings = [f"backend={backend_name}", f"precision={precision}", "model=yolo", "channels_last=true"]
    if backend_name != "cudagraphs":
        settings.append(f"backend.options.cache_dir={tmp_path / 'cache'}")
    spec = make_spec("smoke=true", "batch_size=4", *QUICK, *settings)
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK, result.reason
    assert result.params["device"] == "cuda:0" and result.metrics["throughput_img_s"] > 0


@pytest.mark.gpu
def test_a_frozen_package_matches_eager_on_the_gpu_and_loads_again(tmp_path: Path) -> None:
    cache = f"backend.options.cache_dir={tmp_path / 'cache'}"
    settings = ["backend=aotinductor", "backend.options.freezing=true", "precision=fp16", cache]
    for attempt, package in enumerate(("miss", "hit")):
        spec = make_spec("smoke=true", "batch_size=4", "model=yolo", "channels_last=true", *QUICK, *settings)
        result = run_in_child(spec, tmp_path / f"job{attempt}")
        assert result.status is Status.OK, result.reason
        assert result.tags["aoti_package_cache"] == package and result.tags["parity"] == "pass"


@pytest.mark.gpu
def test_a_gpu_onnxruntime_job_without_a_gpu_provider_is_unavailable(tmp_path: Path) -> None:
    import onnxruntime

    spec = make_spec("smoke=true", "batch_size=2", *QUICK, "backend=onnxruntime")
    result = run_in_child(spec, tmp_path / "job")
    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers()):
        assert result.status is Status.OK, result.reason
        assert result.tags["onnxruntime_provider"] != "CPUExecutionProvider"
    else:
        assert result.status is Status.UNAVAILABLE and "onnxruntime-gpu" in result.reason


def test_the_private_aoti_loader_takes_what_torchs_own_load_package_passes() -> None:
    """`load_package` calls Inductor's package loader directly (torch's `load_package` does, with these
    five arguments): a torch that renames or reshapes it fails here, not silently in a sweep."""
    import inspect

    from torch._inductor.package import package

    doc = torch._C._aoti.AOTIModelPackageLoader.__init__.__doc__
    assert "arg0: str, arg1: str, arg2: bool, arg3:" in doc and "arg4:" in doc
    source = inspect.getsource(package.load_package)
    assert "AOTIModelPackageLoader(\n" in source or "AOTIModelPackageLoader(" in source
    assert "path, model_name, run_single_threaded, num_runners, device_index" in source
