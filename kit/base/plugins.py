"""The one way to plug into kit: entry points, gathered into registries by kind.

Engines (`kit.engines`), LLM providers (`kit.llm_providers`) and comparators
(`kit.comparators`) are all found the same way. kit's own are declared as entry
points in kit's `pyproject.toml`, exactly as a third party declares its own::

    [project.entry-points."kit.comparators"]
    even = "my_package.comparators:EvenComparator"

A name kit itself declares cannot be taken by another package; otherwise the first
package to declare a name wins. `Registry.register` adds one in-process (a conftest, a
notebook) and wins over entry points. A plugin that fails to import is left out of
`names()`, and asking for it by name reports the import error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

KIT_DISTRIBUTION = "kit"


class UnknownPlugin(LookupError):
    """No plugin of that name, or it could not be loaded: `message` says which and lists the
    `known` names; `load_error` is why it could not be loaded, when it exists but broke."""

    def __init__(self, message: str, name: str, known: list[str], load_error: str | None = None):
        super().__init__(message)
        self.message, self.name, self.known, self.load_error = message, name, known, load_error


class Registry:
    """Plugins of one kind by name. `adapt(obj, name)` turns what an entry point names into
    the plugin (instantiate a class, check an interface); it raises to refuse one."""

    def __init__(self, group: str, kind: str, adapt: Callable[[Any, str], Any] | None = None):
        self.group, self.kind = group, kind
        self.adapt = adapt or (lambda obj, name: obj)
        self._lock = threading.RLock()
        self._points: dict[str, Any] | None = None
        self._loaded: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._registered: dict[str, Any] = {}

    def _entry_points(self) -> dict[str, Any]:
        with self._lock:
            if self._points is None:
                from importlib.metadata import entry_points

                points: dict[str, Any] = {}
                try:
                    found = list(entry_points(group=self.group))
                except Exception as exc:  # noqa: BLE001 - a broken environment must not break kit
                    found, self._errors["*"] = [], f"cannot list entry points: {exc}"
                own = [ep for ep in found if _distribution(ep) == KIT_DISTRIBUTION]
                for ep in own + [ep for ep in found if ep not in own]:
                    points.setdefault(ep.name, ep)
                self._points = points
            return self._points

    def _load(self, name: str) -> Any | None:
        """The plugin an entry point names, loaded once; None when there is none or it broke."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._errors:
            return None
        point = self._entry_points().get(name)
        if point is None:
            return None
        try:
            self._loaded[name] = self.adapt(point.load(), name)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is reported, not raised
            self._errors[name] = f"{point.value}: {type(exc).__name__}: {exc}"
            return None
        return self._loaded[name]

    def get(self, name: str) -> Any:
        with self._lock:
            if name in self._registered:
                return self._registered[name]
            if name not in self._entry_points() and name not in self._errors:
                self._points = None  # installed since we looked? look once more before saying no
            plugin = self._load(name)
            if plugin is not None:
                return plugin
            known = self.names()
            if name in self._errors:
                raise UnknownPlugin(
                    f"{self.kind} {name!r} could not be loaded: {self._errors[name]}", name, known, self._errors[name]
                )
            raise UnknownPlugin(f"unknown {self.kind} {name!r} (known: {', '.join(known) or 'none'})", name, known)

    def names(self) -> list[str]:
        """Every usable name, sorted (loading each plugin once to know it works)."""
        with self._lock:
            return sorted(set(self._registered) | {n for n in self._entry_points() if self._load(n) is not None})

    def declared(self) -> list[str]:
        """Every name declared, without loading anything (for help texts)."""
        return sorted(set(self._registered) | set(self._entry_points()))

    def error(self, name: str) -> str | None:
        """Why the plugin `name` could not be loaded, if it could not."""
        return self._errors.get(name)

    def register(self, name: str, plugin: Any) -> Any:
        """Add (or replace) a plugin in this process; it wins over entry points."""
        plugin = self.adapt(plugin, name)
        with self._lock:
            self._registered[name] = plugin
        return plugin

    def reset(self) -> None:
        """Forget what was loaded and registered; the next lookup reads the entry points again."""
        with self._lock:
            self._points = None
            self._loaded.clear()
            self._errors.clear()
            self._registered.clear()


def _distribution(point: Any) -> str | None:
    dist = getattr(point, "dist", None)
    return getattr(dist, "name", None) if dist is not None else None
