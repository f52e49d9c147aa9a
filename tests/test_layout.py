"""The shape of the code: one declaration per setting, imports that follow the process boundary, and
defects that must not come back (each test fails where the defect is)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from src import PROJECT_ROOT
from src.backends import BACKENDS, Backend
from src.backends.onnxruntime import OnnxRuntime
from src.child import job as child_job
from src.child.job import execute, place
from src.models import MODELS
from src.parent import device, resume, runner
from src.parent.config import to_job, to_spec
from src.shared import nvml
from src.shared.locks import lock_dir
from src.shared.progress import PROGRESS, ProgressWriter, read_progress
from src.shared.results import JOB, LATENCY
from tests.conftest import QUICK, compose_cfg, make_spec, run_bench

SRC = PROJECT_ROOT / "src"


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("field", ["min_duration_s", "sample_hz", "warmup_iters", "idle_s", "nameplate_w"])
def test_a_setting_is_declared_in_exactly_one_dataclass(field: str) -> None:
    declared = []
    for path in modules(SRC):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and getattr(item.target, "id", None) == field:
                        declared.append(f"{path.relative_to(SRC)}:{node.name}")
    assert len(declared) == 1, declared
    assert field not in (PROJECT_ROOT / "conf" / "config.yaml").read_text()  # no second copy of defaults


def config_dataclasses() -> dict[str, type]:
    """Every dataclass a setting is declared in: the schema's sections and each registered backend's and
    model's Options."""
    from src.backends import BACKENDS
    from src.models import MODELS
    from src.parent.config import SECTIONS, BenchConfig

    found = {"config": BenchConfig, **SECTIONS}
    found.update({f"backend/{n}": BACKENDS.get(n).Options for n in BACKENDS.names()})
    found.update({f"model/{n}": MODELS.get(n).Options for n in MODELS.names()})
    return found


def default_of(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def same(value: object, default: object) -> bool:
    return (list(default) if isinstance(default, tuple) else default) == value


def test_every_option_is_declared_in_one_dataclass() -> None:
    """An option several backends (or models) share with one default (`cache_dir`) lives in one base
    class, not in each; a name with its own default per entry (`num_classes`) is a setting of each."""
    written: dict[str, dict[str, object]] = {}
    for name, cls in config_dataclasses().items():
        kind = name.split("/")[0]
        if kind == name:
            continue
        for f in dataclasses.fields(cls):
            owner = next(k for k in reversed(cls.__mro__) if f.name in vars(k).get("__annotations__", {}))
            written.setdefault(f"{kind}:{f.name}", {})[owner.__qualname__] = default_of(f)
    twice = {k: sorted(v) for k, v in written.items() if len(v) > 1 and len(set(map(repr, v.values()))) == 1}
    assert twice == {}


def test_a_yaml_file_selects_and_overrides_but_never_repeats_a_default() -> None:
    """Every key of conf/'s group files is a field of its dataclass (options: of the entry's Options),
    and none is written with the value its dataclass gives it already."""
    import yaml

    from src.backends import BACKENDS
    from src.models import MODELS
    from src.parent.config import SECTIONS

    classes = config_dataclasses()
    problems = []
    for path in sorted((PROJECT_ROOT / "conf").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        group = path.parent.name
        where = str(path.relative_to(PROJECT_ROOT))
        sections = {group: data} if group in SECTIONS else {k: v for k, v in data.items() if k in SECTIONS}
        for section, values in sections.items():
            if not isinstance(values, dict):
                continue
            name = values.get("name") or (path.stem if group == section else None)
            registry = {"backend": BACKENDS, "model": MODELS}.get(section)
            fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
            for key, value in values.items():
                if key == "defaults":  # Hydra's defaults list
                    continue
                if key == "options" and registry is not None and name in registry.names():
                    options = {f.name: f for f in dataclasses.fields(classes[f"{section}/{name}"])}
                    for opt, v in (value or {}).items():
                        if opt not in options:
                            problems.append(f"{where}: {section}.options.{opt} is no option")
                        elif same(v, default_of(options[opt])):
                            problems.append(f"{where}: {section}.options.{opt} repeats its default")
                elif key not in fields:
                    problems.append(f"{where}: {section}.{key} is no setting")
                elif same(value, default_of(fields[key])):
                    problems.append(f"{where}: {section}.{key} repeats its default")
    assert problems == []


def test_no_setting_of_the_root_is_written_in_the_primary_config() -> None:
    import yaml

    from src.parent.config import BenchConfig

    primary = yaml.safe_load((PROJECT_ROOT / "conf" / "config.yaml").read_text())
    assert set(primary) <= {"defaults", "hydra"}
    assert not {f.name for f in dataclasses.fields(BenchConfig)} & set(primary)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("child", ("src.parent", "src.callbacks", "src.bench", "src.upload", "mlflow", "hydra")),
        ("shared", ("src.parent", "src.child", "src.callbacks", "src.bench", "mlflow", "hydra")),
        ("models", ("src.parent", "src.child", "mlflow")),
        ("backends", ("src.parent", "src.child", "mlflow")),
    ],
)
def test_imports_follow_the_process_boundary(package: str, forbidden: tuple[str, ...]) -> None:
    bad = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in modules(SRC / package)
        for name in imported(path)
        if name.startswith(forbidden)
    }
    assert not bad


def test_the_mlflow_layer_never_imports_process_management() -> None:
    for name in ("parent/tracking.py", "upload.py", "report.py"):
        assert not {m for m in imported(SRC / name) if m.startswith(("src.parent.launch", "subprocess"))}


def test_the_report_takes_metric_and_tag_names_from_the_result_types() -> None:
    for path in (SRC / "report.py", SRC / "parent" / "sweep.py", PROJECT_ROOT / "scripts" / "runs_table.py"):
        text = path.read_text()
        for name in ("throughput_img_s", "latency_p99_ms", "gpu_name"):
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path.name, name)
    assert LATENCY.throughput_img_s == "throughput_img_s" and JOB.status == "status"
    with pytest.raises(AttributeError):
        _ = LATENCY.throughput_img_per_s  # a name no result declares


def test_the_progress_writer_closes_its_file(tmp_path: Path) -> None:
    with ProgressWriter(tmp_path / PROGRESS) as progress:
        progress.phase("setup")
    assert progress.closed
    assert read_progress(tmp_path / PROGRESS)[0].phase == "setup"


def test_a_backend_always_receives_its_job() -> None:
    for name in BACKENDS.names():
        cls = BACKENDS.get(name)
        param = inspect.signature(cls.__init__).parameters["job"]
        assert param.default is inspect.Parameter.empty, name
        with pytest.raises(TypeError):
            cls(cls.parse_options(name, {}))


def test_onnxruntime_prepares_without_being_asked_whether_it_is_available() -> None:
    """prepare() used to rely on state that only unavailable() set (AttributeError: 'provider')."""
    spec = make_spec("backend=onnxruntime", "model=densenet", "smoke=true", "batch_size=1")
    backend = OnnxRuntime(OnnxRuntime.parse_options("onnxruntime", {}), spec)
    model, x = place(MODELS.get("densenet").build(spec.model), spec, torch.device("cpu"))
    fn = backend.prepare(model, x)
    with torch.inference_mode():
        torch.testing.assert_close(fn(x), model(x), rtol=1e-4, atol=1e-4)
    backend.close()


def test_a_job_that_fails_after_building_leaves_no_scratch_folder(tmp_path: Path, monkeypatch) -> None:
    """ONNX Runtime exports into a scratch folder; a job failing between prepare() and export() (here: in
    its timed loop) left it behind. The backend's folders are removed whatever happens."""
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))

    def failing_loop(*args, **kwargs):
        raise RuntimeError("failed in the timed loop")

    monkeypatch.setattr(child_job, "timed_loop", failing_loop)
    spec = make_spec("backend=onnxruntime", "model=densenet", "smoke=true", "batch_size=1", *QUICK)
    with ProgressWriter(tmp_path / PROGRESS) as progress, pytest.raises(RuntimeError, match="timed loop"):
        execute(spec, tmp_path / "job", progress)
    assert read_progress(tmp_path / PROGRESS)[0].phase == "measure"  # it got past the export to ONNX
    assert list(scratch_root.iterdir()) == []


def test_with_gpu_any_the_resume_key_names_the_card_the_job_got(tmp_path: Path, monkeypatch, store) -> None:
    """On a host with mixed cards, `gpu=any` used to key the job by the host's first card before a card was
    claimed. Here card A is busy (its lock held by another process), so the job gets card B: its run's
    config_key must be B's. (NVML's card list is replaced: this machine has no GPU.)"""
    cards = [nvml.GpuIdentity(i, f"GPU-{c}", f"Card {c}", 1024, None) for i, c in enumerate("AB")]
    for module in (device, resume):  # where the card list is read
        monkeypatch.setattr(module, "all_gpus", lambda: cards)
    monkeypatch.setenv("BENCH_LOCK_DIR", str(tmp_path / "locks"))
    held, ready = lock_dir() / "GPU-A.lock", tmp_path / "holding"
    held.parent.mkdir(parents=True)
    code = "import fcntl, pathlib, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    code += "pathlib.Path(sys.argv[2]).touch(); time.sleep(300)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(held), str(ready)])
    try:
        for _ in range(400):
            if ready.exists():
                break
            time.sleep(0.05)
        cfg = compose_cfg("gpu=any", "smoke=true", "batch_size=1", *QUICK, f"tracking.uri={store}")
        spec = to_spec(cfg)
        result, run_id = runner.run_job(to_job(cfg), tmp_path / "job", parent=None)
    finally:
        holder.kill()
        holder.wait()
    assert result is not None and "GPU 1 was asked for" in result.reason  # the job was given card B
    key = MlflowClient(store).get_run(run_id).data.tags["config_key"]
    assert key == resume.config_key(spec.with_gpu(spec.gpu.claimed(1)), cards[1])
    assert key != resume.config_key(spec.with_gpu(spec.gpu.claimed(0)), cards[0])


def test_a_job_checks_its_config_itself_when_no_callback_did(store: str, tmp_path: Path) -> None:
    """Sweep-wide validation needs the basic sweeper (Hydra has no public way to expand other sweepers'
    grids); each job validates itself too. Without the callback, bad input is still refused cleanly."""
    out = run_bench(["~hydra.callbacks.bench", "batch_size=0", f"tracking.uri={store}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: invalid configuration, nothing was run" in out.stderr
    assert "batch_size must be a positive integer, got 0" in out.stderr
    assert "Traceback" not in out.stderr
    assert not Path(store.removeprefix("sqlite:///")).exists()  # no run, not even a store


def test_the_scripts_run_from_any_folder_without_touching_sys_path(tmp_path: Path) -> None:
    for script in sorted((PROJECT_ROOT / "scripts").glob("*.py")):
        assert "sys.path" not in script.read_text(), script.name
    out = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "runs_table.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "usage" in out.stdout, out.stderr


def test_every_backend_and_model_is_a_subclass_of_its_interface() -> None:
    assert all(issubclass(BACKENDS.get(n), Backend) for n in BACKENDS.names())
    assert all(MODELS.get(n).task for n in MODELS.names())
