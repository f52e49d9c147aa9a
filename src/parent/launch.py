"""One fresh child process per job, watched from the Hydra process: wait with the job's timeout, kill the
child's whole process group when it runs over (the child ends its group itself if the launcher dies first),
and turn what the progress file holds (`src/shared/progress.py`) or, when no status line came, the exit code
and the tail of the child's log, into exactly one `JobResult`.

The child is forked by this process's template (`src/child/template.py`: torch and the job's model libraries
imported once, no GPU touched) or, with `child_start=fresh` or when the template cannot fork, started as
`python -m src.worker JOB_DIR LAUNCHER_PID`. Either way it runs the same code in a process, session and
process group of its own; the run's tag `child_start` says which.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from src import PROJECT_ROOT
from src.shared.errors import Status
from src.shared.lines import ENDED, Lines
from src.shared.progress import CHILD_LOG, LAUNCHED_AT, PROGRESS, SPEC, read_progress
from src.shared.results import JOB, JobResult
from src.shared.spec import JobSpec

KILL_GRACE_S = 5.0
LOG_TAIL_CHARS = 3000
START_MODES = ("template", "fresh")


def run_in_child(
    spec: JobSpec,
    job_dir: Path,
    heartbeat: Callable[[str, float], None] | None = None,
    every_s: float = 15.0,
    start: str = "fresh",
) -> JobResult:
    """Run one job in a child process of its own; never raises for anything the child does.
    `heartbeat(phase, seconds in it)` is called every `every_s` seconds while the child runs. `start`:
    forked by the template, or a fresh interpreter (`START_MODES`)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / SPEC).write_text(spec.to_json(), encoding="utf-8")
    progress = job_dir / PROGRESS
    progress.unlink(missing_ok=True)
    timeout = spec.measure.timeout_s
    oom_kills_before = oom_kill_count()
    started = time.monotonic()
    proc, how = _start(spec, job_dir, start, started + timeout)
    try:
        code = _wait(proc, progress, started + timeout, heartbeat, every_s)
        timed_out = False
        _kill_group(proc)  # anything it left running (worker processes, ...) goes with it
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        code, timed_out = proc.returncode, True
    except BaseException:  # Ctrl-C in the sweep: take the child down with us
        _kill_group(proc)
        raise
    wall = time.monotonic() - started
    result, reported = read_progress(progress)
    result.exit_code, result.wall_s, result.pid = code, wall, proc.pid
    result.tags[JOB.child_start] = how
    if reported:
        if timed_out:  # it reported, then hung on the way out (e.g. in CUDA teardown)
            result.tags["child_exit"] = f"killed {timeout:g} s after start, after reporting"
    elif timed_out:
        result.status = Status.TIMEOUT
        result.reason = f"job ran past its timeout of {timeout:g} s (last phase: {result.phase or 'start'})"
    elif code == -signal.SIGKILL and _rose(oom_kills_before, oom_kill_count()):
        result.status = Status.OOM
        result.reason = (
            f"the kernel's out-of-memory killer ended the child in phase '{result.phase or 'start'}'"
        )
    else:
        result.status = Status.FAILED
        result.reason = f"child process {describe_exit(code)} in phase '{result.phase or 'start'}'"
        tail = log_tail(job_dir / CHILD_LOG)
        if tail:
            result.reason += f"; end of its output:\n{tail}"
    return result


def _start(spec: JobSpec, job_dir: Path, start: str, deadline: float) -> tuple[Child, str]:
    """The job's child, and how it was started (the `child_start` tag)."""
    how = "fresh"
    if start == "template":
        try:
            return Forked.start(job_dir, model_imports([spec.model.name]), deadline), "template"
        except TemplateError as exc:
            how = f"fresh (the template could not fork it: {exc})"
    with (job_dir / CHILD_LOG).open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "src.worker", str(job_dir), str(os.getpid())],
            cwd=PROJECT_ROOT,
            env=child_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills everything it started
        )
    return proc, how


def model_imports(models: Sequence[str]) -> list[str]:
    """The project's child code and these models' libraries, in order, each once."""
    from src.models import MODELS

    names = ["src.child.job"]
    for model in models:
        try:
            names += MODELS.get(model).imports
        except Exception:  # an unknown model is the child's to report
            continue
    return list(dict.fromkeys(names))


def warm_template(models: Sequence[str] | None = None) -> None:
    """Start this process's template now (its `import torch` runs while this process goes on: validating,
    opening the store) and have it import what these models' jobs will import, in their order: the first
    model's libraries at once, the others' once the first job is forked (the first job then waits for
    none of them, and no later job for an import). None: start it only (the models are not known yet); an
    empty list: nothing to do. Nothing is forked here; a template that cannot start is the first job's
    to report."""
    if Template.down or models == []:
        return
    try:
        template = Template.running()
        if models:
            template.send({"imports": model_imports(models[:1]), "later": model_imports(models)})
    except OSError:
        return


class TemplateError(Exception):
    """The template cannot fork this job (it ended, holds a GPU, or does not answer)."""


class Template:
    """This process's template (`src/child/template.py`), started on first use and ended with this process."""

    current: Template | None = None
    down: str | None = None  # why it is not used any more (fresh interpreters from then on)

    def __init__(self) -> None:
        """Started, not waited for: its first answer comes after `import torch` (`fork` reads past it)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "src.child.template"],
            cwd=PROJECT_ROOT,
            env=child_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # what libraries print while imported there
            start_new_session=True,  # a Ctrl-C in the terminal is the launcher's to handle
        )
        self.replies = Lines(self.proc.stdout.fileno())  # type: ignore[union-attr]
        self.exits: dict[int, int | None] = {}
        atexit.register(self.close)

    @classmethod
    def running(cls) -> Template:
        """This process's template, started if there is none or it ended."""
        if cls.current is None or cls.current.proc.poll() is not None:
            cls.current = cls()
        return cls.current

    def send(self, request: dict) -> None:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def fork(self, job_dir: Path, imports: Sequence[str], deadline: float) -> int:
        self.send({"job_dir": str(job_dir), "env": child_environment(), "imports": list(imports)})
        while "pid" not in (message := self._next(deadline)):
            if "refused" in message:
                raise TemplateError(message["refused"])
        return int(message["pid"])

    def wait(self, pid: int, deadline: float | None) -> int | None:
        """The forked child's exit code (None if the template ended first); TimeoutExpired past `deadline`."""
        while pid not in self.exits:
            try:
                self._next(deadline)
            except TemplateError:  # the template ended: its children end with it
                return None
        return self.exits[pid]

    def _next(self, deadline: float | None) -> dict:
        """The next message that is not a child's exit (those are kept); TimeoutExpired past `deadline`."""
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            message = self.replies.next(None if left is None else max(left, 0.0))
            if message is None:
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired("template", 0)
                continue
            if message is ENDED:
                raise TemplateError(f"the template process ended (exit code {self.proc.poll()})")
            if "exited" not in message:
                return message
            self.exits[int(message["exited"])] = message["code"]
            return {}

    def close(self) -> None:
        """Killed, not asked to end: it holds nothing to keep, no job is left to wait for, and its own way
        out (an interpreter's teardown with torch loaded, or an import under way) takes seconds."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        if Template.current is self:
            Template.current = None


class Forked:
    """A job's child forked by the template: waited for and killed like a `subprocess.Popen`."""

    def __init__(self, template: Template, pid: int) -> None:
        self.template, self.pid, self.returncode = template, pid, None
        self.done = False

    @classmethod
    def start(cls, job_dir: Path, imports: Sequence[str], deadline: float) -> Forked:
        """The job's child, forked by this process's template (started if there is none or it ended).
        Whatever stops the template (it refused, ended, or did not answer in time) ends its use for the
        rest of this process: TemplateError, and fresh interpreters from then on."""
        if Template.down:
            raise TemplateError(Template.down)
        try:
            template = Template.running()
            return cls(template, template.fork(job_dir, imports, deadline))
        except (TemplateError, OSError, subprocess.TimeoutExpired) as exc:
            timed_out = isinstance(exc, subprocess.TimeoutExpired)
            why = "the template did not answer before the job's timeout" if timed_out else str(exc)
            Template.down = why or type(exc).__name__
            if Template.current is not None:
                Template.current.close()
            raise TemplateError(Template.down) from exc

    def wait(self, timeout: float | None = None) -> int | None:
        if not self.done:
            deadline = None if timeout is None else time.monotonic() + timeout
            self.returncode = self.template.wait(self.pid, deadline)
            self.done = True
        return self.returncode


Child = subprocess.Popen | Forked


def _wait(
    proc: Child,
    progress: Path,
    deadline: float,
    heartbeat: Callable[[str, float], None] | None,
    every_s: float,
) -> int:
    """The child's exit code; TimeoutExpired past the deadline (monotonic clock)."""
    phase, since, told = "", time.monotonic(), time.monotonic()
    while True:
        step = max(0.0, min(1.0, deadline - time.monotonic()))
        try:
            return proc.wait(timeout=step)
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now >= deadline:
                raise
            if heartbeat is None:
                continue
            current = read_progress(progress)[0].phase  # the phase the child entered last
            if current != phase:
                phase, since = current, now
            if now - told >= every_s:
                told = now
                heartbeat(phase, now - since)


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)  # the child never talks to MLflow
    env["PYTHONUNBUFFERED"] = "1"
    env[LAUNCHED_AT] = repr(time.time())  # the child's `child_start_s` counts from here
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # GPU indices as nvidia-smi and NVML number them
    root = str(PROJECT_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _kill_group(proc: Child) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def oom_kill_count() -> int | None:
    """The kernel's count of out-of-memory kills (all cgroups), or None where it cannot be read."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _rose(before: int | None, after: int | None) -> bool:
    return before is not None and after is not None and after > before


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (possibly the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code} without reporting a result"


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    if not path.exists():
        return ""
    text = path.read_bytes()[-chars:].decode("utf-8", errors="replace")
    return text.strip()
