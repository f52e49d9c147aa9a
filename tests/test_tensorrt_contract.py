"""The TensorRT backend's calls checked against the real torch-tensorrt release it is pinned to, since
TensorRT cannot run here: the pinned wheel is fetched from the package index into a cache outside the
tree and its Python sources are read (never imported). Every function the backend calls must exist
there and take each keyword the backend passes as a named parameter (not only through `**kwargs`, where
torch-tensorrt ignores a name it does not know); the compiled engine's class must exist and set the
attribute the backend reads. What this cannot see: the engine build, numerics and speed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from src import PROJECT_ROOT
from src.backends import tensorrt as backend

pytestmark = pytest.mark.network
CACHE = Path.home() / ".cache" / "gpu-inference-bench" / "wheels"


def pinned_version() -> str:
    """The torch-tensorrt version of pyproject.toml's `tensorrt` extra."""
    found = re.search(r'"torch-tensorrt==([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml pins no torch-tensorrt"
    return found[1]


def release_sources(version: str) -> Path:
    """The release's package folder, unpacked from its wheel (fetched once; skipped without the index)."""
    folder = CACHE / f"torch_tensorrt-{version}"
    if (folder / "torch_tensorrt" / "__init__.py").is_file():
        return folder / "torch_tensorrt"
    CACHE.mkdir(parents=True, exist_ok=True)
    fetch = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    fetch += ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "-d", str(CACHE)]
    done = subprocess.run([*fetch, f"torch-tensorrt=={version}"], capture_output=True, text=True, timeout=300)
    wheels = sorted(CACHE.glob(f"torch_tensorrt-{version}-*.whl"))
    if done.returncode != 0 or not wheels:
        why = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        pytest.skip(f"the package index cannot be reached for torch-tensorrt=={version}: {why}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(folder, [n for n in wheel.namelist() if n.startswith("torch_tensorrt/")])
    return folder / "torch_tensorrt"


def module_file(root: Path, dotted: str) -> Path:
    """torch_tensorrt.a.b -> <root>/a/b.py or <root>/a/b/__init__.py."""
    path = root.parent.joinpath(*dotted.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def find(root: Path, module: str, name: str, seen: frozenset = frozenset()) -> ast.AST | None:
    """The definition (function or class) that `module.name` is, following imports as Python would."""
    path = module_file(root, module)
    if (module, name) in seen or not path.is_file():
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):  # imports, also those inside version checks
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package
        for _ in range(max(node.level - 1, 0)):
            base = base.rpartition(".")[0]
        source = f"{base}.{node.module}" if node.level else node.module
        for alias in node.names:
            if alias.name == "*" or (alias.asname or alias.name) == name:
                wanted = name if alias.name == "*" else alias.name
                found = find(root, source or base, wanted, seen | {(module, name)})
                if found is not None:
                    return found
    return None


def named_parameters(function: ast.FunctionDef) -> set[str]:
    a = function.args
    return {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]}


def problems(root: Path, version: str) -> list[str]:
    """What the backend uses that this release does not have, each naming the release and the name."""
    found = []
    for qualified, keywords in backend.api_keywords(version).items():
        module, _, name = qualified.rpartition(".")
        definition = find(root, module, name)
        if not isinstance(definition, ast.FunctionDef):
            found.append(f"torch-tensorrt {version} has no function {qualified}")
            continue
        for keyword in sorted(keywords - named_parameters(definition)):
            found.append(f"torch-tensorrt {version}: {qualified}() has no parameter '{keyword}'")
    engine = find(root, "torch_tensorrt.dynamo.runtime", backend.ENGINE_CLASS)
    if not isinstance(engine, ast.ClassDef):
        found.append(f"torch-tensorrt {version} has no class {backend.ENGINE_CLASS} in dynamo.runtime")
    elif not any(
        isinstance(n, ast.Attribute) and n.attr == backend.ENGINE_BYTES and isinstance(n.ctx, ast.Store)
        for n in ast.walk(engine)
    ):
        found.append(f"torch-tensorrt {version}: {backend.ENGINE_CLASS} never sets .{backend.ENGINE_BYTES}")
    return found


def test_the_backends_calls_match_the_pinned_torch_tensorrt_release() -> None:
    version = pinned_version()
    root = release_sources(version)
    assert (root / "_version.py").read_text().count(version), "the wheel is another release"
    assert problems(root, version) == []


def test_the_typing_branches_the_pinned_release_does_not_take_name_keywords_it_lacks() -> None:
    """`typing_kwargs` picks its keywords by release: the pinned release takes its own branch's, and
    the older branches' keywords are indeed gone from it (so the version gate is where it must be)."""
    import torch

    version = pinned_version()
    compile_fn = find(release_sources(version), "torch_tensorrt.dynamo", "compile")
    accepted = named_parameters(compile_fn)
    for dtype in (torch.float32, torch.float16):
        taken, _ = backend.typing_kwargs(version, dtype)
        assert set(taken) <= accepted
    older = {k for v in ("2.9", "2.12") for k in backend.typing_kwargs(v, torch.float16)[0]}
    assert older == {"enabled_precisions", "use_explicit_typing"}
    assert not older & accepted, f"torch-tensorrt {version} still takes {older & accepted}"


def test_a_renamed_keyword_or_function_is_named_with_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: the backend's compile call with one keyword renamed, and a function renamed."""
    version = pinned_version()
    root = release_sources(version)
    real = backend.compile_kwargs

    def renamed(*args, **kwargs):
        out = real(*args, **kwargs)
        out["timing_cache_file"] = out.pop("timing_cache_path")
        return out

    monkeypatch.setattr(backend, "compile_kwargs", renamed)
    monkeypatch.setattr(backend, "SAVE", "save_program")
    assert problems(root, version) == [
        f"torch-tensorrt {version}: torch_tensorrt.dynamo.compile() has no parameter 'timing_cache_file'",
        f"torch-tensorrt {version} has no function torch_tensorrt.save_program",
    ]
