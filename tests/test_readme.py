"""The README's quick start and sweep commands, run as a person copies them: from the project root, into
the default output folders, with `smoke=true` (and `batch_size=2`) added as the README says to on a CPU.
What is checked is what the person reads: the exit status, the `[k/N]` lines with their estimate, the
run's or sweep's last lines, and one folder per sweep holding its jobs and its report."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from src import PROJECT_ROOT
from tests.conftest import run_bench, user_folders

pytestmark = pytest.mark.slow
README = (PROJECT_ROOT / "README.md").read_text()


def commands(section: str) -> list[str]:
    """The `python -m src.bench ...` lines of the section's first bash block, comments dropped."""
    text = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("python -m src.bench")]


def on_a_cpu(command: str) -> list[str]:
    """The command's arguments with what the README says to add on a CPU."""
    args = shlex.split(command)[3:]
    if any(a.startswith(("--cfg", "--help")) for a in args):
        return args
    extra = [] if "smoke=true" in args else ["smoke=true"]
    if not any(a.startswith(("batch_size=", "+experiment=")) for a in args):
        extra.append("batch_size=2")
    return [*args, *extra]


QUICK_START = commands("Quick start on a CPU")
SWEEPS = commands("Sweeps")


def test_the_readme_shows_the_commands_this_file_runs() -> None:
    assert len(QUICK_START) == 4 and len(SWEEPS) == 6
    assert "python -m src.bench -m model=densenet backend=eager,torchscript smoke=true batch_size=2" in SWEEPS


@pytest.mark.parametrize("command", QUICK_START)
def test_a_quick_start_command_as_written(command: str, store: str) -> None:
    out = run_bench(on_a_cpu(command), env={"MLFLOW_TRACKING_URI": store})
    assert out.returncode == 0, out.stderr[-3000:]
    if "--help" in command:
        assert "model: densenet, segresnet, yolo" in out.stdout
    elif "--cfg" in command:
        assert "batch_size:" in out.stdout and "measure:" in out.stdout
    else:
        text = out.stdout + out.stderr
        assert re.search(r"\[1/1\] \S+: ok, [\d.]+ img/s", text), text[-2000:]
        assert re.search(r"run \S+ \([0-9a-f]{32}\): [\d.]+ img/s", out.stderr)


@pytest.mark.parametrize("command", SWEEPS)
def test_a_sweep_command_as_written(command: str, store: str) -> None:
    if "+experiment=best" in command or "+experiment=fast_paths" in command:
        pytest.skip("a search over every candidate and model takes far longer than a CPU test (README)")
    before = user_folders()
    out = run_bench(on_a_cpu(command), env={"MLFLOW_TRACKING_URI": store})
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    places = re.findall(r"\[(\d+)/(\S+)\] \S+: (?:ok|oom|unsupported|unavailable|skipped)", text)
    total = {n for _, n in places}
    assert len(total) == 1 and total != {"?"}, places  # every job knows the sweep's size
    n = int(total.pop())
    assert sorted(int(k) for k, _ in places) == list(range(1, n + 1))
    if n > 2:  # after the first measured jobs, every line says what is left
        assert re.search(rf"\[{n - 1}/{n}\] .*, ~\S+ left\)", text), text[-3000:]
    made = user_folders() - before
    assert len(made) == 1, made  # one sweep, one folder
    (folder,) = made
    assert folder.parent.parent.name == "multirun"
    assert (folder / "report" / "report.md").is_file() and (folder / "report" / "report.html").is_file()
    jobs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == n
    assert f"report: {Path(folder).relative_to(PROJECT_ROOT)}/report/report.md" in out.stderr
