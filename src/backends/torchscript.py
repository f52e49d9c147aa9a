"""TorchScript: `torch.jit.trace` (or `torch.jit.script` where tracing fails), then `torch.jit.freeze`.

Fuser: TorchScript's profiling executor optimises the graph on its second call and, on a GPU, hands
element-wise regions to the TensorExpr (NNC) fuser. NNC's GPU code for `aten::cat` is a chain of nested
if-then-else, one level per input, and its simplifier is super-linear in that depth, which stalls on
DenseNet201's wide concatenations (the investigation: docs/backends.md, "TorchScript"). `fuser: auto`
therefore turns NNC off for graphs holding a `cat` of more than `MAX_NNC_CAT_INPUTS` inputs on a GPU, and
leaves PyTorch's default (on) elsewhere. The choice and its reason are logged as tags.

The trace checker (`check_trace`) is off by default: it re-traces and re-runs the model to compare, which
costs a second trace; output parity against eager is the cheaper, stricter check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.backends.base import BACKENDS, Backend
from src.shared.errors import ConfigError, Unsupported

if TYPE_CHECKING:
    import torch

METHODS = ("auto", "trace", "script")
FUSERS = ("auto", "nnc", "none")
MAX_NNC_CAT_INPUTS = 16


@BACKENDS.register("torchscript")
class TorchScript(Backend):
    @dataclass(frozen=True)
    class Options:
        method: str = "auto"  # auto: trace, and script where tracing fails
        freeze: bool = True  # inline weights and fold Conv+BatchNorm (torch.jit.freeze)
        check_trace: bool = False
        fuser: str = "auto"  # auto | nnc | none: the TensorExpr fuser (see the module's docstring)

        def __post_init__(self) -> None:
            if self.method not in METHODS:
                raise ConfigError(
                    f"backend 'torchscript': method '{self.method}'; allowed: {', '.join(METHODS)}"
                )
            if self.fuser not in FUSERS:
                raise ConfigError(
                    f"backend 'torchscript': fuser '{self.fuser}'; allowed: {', '.join(FUSERS)}"
                )

    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        import torch

        errors: list[str] = []
        module = None
        with torch.no_grad():
            if self.options.method in ("auto", "trace"):
                try:
                    module = torch.jit.trace(model, example, check_trace=self.options.check_trace)
                    self.tags["torchscript_method"] = "trace"
                except Exception as exc:
                    errors.append(f"trace: {type(exc).__name__}: {exc}")
            if module is None and self.options.method in ("auto", "script"):
                try:
                    module = torch.jit.script(model)
                    self.tags["torchscript_method"] = "script"
                except Exception as exc:
                    errors.append(f"script: {type(exc).__name__}: {exc}")
            if module is None:
                raise Unsupported("TorchScript cannot handle this model. " + " | ".join(errors))
            if self.options.freeze:
                module = torch.jit.freeze(module.eval())
        self._set_fuser(module, example.device)
        self._module = module
        return module

    def _set_fuser(self, module: torch.jit.ScriptModule, device: torch.device) -> None:
        import torch

        fuser, why = self.options.fuser, "as configured"
        if fuser == "auto":
            widest = max_cat_inputs(module.graph)
            if device.type == "cuda" and widest > MAX_NNC_CAT_INPUTS:
                fuser, why = "none", f"aten::cat of {widest} inputs stalls NNC's GPU code generation"
            else:
                fuser, why = "nnc", "PyTorch's default"
        torch._C._jit_set_texpr_fuser_enabled(fuser == "nnc")
        self.tags.update({"torchscript_fuser": fuser, "torchscript_fuser_reason": why})

    def export(self, out_dir: Path) -> list[Path]:
        import torch

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.torchscript.pt"
        torch.jit.save(self._module, str(path))
        return [path]


def max_cat_inputs(graph: torch.Graph) -> int:
    """The most inputs any `aten::cat` in the graph (submodule calls inlined) concatenates."""
    import torch

    inlined = graph.copy()
    torch._C._jit_pass_inline(inlined)
    widest = 0
    for node in inlined.findAllNodes("aten::cat"):
        tensors = node.inputsAt(0).node()
        if tensors.kind() == "prim::ListConstruct":
            widest = max(widest, tensors.inputsSize())
    return widest
