"""Real child processes: a hang past the timeout, a crash, a real allocator OOM, and a normal job."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from src import PROJECT_ROOT
from src.parent import launch as isolation
from src.parent import template_client
from src.parent.launch import run_in_child
from src.shared.errors import Status
from src.shared.progress import PROGRESS, START_MODES, read_progress
from tests.conftest import QUICK, fault_overrides, make_spec


@pytest.fixture(params=START_MODES)
def start(request: pytest.FixtureRequest) -> str:
    """Each child test runs with the child forked by the template and started as a fresh interpreter."""
    return request.param


def run(model: str, tmp_path: Path, *overrides: str, start: str = "fresh"):
    spec = make_spec(*fault_overrides(model), *QUICK, "batch_size=2", *overrides)
    result = run_in_child(spec, tmp_path / model, start=start)
    assert result.tags["child_start"] == start
    return result


def writing_to(log: Path) -> list[int]:
    """The processes whose output goes to `log` (a job's child.log): the job's child, however started."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "fd" / "1")) == log:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_normal_job_reports_ok_with_its_metrics(tmp_path: Path, start: str) -> None:
    result = run("sleepy", tmp_path, start=start)
    assert result.status is Status.OK and result.reason == "" and result.exit_code == 0
    assert result.phase == "done"
    assert 19.5 <= result.metrics["latency_p50_ms"] <= 40  # sleep_ms: 20 in the test model's YAML
    assert result.params["device"] in ("cpu", "cuda:0")
    assert {"model_load_s", "build_time_s", "first_call_ms", "peak_rss_mib"} <= set(result.metrics)
    # where the job's wall time went before the model was built: the child's start and its setup
    start_s, setup_s = result.metrics["child_start_s"], result.metrics["setup_s"]
    assert start_s > 0 and setup_s > 0 and start_s + setup_s + result.metrics["window_s"] < result.wall_s
    assert result.metrics["cpu_probe_before_ms"] > 0 and result.metrics["cpu_probe_after_ms"] > 0
    assert (
        (tmp_path / "sleepy" / "artifacts" / "latencies_ms.csv")
        .read_text()
        .startswith("iteration,latency_ms")
    )


def test_a_hang_past_the_timeout_is_killed_and_keeps_what_was_measured(tmp_path: Path, start: str) -> None:
    result = run("hang", tmp_path, "measure.timeout_s=8", start=start)
    assert result.status is Status.TIMEOUT
    assert "timeout of 8 s" in result.reason and "first_call" in result.reason
    assert result.phase == "first_call"
    assert "build_time_s" in result.metrics  # measured before the hang, not lost
    assert 8 <= result.wall_s < 8 + 30


def test_a_crashing_child_is_a_failed_result_with_the_signal_and_its_output(
    tmp_path: Path, start: str
) -> None:
    result = run("crash", tmp_path, start=start)
    assert result.status is Status.FAILED
    assert "killed by SIGSEGV" in result.reason and "phase 'first_call'" in result.reason
    assert "Fatal Python error: Segmentation fault" in result.reason  # faulthandler's output, from the log
    assert result.exit_code == -11


def test_a_real_allocation_failure_is_oom_not_an_error(tmp_path: Path, start: str) -> None:
    result = run("oom", tmp_path, start=start)
    assert result.status is Status.OOM
    assert "not enough memory" in result.reason or "can't allocate" in result.reason
    assert result.exit_code == 0


def test_a_missing_gpu_index_is_unavailable(tmp_path: Path) -> None:
    result = run("sleepy", tmp_path, "gpu.index=99")
    assert result.status is Status.UNAVAILABLE
    assert "GPU 99 was asked for" in result.reason


def test_progress_survives_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / PROGRESS
    path.write_text(
        json.dumps({"phase": "measure"}) + "\n" + json.dumps({"metrics": {"a_ms": 1.5}}) + '\n{"stat'
    )
    result, reported = read_progress(path)
    assert not reported and result.phase == "measure" and result.metrics == {"a_ms": 1.5}


def test_a_sigkill_is_oom_only_when_the_kernels_oom_kill_count_rose(
    tmp_path: Path, monkeypatch, start: str
) -> None:
    """The child really dies of SIGKILL; the kernel's OOM-kill counter is scripted, since a real OOM kill
    would need this shared machine's memory exhausted."""
    result = run("sigkill", tmp_path, start=start)
    assert (
        result.status is Status.FAILED
        and "SIGKILL (possibly the kernel's out-of-memory killer)" in result.reason
    )
    counts = iter([7, 8])
    monkeypatch.setattr(isolation, "oom_kill_count", lambda: next(counts))
    result = run("sigkill", tmp_path / "again", start=start)
    assert result.status is Status.OOM and "out-of-memory killer" in result.reason


def test_the_kernels_oom_kill_counter_is_read_where_linux_has_it() -> None:
    if not Path("/proc/vmstat").exists():
        pytest.skip("no /proc/vmstat on this system")
    count = isolation.oom_kill_count()
    assert isinstance(count, int) and count >= 0


def test_processes_a_finished_child_left_behind_are_ended_with_it(tmp_path: Path, start: str) -> None:
    result = run("straggler", tmp_path, start=start)
    assert result.status is Status.OK
    left = subprocess.run(["pgrep", "-f", "sleep 3001"], capture_output=True, text=True)
    assert left.stdout == ""


def test_a_child_whose_launcher_is_killed_ends_too(tmp_path: Path, start: str) -> None:
    """joblib SIGKILLs a stopped parallel sweep's workers, the launchers of the measuring children: a child
    must not measure on, orphaned (it holds the GPU). It watches its parent (the launcher, or the template,
    which ends when the launcher's pipe closes) and ends its process group."""
    job_dir = tmp_path / "job"
    code = (
        "from pathlib import Path; from src.parent.launch import run_in_child; "
        "from tests.conftest import QUICK, fault_overrides, make_spec; "
        f"run_in_child(make_spec(*fault_overrides('hang'), *QUICK), Path({str(job_dir)!r}), start={start!r})"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the child hangs in its first call
        if (job_dir / PROGRESS).exists() and read_progress(job_dir / PROGRESS)[0].phase == "first_call":
            break
        time.sleep(0.2)
    child = writing_to(job_dir / "child.log")
    assert len(child) == 1  # the job's child, measuring
    launcher.kill()
    launcher.wait()
    for _ in range(20):
        left = writing_to(job_dir / "child.log")
        if not left:
            break
        time.sleep(0.5)
    assert left == []


def test_a_forked_child_runs_in_a_session_of_its_own_under_one_template_per_launcher(tmp_path: Path) -> None:
    """The template forks each job's child: a process, session and process group of its own (what the
    timeout kills), with the job's environment; the next job is forked by the same template."""
    seen: dict[str, object] = {}

    def look(phase: str, _: float) -> None:  # called while the child runs
        (pid,) = writing_to(tmp_path / "sleepy" / "child.log")
        template = template_client.Template.current
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        seen.update(
            pid=pid,
            parent=int(stat[1]),
            group=os.getpgid(pid),
            session=os.getsid(pid),
            template=template.proc.pid if template else None,
            env=b"PYTHONUNBUFFERED=1" in environ,
        )

    spec = make_spec(*fault_overrides("sleepy"), *QUICK, "batch_size=2", "measure.min_duration_s=2")
    first = run_in_child(spec, tmp_path / "sleepy", heartbeat=look, every_s=0.2, start="template")
    assert first.status is Status.OK and first.tags["child_start"] == "template"
    assert seen["parent"] == seen["template"] != os.getpid()
    assert seen["group"] == seen["session"] == seen["pid"] == first.pid
    assert seen["env"]  # the job's own environment (src.parent.launch.child_environment)
    template = seen["template"]
    second = run_in_child(spec, tmp_path / "again", start="template")
    assert second.status is Status.OK and template_client.Template.current.proc.pid == template
    assert second.pid != first.pid


def test_the_template_is_started_again_when_it_has_ended(tmp_path: Path) -> None:
    spec = make_spec(*fault_overrides("sleepy"), *QUICK, "batch_size=2")
    assert run_in_child(spec, tmp_path / "a", start="template").tags["child_start"] == "template"
    old = template_client.Template.current.proc
    old.kill()
    old.wait()
    result = run_in_child(spec, tmp_path / "b", start="template")
    assert result.status is Status.OK and result.tags["child_start"] == "template"
    assert template_client.Template.current.proc.pid != old.pid


def warmed_template(jobs: list[tuple[str, str]]) -> template_client.Template:
    """This process's template, started afresh by `warm_template` for these (model, backend) jobs."""
    if template_client.Template.current is not None:
        template_client.Template.current.close()
    template_client.warm_template(jobs)
    template = template_client.Template.current
    assert template is not None
    return template


def loaded(template: template_client.Template, library: str, timeout_s: float = 0) -> bool:
    """Whether the template has `library` mapped, waiting up to `timeout_s` for it."""
    maps, deadline = Path(f"/proc/{template.proc.pid}/maps"), time.monotonic() + timeout_s
    while library not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    return library in maps.read_text()


def test_a_sweeps_template_imports_its_models_libraries_before_the_first_job(tmp_path: Path) -> None:
    """`warm_template` (called as a sweep starts) starts the template and has it import the sweep's model
    libraries at once, without waiting for it; the first job is then forked by that same template."""
    template = warmed_template([("yolo", "eager")])
    # Ultralytics imports OpenCV
    assert loaded(template, "cv2", timeout_s=120), "the template did not import the YOLO model's libraries"
    spec = make_spec(*fault_overrides("sleepy"), *QUICK, "batch_size=2")
    result = run_in_child(spec, tmp_path / "first", start="template")
    assert result.status is Status.OK and result.tags["child_start"] == "template"
    assert template_client.Template.current.proc.pid == template.proc.pid


def test_a_sweeps_template_imports_dynamo_ahead_of_its_compiled_jobs(tmp_path: Path) -> None:
    """A sweep with `compile` jobs has its template import Dynamo (the backend's `ahead` modules) once its
    first job is forked, so that no compiled job's child imports it again; never Inductor's `compile_fx`,
    which opens the GPU driver as torch 2.11 imports it. Seen from outside: cProfile's extension
    `_lsprof`, which Dynamo imports and neither torch nor Ultralytics does."""
    names = template_client.job_imports([("yolo", "eager"), ("yolo", "compile")])
    assert "torch._dynamo" in names and "torch._inductor.compile_fx" not in names
    assert "torch._dynamo" not in template_client.job_imports([("yolo", "eager")])
    template = warmed_template([("yolo", "eager"), ("yolo", "compile")])
    first_job = loaded(template, "cv2", timeout_s=120)  # the first job's libraries
    assert first_job and not loaded(template, "_lsprof"), "Dynamo imported before the first fork"
    spec = make_spec(*fault_overrides("sleepy"), *QUICK, "batch_size=2")
    assert run_in_child(spec, tmp_path / "first", start="template").status is Status.OK
    assert loaded(template, "_lsprof", timeout_s=120), (
        "the template did not import Dynamo for the sweep's compiled jobs"
    )


@contextmanager
def bare_template(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, dict[str, str], Path]]:
    """A template process of its own (not the launcher's), the environment for its jobs and the file that
    `tests.plugins.slow_import` (3 s to import) touches once imported there; ended on the way out."""
    done = tmp_path / "imported"
    env = {**template_client.child_environment(), "SLOW_IMPORT_DONE": str(done)}
    template = subprocess.Popen(
        [sys.executable, "-m", "src.child.template"],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    (tmp_path / "job").mkdir()
    try:
        yield template, env, done
    finally:
        template.stdin.close()
        template.wait(timeout=30)


def send(template: subprocess.Popen, *requests: dict) -> None:
    """The requests, in one write."""
    template.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    template.stdin.flush()


def replies_until(template: subprocess.Popen, word: bytes, timeout_s: float = 60) -> bytes:
    replies, deadline = b"", time.monotonic() + timeout_s
    while word not in replies and time.monotonic() < deadline:
        if select.select([template.stdout], [], [], 1)[0]:
            replies += os.read(template.stdout.fileno(), 65536)
    return replies


def wait_for(path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_requests_read_together_are_each_answered_and_a_job_waits_only_for_its_own_libraries(
    tmp_path: Path,
) -> None:
    """The template reads the sweep's libraries and the first job's request in one read (both came while
    it imported torch): the job is forked at once, and the libraries sent ahead are imported after."""
    with bare_template(tmp_path) as (template, env, done):
        send(
            template,
            {"imports": ["tests.plugins.slow_import"]},  # for later jobs: it takes 3 s
            {"job_dir": str(tmp_path / "job"), "env": env, "imports": []},
        )
        replies = replies_until(template, b'"pid"')
        assert b'"pid"' in replies, f"the template did not fork the job: {replies}"
        assert not done.exists(), "the job waited for a library sent ahead for other jobs"
        wait_for(done)
        assert done.exists(), "the library sent ahead was never imported"


def test_libraries_for_later_jobs_wait_until_the_first_job_is_forked(tmp_path: Path) -> None:
    """What a sweep's other models need (`later`) is not imported while the template waits for the first
    job, which would then wait for it: it is imported once that job is forked."""
    with bare_template(tmp_path) as (template, env, done):
        send(template, {"imports": [], "later": ["tests.plugins.slow_import"]})  # it takes 3 s
        assert b'"ready"' in replies_until(template, b'"ready"'), "the template did not start"
        time.sleep(5)  # the template is idle, the sweep's first job not asked for yet
        assert not done.exists(), "a later job's library was imported before the first job was forked"
        send(template, {"job_dir": str(tmp_path / "job"), "env": env, "imports": []})
        assert b'"pid"' in replies_until(template, b'"pid"'), "the template did not fork the job"
        wait_for(done)
        assert done.exists(), "the later jobs' library was never imported after the first fork"


def test_pieces_of_work_run_in_forks_and_what_cannot_come_back_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run_forked`: each piece in a fork of this process, its result back in order; one that raises or
    whose result does not pickle is MISSING (its caller does it at home); `meanwhile` runs here, once,
    whether or not a process could be forked."""
    from src.shared import forks

    def fails() -> None:
        raise ValueError("no")

    here: list[int] = []
    got = forks.run_forked([os.getpid, fails, lambda: lambda: 1, os.getpid], lambda: here.append(os.getpid()))
    assert here == [os.getpid()]
    assert got[1] is forks.MISSING and got[2] is forks.MISSING
    assert (
        isinstance(got[0], int)
        and got[0] != os.getpid()
        and isinstance(got[3], int)
        and got[3] != os.getpid()
    )

    # nothing to do meanwhile: forks only where two or more can work at once
    monkeypatch.setattr(forks, "forks", lambda pieces: 1)
    assert forks.run_forked([os.getpid, os.getpid]) == [forks.MISSING, forks.MISSING]
    monkeypatch.setattr(forks, "forks", lambda pieces: 2)
    assert os.getpid() not in forks.run_forked([os.getpid, os.getpid])

    def no_fork(*args: object, **kwargs: object) -> None:
        raise OSError("fork refused")

    monkeypatch.setattr(forks, "ProcessPoolExecutor", no_fork)
    assert forks.run_forked([os.getpid], lambda: here.append(0)) == [forks.MISSING]
    assert here == [os.getpid(), 0]
