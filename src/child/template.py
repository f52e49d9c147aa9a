"""The template process: imports torch and the sweep's libraries once, never touches a GPU, and forks
each job's measuring child from that state (`python -m src.child.template`, started by
`src/parent/launch.py`, one per launching process).

A forked child is as isolated as one started from a fresh interpreter: a process of its own, in a session
and process group of its own (the launcher's timeout kills that group), with the job's own environment, its
output in the job's log, and its own CUDA context, made after the fork: the template refuses to fork once it
holds a GPU driver file (a library that initialised CUDA at import), and the launcher then starts fresh
interpreters. It only skips what every child would otherwise repeat: starting Python and importing torch,
torchvision, MONAI, Ultralytics or Dynamo (seconds each, most of a short job's start-up).

Protocol, one JSON object per line. In (stdin): `{"job_dir", "env", "imports"}` (the job's libraries are
imported, then it is forked), or `{"imports", "later"}` without a job: the sweep's libraries, sent before
its first job and imported one by one in the order given while no job asks (a job waits at most for the
one under way): `imports` (the first job's) at once, `later` (the other jobs') once a job has been forked,
so that the first job never waits for a library it does not use (MONAI's import takes seconds). Out
(stdout): `{"pid"}` for a forked child, `{"refused": why}` instead, and `{"exited": pid, "code": exit code}`
when a child ends (a signal as its negative number, as `subprocess` reports it). The template ends when its
stdin closes (the launcher ended), and its children end with it (`src.child.worker` watches its parent).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
from typing import TextIO

from src.shared.lines import ENDED, Lines
from src.shared.progress import CHILD_LOG

GPU_FILES = ("/dev/nvidia", "/dev/dri", "/dev/kfd")  # what a CUDA (or ROCm) driver opens when initialised


def gpu_files() -> list[str]:
    """The GPU driver files this process holds open: a fork would share driver state the child cannot use."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the fd listing's own)
            continue
        if target.startswith(GPU_FILES):
            held.append(target)
    return held


def load(modules: list[str], loaded: set[str]) -> None:
    """Import what the job will import (a failure is the child's to report, with its own message)."""
    for name in modules:
        if name not in loaded:
            with contextlib.suppress(Exception):  # the child imports it again and reports why it cannot
                importlib.import_module(name)
            loaded.add(name)


def fork_job(request: dict, out: TextIO) -> dict:
    """Fork the job's child; the reply for the launcher."""
    held = gpu_files()
    if held:
        return {"refused": f"the template holds GPU driver files ({', '.join(sorted(set(held)))})"}
    job_dir, env = request["job_dir"], request["env"]
    for stream in (out, sys.stdout, sys.stderr):  # nothing buffered here is written twice by the child
        stream.flush()
    pid = os.fork()
    if pid:
        return {"pid": pid}
    code = 1
    try:  # the child: never returns into the template's loop
        os.setsid()  # a session and process group of its own, as `start_new_session` gives
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        out.close()  # the launcher's reply channel is the template's alone
        log = os.open(os.path.join(job_dir, CHILD_LOG), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["-m", job_dir, str(os.getppid())]
        from src.child.worker import main

        code = main(sys.argv)
    except BaseException:  # the child's own failure, printed to its log
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def reap(out: TextIO) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply(out, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def reply(out: TextIO, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the launcher's to handle
    out = os.fdopen(os.dup(1), "w")  # the reply channel; what libraries print at import goes to stderr
    os.dup2(2, 1)
    loaded: set[str] = set()
    load(["torch"], loaded)
    reply(out, {"ready": os.getpid()})
    requests = Lines(sys.stdin.fileno())
    ahead: list[str] = []  # libraries sent ahead of the jobs, imported one by one while no job asks
    later: list[str] = []  # ... and those to import once a job has been forked
    while True:
        reap(out)
        request = requests.next(0.0 if ahead else 0.1)
        if request is None:
            if ahead:
                load([ahead.pop(0)], loaded)
            continue
        if request is ENDED:  # the launcher ended: so does the template (its children follow: worker.py)
            return 0
        if "job_dir" in request:  # a job: its own libraries first, the others' after it is forked
            load(request.get("imports", []), loaded)
            reply(out, fork_job(request, out))
            ahead, later = ahead + later, []
        else:
            ahead += request.get("imports", [])
            later += request.get("later", [])
        ahead = [name for name in dict.fromkeys(ahead) if name not in loaded]


if __name__ == "__main__":
    sys.exit(main())
