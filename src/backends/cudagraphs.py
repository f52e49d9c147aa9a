"""CUDA graphs: the placed eager model captured once into a CUDA graph with a static input, then replayed.

A replay launches the whole forward pass as one graph, which removes Python and kernel-launch overhead (the
limit of small batches). The input must live at a fixed address: a call with another tensor copies it into
the static input first (a device-to-device copy, timed with the replay); the timed loop passes the same
tensor every call, as a serving loop that writes into a preallocated buffer would. GPU only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.backends.base import BACKENDS, Backend
from src.shared.errors import ConfigError, Unsupported

if TYPE_CHECKING:
    import torch

    from src.shared.spec import JobSpec


@BACKENDS.register("cudagraphs")
class CudaGraphs(Backend):
    @dataclass(frozen=True)
    class Options:
        warmup_calls: int = 3  # eager calls on a side stream before capture (cuDNN picks its algorithms)

        def __post_init__(self) -> None:
            if self.warmup_calls < 1:
                raise ConfigError(f"backend 'cudagraphs': warmup_calls must be >= 1, got {self.warmup_calls}")

    @classmethod
    def precheck(cls, job: JobSpec, device_type: str) -> None:
        if device_type != "cuda":
            raise Unsupported(f"CUDA graphs need a CUDA GPU; this job runs on {device_type}")

    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        import torch

        static_in = example
        # torch.cuda.graph captures on a stream of the *current* device: make the input's GPU current, or a
        # model on GPU 1 is captured into an empty graph on GPU 0 (or the capture fails)
        with torch.cuda.device(example.device), torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.options.warmup_calls):
                    model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = model(static_in)
        torch.cuda.synchronize(example.device)
        self.tags["cudagraph_input"] = "static (the timed loop passes the captured tensor)"

        def replay(x: torch.Tensor) -> Any:
            if x.data_ptr() != static_in.data_ptr():
                static_in.copy_(x)
            graph.replay()
            return static_out

        self._graph = graph  # keep the graph and its memory pool alive with the backend
        return replay
