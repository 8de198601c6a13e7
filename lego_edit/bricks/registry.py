"""The brick registry: specs, aliases, implementations, and third-party bricks from entry points.

A third-party package adds bricks by declaring, in its ``pyproject.toml``::

    [project.entry-points."lego_edit.bricks"]
    my_bricks = "my_package.bricks:register"

where ``register(registry)`` calls ``registry.register(spec, implementation)``. The bricks then
appear in ``lego-edit bricks``, in the Builder's system prompt and in the executor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points

from .spec import BrickSpec

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "lego_edit.bricks"

# An implementation is called as fn(ctx, **inputs) and returns {output_name: value}.
Implementation = Callable[..., dict]


@dataclass
class _Entry:
    spec: BrickSpec
    implementation: Implementation | None
    source: str


class BrickRegistry:
    def __init__(self):
        self._entries: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}
        self.plugin_errors: list[str] = []

    def register(
        self,
        spec: BrickSpec,
        implementation: Implementation | None = None,
        *,
        source: str = "lego_edit",
        replace: bool = False,
    ) -> None:
        key = spec.name.upper()
        taken = [n for n in (spec.name, *spec.aliases) if n.upper() in self._aliases]
        if taken and not replace:
            raise ValueError(
                f"brick name(s) {taken} already registered (by {self._source_of(taken[0])}); "
                "pass replace=True to override"
            )
        if replace and key in self._entries:
            self.unregister(spec.name)
        self._entries[key] = _Entry(spec, implementation, source)
        for name in (spec.name, *spec.aliases):
            self._aliases[name.upper()] = key

    def unregister(self, name: str) -> None:
        key = self._aliases.get(name.upper())
        if key is None:
            raise KeyError(name)
        entry = self._entries.pop(key)
        for alias in (entry.spec.name, *entry.spec.aliases):
            self._aliases.pop(alias.upper(), None)

    def bind(self, name: str, implementation: Implementation, source: str | None = None) -> None:
        """Attach (or replace) the implementation of an already declared brick."""
        entry = self._entry(name)
        entry.implementation = implementation
        if source:
            entry.source = source

    def _source_of(self, name: str) -> str:
        return self._entry(name).source

    def _entry(self, name: str) -> _Entry:
        key = self._aliases.get(name.upper())
        if key is None:
            raise KeyError(f"unknown brick {name!r}")
        return self._entries[key]

    def resolve(self, name: str) -> BrickSpec | None:
        """The spec registered under ``name`` or one of its aliases (case-insensitive), else None."""
        key = self._aliases.get(name.upper()) if isinstance(name, str) else None
        return self._entries[key].spec if key else None

    def implementation(self, name: str) -> Implementation | None:
        return self._entry(name).implementation

    def source(self, name: str) -> str:
        return self._entry(name).source

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and name.upper() in self._aliases

    def __iter__(self) -> Iterator[BrickSpec]:
        return (e.spec for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return [e.spec.name for e in self._entries.values()]

    def all_names(self) -> list[str]:
        """Canonical names and aliases, for error suggestions."""
        return [n for e in self._entries.values() for n in (e.spec.name, *e.spec.aliases)]

    def copy(self) -> BrickRegistry:
        new = BrickRegistry()
        new._entries = {k: _Entry(e.spec, e.implementation, e.source) for k, e in self._entries.items()}
        new._aliases = dict(self._aliases)
        new.plugin_errors = list(self.plugin_errors)
        return new

    def load_plugins(self) -> None:
        """Call every ``lego_edit.bricks`` entry point; a broken plugin is logged and skipped."""
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                register = ep.load()
                before = set(self._entries)
                register(self)
                for key in set(self._entries) - before:
                    self._entries[key].source = f"plugin {ep.name} ({ep.value})"
            except Exception as e:  # a plugin must not take the core down with it
                msg = f"brick plugin {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}"
                log.warning(msg)
                self.plugin_errors.append(msg)


def default_registry(plugins: bool = True) -> BrickRegistry:
    """A fresh registry with the built-in bricks (function bricks implemented, model bricks declared)."""
    from .catalog import register_builtin_bricks

    registry = BrickRegistry()
    register_builtin_bricks(registry)
    if plugins:
        registry.load_plugins()
    return registry
