"""Test-only models that misbehave on purpose, registered through `plugins=[tests.plugins.fault_models]`.

They run in the real measuring child: `hang` sleeps far past any timeout on its first call, `crash` and
`sigkill` kill their own process with SIGSEGV and SIGKILL, `oom` asks the real CPU allocator for 1 PiB,
`sleepy` does known work (a sleep of `sleep_ms` per call) for the measurement tests, `straggler` starts a
process that outlives its call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

import torch

from src.models.base import MODELS, ModelDef


class _Behaviour(torch.nn.Module):
    def __init__(self, action: str, sleep_ms: float = 0.0) -> None:
        super().__init__()
        self.action, self.sleep_ms, self.spawned = action, sleep_ms, False
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.action == "hang":
            time.sleep(3600)
        elif self.action == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif self.action == "sigkill":  # what the kernel's OOM killer does
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.action == "oom":
            torch.empty(2**50, dtype=torch.uint8)  # 1 PiB from the real allocator
        elif self.action == "sleepy":
            time.sleep(self.sleep_ms / 1e3)
        elif self.action == "straggler" and not self.spawned:  # leaves a process behind, as workers can
            subprocess.Popen(["sleep", "3001"])
            self.spawned = True
        return x * self.scale


class _Fault(ModelDef):
    task = "test"
    variants = ("test",)
    action = ""

    @dataclass(frozen=True)
    class Options:
        sleep_ms: float = 0.0

    @classmethod
    def check_input(cls, shape: tuple[int, ...], options: Options) -> str | None:
        return None

    @classmethod
    def build(cls, spec) -> torch.nn.Module:
        return _Behaviour(cls.action, cls.parse_options(spec.name, spec.options).sleep_ms)


for _action in ("hang", "crash", "sigkill", "oom", "sleepy", "straggler"):
    MODELS.register(_action)(type(f"Fault_{_action}", (_Fault,), {"action": _action}))
