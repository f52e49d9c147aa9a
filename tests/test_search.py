"""The search for the fastest configuration: its compile candidates, FLOPs per image and the share of a
card's peak, the profiled window (where the time goes), and the budget shared by the study rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from src.child import flops
from src.child.profile import kind_of, profile
from src.models import MODELS
from src.parent import budget, order
from src.parent.follow import Position
from src.report import label
from src.shared.peaks import peak_tflops
from src.shared.results import KINDS, PROFILE
from src.shared.spec import variant
from tests.conftest import TEST_CONF, make_spec, run_bench

PLUGINS = "plugins=[tests.plugins.fault_models,tests.plugins.narrow_backend]"
FAULTS = [f"hydra.searchpath=[file://{TEST_CONF}]", PLUGINS, "gpu=cpu", "batch_size=2"]


def test_floating_point_operations_of_densenet201_match_its_published_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DenseNet201 at 224x224: 4.29 G multiply-adds (torchvision's model card), 8.58 GFLOP; counted once,
    then read from the cache."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    spec = make_spec("model=densenet", "gpu=cpu", "batch_size=1")
    model = MODELS.get("densenet").build(spec.model).eval()
    x = torch.randn(2, *spec.model.input_shape)
    with torch.inference_mode():
        counted, cached = flops.gflop_per_image(model, x, spec)
        again, cached_again = flops.gflop_per_image(model, x, spec)
    assert 8.5 < counted < 8.7 and not cached
    assert again == counted and cached_again
    assert len(list((tmp_path / "flops").glob("*.json"))) == 1


def test_a_card_s_peak_is_its_dense_datasheet_figure_for_the_arithmetic() -> None:
    assert peak_tflops("NVIDIA H200", "fp16") == (989.5, "NVIDIA H200 SXM datasheet")
    assert peak_tflops("NVIDIA H200 NVL", "fp16")[0] == 835.0
    assert peak_tflops("NVIDIA L4", "tf32")[0] == 60.0  # not the L40S's
    assert peak_tflops("NVIDIA L40S", "bf16")[0] == 362.1
    assert peak_tflops("Tesla V100-SXM2-32GB", "tf32")[0] == 15.7  # no TF32 before Ampere: FP32's
    assert peak_tflops("Tesla V100-SXM2-32GB", "bf16") is None
    assert peak_tflops("Some Future GPU", "fp16") is None


def test_kernels_are_put_in_kinds_by_their_names() -> None:
    """Names as the H200's profiles list them (cuDNN, ATen, Inductor's fused Triton kernels)."""
    cases = {
        "sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize256x32x32": "conv_matmul",
        "triton_tem_fused_convolution_3": "conv_matmul",
        "void cudnn::engines_precompiled::nhwcToNchwKernel<float, float, float, true>": "copy_cat",
        "Memcpy DtoD (Device -> Device)": "copy_cat",
        "triton_poi_fused_cat_relu_5": "copy_cat",
        "triton_poi_fused_clone_3": "copy_cat",  # nothing but a copy
        "aten::cat": "copy_cat",
        "triton_red_fused_clone_native_group_norm_0": "norm_pointwise",  # a norm that also copies
        "triton_poi_fused__to_copy__unsafe_index_add_arange_clamp_mul_sub_view_42": "norm_pointwise",
        "void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<float>": "norm_pointwise",
        "aten::batch_norm": "norm_pointwise",
        "## Call CompiledFxGraph None ##": "other",
    }
    assert {name: kind_of(name) for name in cases} == cases


def test_the_profiled_window_splits_a_real_model_s_time(tmp_path: Path) -> None:
    spec = make_spec("model=densenet", "gpu=cpu", "smoke=true", "batch_size=2")
    model = MODELS.get("densenet").build(spec.model).eval()
    x = torch.randn(spec.batch_shape)
    with torch.inference_mode():
        shares = profile(model, x, torch.device("cpu"), 3, tmp_path / "kernels.csv")
    m = shares.metrics()
    parts = [m[f"time_{k}_pct"] for k in KINDS]
    assert sum(parts) == pytest.approx(100.0)
    assert m["time_conv_matmul_pct"] > 30  # DenseNet's convolutions dominate its operators' time
    assert 0 <= m[PROFILE.idle_pct] < 100 and m[PROFILE.profile_window_ms] > 0
    with (tmp_path / "kernels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["kind"] in KINDS and float(rows[0]["total_ms"]) >= float(rows[-1]["total_ms"])
    assert any("convolution" in r["kernel"] for r in rows)


def test_a_candidate_s_mode_and_flags_name_its_runs_and_report_rows() -> None:
    spec = make_spec("model=yolo", "gpu=cpu", "+candidate=compile_fp16_cl_ro_freezing_cdt")
    assert spec.backend.options["freezing"] and spec.backend.options["coordinate_descent"]
    assert spec.label == "yolo-compile-reduce-overhead+freezing+coordinate-descent-fp16-cl-bs32"
    params = spec.params()
    assert params["backend.freezing"] == "true" and params["backend.mode"] == "reduce-overhead"
    row = {"backend": "compile", "precision": "fp16", "tf32": "default", "channels_last": "true"}
    assert label({**row, "mode": variant({"mode": "default", "freezing": "true"})}) == (
        "compile fp16 CL default+freezing"
    )
    assert variant({"mode": "default", "freezing": False}) == ""
    # a package is named after what it was built with
    package = make_spec(
        "backend=aotinductor", "backend.options.max_autotune=true", "backend.options.freezing=true"
    )
    assert package.label == "densenet-aotinductor-default+max-autotune+freezing-fp32-bs32"


def test_the_budget_gives_each_row_an_equal_share_of_what_the_rows_before_it_left(store: str) -> None:
    """A real store: the sweep's run and its job runs, with their models, batches and wall times."""
    client = MlflowClient(store)
    exp = client.create_experiment("budget")
    parent = client.create_run(exp, run_name="sweep").info.run_id

    def ran(model: str, batch: int, wall_s: float) -> None:
        tags = {"mlflow.parentRunId": parent}
        run = client.create_run(exp, tags=tags).info.run_id
        client.log_param(run, "model", model)
        client.log_param(run, "batch_size", str(batch))
        client.log_metric(run, "job_wall_s", wall_s)

    rows = ["densenet bs1"] * 3 + ["densenet bs2"] * 3 + ["yolo bs1"] * 3
    compiled = make_spec("model=densenet", "gpu=cpu", "backend=compile", "batch_size=2")
    ran("densenet", 1, 10.0)  # row densenet bs1 finished early: 10 s of its 30
    ran("densenet", 2, 5.0)
    share = budget.allowance(client, 90.0, compiled, parent, rows)
    assert share.refused is None
    assert share.left_s == pytest.approx((90 - 10) / 2 - 5)  # densenet bs2 and yolo bs1 share 80 s
    ran("densenet", 2, 40.0)
    spent = budget.allowance(client, 90.0, compiled, parent, rows)
    assert spent.left_s is None and "row densenet bs2 used its share" in spent.refused
    reference = make_spec("model=densenet", "gpu=cpu", "batch_size=2")
    assert budget.allowance(client, 90.0, reference, parent, rows).left_s is None  # always measured


def test_the_estimate_of_a_search_never_passes_its_budget(tmp_path: Path) -> None:
    where = Position(2, 10, 1000.0, tmp_path, budget_s=100.0)
    Position(1, 10, 1000.0, tmp_path).note(60.0, measured=True)
    assert where.line("x", now=1070.0) == "[2/10] x (elapsed 1m10s, ~40s left)"  # not 9 x 60 s


@pytest.mark.slow
def test_a_build_still_running_when_its_row_s_share_ends_is_stopped(store: str) -> None:
    """The `hang` model's first call sleeps for an hour: its job is stopped at the search's budget and
    recorded `skipped` with the reason (no failure: the sweep exits 0)."""
    args = ["-m", *FAULTS, "model=hang", "backend.name=memo", "search.budget_s=4"]
    out = run_bench([*args, "measure.timeout_s=300", f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind='job'")
    assert run.data.tags["status"] == "skipped"
    reason = run.data.tags["reason"]
    assert reason.startswith("stopped after") and "search.budget_s=4" in reason, reason
    assert run.data.metrics["job_wall_s"] < 60  # not its own 300 s timeout
    assert float(run.data.params["measure.timeout_s"]) <= 4  # what was left of the share, as it ran


@pytest.mark.slow
def test_a_compiled_candidate_runs_and_the_report_shows_its_compute_and_time(
    store: str, tmp_path: Path
) -> None:
    """Real SegResNet at its smoke shape: eager fp32 and CUDA graphs + freezing + coordinate descent
    (CUDA graphs do nothing on a CPU); FLOPs, TFLOPS and the profile are logged, the report shows them."""
    args = ["-m", "model=segresnet", "smoke=true", "batch_size=1", "gpu=cpu", "measure.profile=true"]
    cands = "+candidate=eager_fp32,compile_fp16_cl_ro_freezing_cdt"
    out = run_bench([*args, cands, "search.budget_s=1200", f"tracking.uri={store}"], timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = {r.data.params["backend"]: r for r in client.search_runs(exps, "tags.kind='job'")}
    compiled = runs["compile"]
    assert compiled.data.tags["status"] == "ok", compiled.data.tags.get("reason")
    assert (
        compiled.info.run_name == "segresnet-compile-reduce-overhead+freezing+coordinate-descent-fp16-cl-bs1"
    )
    assert int(compiled.data.tags["inductor_compile_threads"]) >= 1
    for run in runs.values():
        m = run.data.metrics
        assert m["gflop_per_image"] > 0
        assert m["achieved_tflops"] == pytest.approx(m["gflop_per_image"] * m["throughput_img_s"] / 1e3)
        assert "peak_used_pct" not in m  # a CPU has no peak in the table
        assert sum(m[f"time_{k}_pct"] for k in KINDS) == pytest.approx(100.0)
        phases = {k: v for k, v in m.items() if k.startswith("time_in_")}  # where the job's own time went
        names = ("setup", "build_model", "parity_reference", "place_model", "import_backend", "compile")
        for phase in (*names, "first_call", "measure", "count_flops", "profile"):
            assert phases[f"time_in_{phase}_s"] > 0, phase
        assert phases["time_in_compile_s"] >= m["build_time_s"]
        assert sum(phases.values()) <= m["job_wall_s"]
        files = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "profile_kernels.csv" in files
    assert runs["eager"].data.metrics["gflop_per_image"] == compiled.data.metrics["gflop_per_image"]
    (sweep,) = client.search_runs(exps, "tags.kind='sweep'")
    folder = Path(sweep.data.tags["sweep_dir"]) / "report"
    report = (folder / "report.md").read_text()
    assert "## Where the time goes" in report and "(best)" in report
    shares = report.split("## Where the time goes")[1].split("\n## ")[0]
    assert "| SM MHz | clock limits |" in shares  # a CPU has neither: no clock, no limits ("-")
    wide = list(csv.DictReader((folder / "wide.csv").open()))
    assert [(r["sm_clock_mhz"], r["clock_limits"]) for r in wide] == [("", "-")] * len(runs)
    best = (folder / "best.csv").read_text().splitlines()
    assert "tflops" in best[0] and "peak_pct" in best[0]


def test_a_row_starts_with_what_won_at_its_neighbours() -> None:
    jobs = [[f"model={m}", f"batch_index={i}", f"+candidate={c}"] for m in "ab" for i in "01" for c in "xyz"]
    rows = order.rows(jobs)
    assert [r.start for r in rows] == [0, 3, 6, 9]
    a1, b0, b1 = rows[1], rows[2], rows[3]
    assert order.neighbours(a1, rows[:1]) == [rows[0]]
    assert order.neighbours(b1, rows[:3]) == [b0, a1]  # the same model first, then the same batch index
    assert [order.candidate(j) for j in order.ordered(a1, ["z"])] == ["x", "z", "y"]  # the reference first
    assert [order.candidate(j) for j in order.ordered(a1, [])] == ["x", "y", "z"]


@pytest.mark.slow
def test_the_search_tries_first_what_won_at_the_row_before(store: str) -> None:
    """Two study rows of the `sleepy` model, candidates listed eager fp32, fp32_only, memo: memo wins the
    first row, so the second row tries it right after its reference."""
    args = ["+experiment=best", "hydra.sweeper.params.model=sleepy_rows", "measure.profile=false"]
    args += ["+candidate=eager_fp32,fp32_only,memo", f"hydra.searchpath=[file://{TEST_CONF}]", PLUGINS]
    quick = ["gpu=cpu", "search.budget_s=null", "measure.stop=fixed", "measure.min_duration_s=0.2"]
    out = run_bench([*args, *quick, "hydra.sweeper.params.batch_index='0,1'", f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind='job'")
    started: dict[str, list[str]] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        started.setdefault(r.data.params["batch_size"], []).append(r.data.params["backend"])
    assert started == {"1": ["eager", "fp32_only", "memo"], "2": ["eager", "memo", "fp32_only"]}
    assert "batch_index=1: candidate memo tried first" in out.stdout + out.stderr
