"""One registry per axis (models, backends), keyed by the name of the axis's YAML file.

Entries live in the modules of a package and register themselves with a decorator; every module of the
package is imported on first lookup, so adding a model or backend means adding its module, its YAML and its
test, nothing else. Out-of-tree entries come in through `plugins` (modules imported before lookup).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, Union, get_args, get_origin, get_type_hints

from src.shared.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        package = importlib.import_module(self._package)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self._package}.{info.name}")
        self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            allowed = ", ".join(self.names())
            raise ConfigError(f"unknown {self.kind} '{name}'; allowed: {allowed}") from None


def load_plugins(modules: Iterable[str]) -> None:
    """Import out-of-tree modules that register models or backends."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"plugin module '{module}' cannot be imported: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of an entry that takes none."""


SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def parse_options(options_cls: type, owner: str, options: dict[str, Any]) -> Any:
    """Build an entry's options dataclass, refusing unknown keys with the list of allowed ones and a value
    whose type is not the option's (a bool, int, float or str option, or None where the option allows it)."""
    allowed = [f.name for f in dataclasses.fields(options_cls)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = ", ".join(allowed) if allowed else "none"
        raise ConfigError(f"{owner}: unknown option(s) {', '.join(unknown)}; allowed: {hint}")
    try:
        hints = get_type_hints(options_cls)
    except (NameError, TypeError):  # a plugin's annotations that cannot be resolved here: not checked
        hints = {}
    for name, value in options.items():
        expected = type_problem(value, hints.get(name))
        if expected:
            raise ConfigError(f"{owner}: option {name} must be {expected}, got {value!r}")
    return options_cls(**options)


def type_problem(value: Any, hint: Any) -> str | None:
    """What a value of this scalar type hint must be, if `value` is not that (None: it is, or the hint is not
    a scalar one and the entry checks it itself)."""
    kinds = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    scalars = [k for k in kinds if k in SCALARS]
    if not scalars or len(scalars) + (type(None) in kinds) < len(kinds):
        return None
    if value is None and type(None) in kinds:
        return None
    if any(type(value) is k or (k is float and type(value) is int) for k in scalars):
        return None
    return " or ".join([SCALARS[k] for k in scalars] + (["null"] if type(None) in kinds else []))
