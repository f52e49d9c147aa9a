"""Config composition for every option of every group, registry <-> YAML parity, and refusals of bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from src import PROJECT_ROOT
from src.backends import BACKENDS
from src.models import MODELS
from src.parent.config import gpu_shorthand, unsupported_combination
from src.shared.errors import ConfigError
from src.shared.spec import PRECISIONS
from tests.conftest import make_spec, run_bench

CONF = PROJECT_ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "backend", "precision", "gpu"])
def test_every_option_of_every_group_composes_and_validates(group: str) -> None:
    for option in options(group):
        spec = make_spec(f"{group}={option}", "smoke=true")
        if group in ("model", "backend"):
            assert getattr(spec, group).name == option
        elif group == "precision":  # tf32: fp32 storage with TF32 math on
            assert spec.precision == option or (option, spec.precision, spec.tf32) == ("tf32", "fp32", True)
        elif option in ("auto", "any", "all", "cpu"):  # all: another name for any
            assert spec.gpu.index == option.replace("all", "any") and spec.gpu.nameplate_w is None
        else:  # a card preset: name, memory and nameplate watts, on the first GPU
            assert spec.gpu.index == "auto" and spec.gpu.name and spec.gpu.memory_gib and spec.gpu.nameplate_w


def test_the_studys_cards_have_the_studys_nameplate_watts() -> None:
    watts = {card: make_spec(f"gpu={card}").gpu.nameplate_w for card in ("v100", "l4", "a6000", "a2", "h200")}
    assert watts == {"v100": 160, "l4": 72, "a6000": 300, "a2": 60, "h200": 700}
    assert re.search(make_spec("gpu=l4").gpu.match, "NVIDIA L4")
    assert not re.search(make_spec("gpu=l4").gpu.match, "NVIDIA L40S")


def test_an_explicit_gpu_index_is_accepted() -> None:
    assert make_spec("gpu.index=1").gpu.index == "1"


def test_gpu_indices_on_the_command_line_mean_gpu_index() -> None:
    argv = ["-m", "gpu=0,1", "gpu=1", "gpu=all", "gpu.index=2", "model=densenet"]
    expected = ["-m", "gpu.index=0,1", "gpu.index=1", "gpu=all", "gpu.index=2", "model=densenet"]
    assert gpu_shorthand(argv) == expected
    out = run_bench(["gpu=1", "--cfg", "job"])  # the real entry point, as a user types it
    assert out.returncode == 0, out.stderr[-2000:]
    assert yaml.safe_load(out.stdout)["gpu"]["index"] == "1"


def in_tree(registry) -> list[str]:
    """Entries defined in src/ (tests register extra ones through plugins)."""
    return [n for n in registry.names() if registry.get(n).__module__.startswith("src.")]


def test_registries_match_the_yaml_files() -> None:
    assert in_tree(MODELS) == options("model")
    assert in_tree(BACKENDS) == options("backend")
    assert sorted([*PRECISIONS, "tf32"]) == options("precision")  # tf32: the fp32 preset with TF32 on
    for group in ("model", "backend", "precision"):
        for option in options(group):
            name = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())["name"]
            assert name == ("fp32" if option == "tf32" else option)


def test_defaults_are_the_study_settings() -> None:
    spec = make_spec()
    assert (spec.model.name, spec.model.variant, spec.model.input_shape) == (
        "densenet",
        "densenet201",
        (3, 224, 224),
    )
    assert (spec.backend.name, spec.precision, spec.batch_size, spec.gpu.index) == (
        "eager",
        "fp32",
        32,
        "auto",
    )
    primary = yaml.safe_load((CONF / "config.yaml").read_text())
    assert primary["hydra"]["callbacks"]["bench"]["_target_"] == "src.callbacks.BenchCallback"
    yolo, seg = make_spec("model=yolo"), make_spec("model=segresnet")
    assert (yolo.model.variant, yolo.model.input_shape) == ("yolov5s", (3, 640, 640))
    assert seg.model.input_shape == (4, 240, 240, 160)
    assert seg.model.options["blocks_down"] == [1, 2, 2, 4] and seg.model.options["init_filters"] == 16


def test_smoke_uses_each_models_tiny_shape() -> None:
    assert make_spec("model=segresnet", "smoke=true").model.input_shape == (4, 16, 16, 16)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["batch_size=0"], "batch_size must be a positive integer, got 0"),
        (["batch_size=-3"], "batch_size must be a positive integer"),
        (["model=segresnet", "model.input_shape=[4,20,20,20]"], "divisible by 8, got 20, 20, 20"),
        (["model=segresnet", "model.input_shape=[4,16,16]"], "must be [C, D, H, W]"),
        (["model=yolo", "model.input_shape=[3,100,100]"], "divisible by 32"),
        (["model=densenet", "model.input_shape=[1,224,224]"], "needs 3 channels"),
        (
            ["model=densenet", "model.variant=densenet999"],
            "allowed: densenet121, densenet161, densenet169, densenet201",
        ),
        (["model=yolo", "model.variant=yolov99s"], "allowed: one of"),
        (["model.weights=/no/such/file.pt"], "weights file not found"),
        (["precision.name=fp8"], "allowed: fp32, fp16, bf16"),
        (["precision=fp16", "precision.tf32=true"], "tf32 applies to fp32 only"),
        (["backend=torchscript", "backend.options.method=jit"], "allowed: auto, trace, script"),
        (["backend=torchscript", "backend.options.fuser=nvfuser"], "allowed: auto, nnc, none"),
        (["+model.options.colour=red"], "unknown option(s) colour; allowed: num_classes"),
        (["backend=compile", "backend.options.precompile=maybe"], "option precompile must be true or false"),
        (["backend=compile", "backend.options.warm_calls=2.5"], "warm_calls must be an integer, got 2.5"),
        (["backend=compile", "backend.options.cache_dir=7"], "cache_dir must be a string or null, got 7"),
        (["model=yolo", "model.options.conf_threshold=high"], "conf_threshold must be a number, got 'high'"),
        (["gpu.index=first"], "allowed: auto, any, cpu, or a CUDA device index"),
        (["measure.min_iters=0"], "measure.min_iters must be >= 1"),
        (["measure.timeout_s=0"], "measure.timeout_s must be > 0"),
        (["gpu=l4", "gpu.index=cpu"], "gpu preset 'NVIDIA L4' cannot run on the CPU"),
        (["telemetry.sample_hz=1000"], "telemetry.sample_hz must be between 0 (off) and 100"),
        (["child_start=forked"], "child_start 'forked'; allowed: template, fresh"),
    ],
)
def test_bad_input_is_refused_naming_what_is_allowed(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_spec(*overrides)
    assert expected in str(err.value)


def test_options_of_their_declared_types_pass() -> None:
    """An integer where a number is asked for, and null where the option allows it, are that option's type."""
    spec = make_spec("backend=tensorrt", "backend.options.workspace_gib=4", "backend.options.cache_dir=null")
    options = BACKENDS.get("tensorrt").parse_options("tensorrt", spec.backend.options)
    assert options.workspace_gib == 4 and options.cache_dir is None
    spec = make_spec("model=yolo", "model.options.conf_threshold=1", "model.options.fuse=true")
    assert MODELS.get("yolo").parse_options("yolo", spec.model.options).conf_threshold == 1


@pytest.mark.parametrize(("key", "registry"), [("model", MODELS), ("backend", BACKENDS)])
def test_an_unknown_name_is_refused_listing_every_registered_one(key: str, registry) -> None:
    with pytest.raises(ConfigError, match=f"unknown {key} 'nonesuch'; allowed: ") as err:
        make_spec(f"{key}.name=nonesuch")
    assert all(name in str(err.value) for name in in_tree(registry))


def test_a_precision_the_backend_cannot_run_is_refused() -> None:
    overrides = ["plugins=[tests.plugins.narrow_backend]", "backend.name=fp32_only"]
    assert unsupported_combination(make_spec(*overrides)) is None
    why = unsupported_combination(make_spec(*overrides, "precision=fp16"))
    assert why == "backend 'fp32_only' cannot run precision 'fp16'; allowed: fp32"


def test_spec_round_trips_through_json_and_gives_flat_params() -> None:
    spec = make_spec("model=segresnet", "backend=torchscript", "smoke=true")
    from src.shared.spec import JobSpec

    assert JobSpec.from_json(spec.to_json()) == spec.__class__.from_dict(spec.to_dict())
    params = spec.params()
    assert params["input_shape"] == "4x16x16x16"
    assert params["model.blocks_down"] == "1,2,2,4"
    assert params["backend.method"] == "auto"
    assert params["measure.min_duration_s"] == "1.0" and params["measure.repeats"] == "3"


def test_the_sweep_grid_is_the_basic_sweepers_own(tmp_path: Path) -> None:
    """`basic_sweep_grid` reads Hydra's internal `split_arguments`: the jobs it gives must be the ones the
    basic sweeper launches (a launcher that records them), for a preset's sweeper params and a command
    line together. A change in Hydra fails here."""
    import importlib

    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf, open_dict

    from src.parent.sweep import basic_sweep_grid

    launched: list[list[str]] = []

    class Recorder:
        def launch(self, batch, initial_job_idx):
            launched.extend(list(job) for job in batch)
            return [JobReturn(status=JobStatus.COMPLETED, _return_value="ok") for _ in batch]

    with initialize_config_dir(str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        args = ["+experiment=study", "model=densenet,yolo", "smoke=true"]
        master = loader.load_configuration("config", args, run_mode=RunMode.MULTIRUN)
        with open_dict(master):
            master.hydra.sweep.dir = str(tmp_path)
        params = OmegaConf.to_container(master.hydra.sweeper.params)
        # the class as Hydra's plugin scan left it importable (it imports the module again)
        basic = importlib.import_module("hydra._internal.core_plugins.basic_sweeper").BasicSweeper
        sweeper = basic(max_batch_size=None, params=params)
        sweeper.config, sweeper.launcher = master, Recorder()
        sweeper.hydra_context = HydraContext(config_loader=loader, callbacks=Callbacks())
        sweeper.sweep(list(master.hydra.overrides.task))
        grid = basic_sweep_grid(master)
    assert launched and grid == launched
    assert len(grid) == 2 * 6 * 4 and grid[0][0].startswith("model=")
