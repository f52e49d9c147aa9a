"""The Hydra process's side of the template (`src/child/template.py`): the template started once per
process, the libraries it is asked to import, each job's child forked through it (`Forked`, waited for
like a `subprocess.Popen`), and the environment every child gets, forked or fresh."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from src import PROJECT_ROOT
from src.shared.lines import ENDED, Lines
from src.shared.progress import LAUNCHED_AT


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)  # the child never talks to MLflow
    env["PYTHONUNBUFFERED"] = "1"
    env[LAUNCHED_AT] = repr(time.time())  # the child's `child_start_s` counts from here
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # GPU indices as nvidia-smi and NVML number them
    root = str(PROJECT_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def job_imports(jobs: Sequence[tuple[str, str]]) -> list[str]:
    """The project's child code and what these (model, backend) jobs import that the template may import
    ahead of them: the models' libraries and the backends' `ahead` modules, in order, each once."""
    from src.backends import BACKENDS
    from src.models import MODELS

    names = ["src.child.job"]
    for model, backend in jobs:  # an unknown name is the child's to report
        with contextlib.suppress(Exception):
            names += MODELS.get(model).imports
        with contextlib.suppress(Exception):
            names += BACKENDS.get(backend).ahead
    return list(dict.fromkeys(names))


def warm_template(jobs: Sequence[tuple[str, str]] | None = None) -> None:
    """Start this process's template now (its `import torch` runs while this process goes on: validating,
    opening the store) and have it import what these (model, backend) jobs will import, in their order:
    the first job's libraries at once, the others' once the first job is forked (the first job then waits
    for none of them, and no later job for an import). None: start it only (the jobs are not known yet);
    an empty list: nothing to do. Nothing is forked here; a template that cannot start is the first job's
    to report."""
    if Template.down or jobs == []:
        return
    try:
        template = Template.running()
        if jobs:
            template.send({"imports": job_imports(jobs[:1]), "later": job_imports(jobs)})
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
