"""Kernel side of the warm engine: make a reused kernel look fresh for the next step.

Runs inside the kernel, silently, before each step's cells. The first call records
the kernel's baseline; each call puts the kernel back to it:

- names: the names a step defined are removed, the output cache emptied, the
  execution count restarted;
- environment: `os.environ` is the baseline's plus the step's own variables;
- builtins: names a step added to `builtins` are removed, those it replaced restored;
- modules: the functions, classes and other callables a step replaced in an
  imported module (monkeypatches) are restored. A module is recorded the first time
  `prepare` finds it imported: the baseline's as they were, a module a step
  imported as that step left it.

It also sets the step's working directory and collects the processes the engine
killed when the previous step ended. Imported modules stay imported: that is what
makes a warm kernel fast, and the isolation it gives up (the other state of imported
modules: caches, settings, constants; threads a step left running) is stated in
each run's record.
"""

from __future__ import annotations

import builtins
import importlib
import os
import sys
import types
from typing import Any

from kit.kernel import api

_MISSING = object()


def _restore(namespace: dict[str, Any], saved: dict[str, Any]) -> None:
    """Put back in `namespace` each value of `saved` that was replaced or deleted since."""
    for name, value in saved.items():
        current = namespace.get(name, _MISSING)
        if current is not value and not (isinstance(current, types.MethodType) and current == value):
            namespace[name] = value  # (the kernel binds the same methods again: sys.excepthook, input)


class _Baseline:
    """The kernel as the first step found it, and the callables of each module recorded since."""

    def __init__(self, user_ns: dict[str, Any]):
        self.user_ns = user_ns
        self.names = set(user_ns)
        self.environ = dict(os.environ)
        self.builtins = dict(vars(builtins))
        self.modules: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # name: (its namespace, its callables)
        self.record_new_modules()

    def record_new_modules(self) -> None:
        for name in sys.modules.keys() - self.modules.keys():
            module = sys.modules.get(name)
            if not isinstance(module, types.ModuleType) or name in ("builtins", __name__):
                continue  # builtins are restored their own way; this module's state is the baseline
            namespace = vars(module)
            if namespace is not self.user_ns:  # __main__, __mp_main__: the names reset takes care of it
                self.modules[name] = (namespace, {k: v for k, v in namespace.copy().items() if callable(v)})

    def restore(self, env: dict[str, str]) -> None:
        for namespace, callables in self.modules.values():
            _restore(namespace, callables)
        namespace = vars(builtins)
        for name in namespace.keys() - self.builtins.keys():
            del namespace[name]
        _restore(namespace, self.builtins)
        wanted = {**self.environ, **env}
        for key in os.environ.keys() - wanted.keys():
            del os.environ[key]
        for key, value in wanted.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        self.record_new_modules()


_baseline: _Baseline | None = None


def prepare(workdir: str, env: dict[str, str]) -> None:
    """Put the kernel back to its baseline, then set the step's environment and working directory."""
    global _baseline
    from IPython import get_ipython

    ip = get_ipython()
    if _baseline is None:
        _baseline = _Baseline(ip.user_ns)
    _baseline.restore(env)
    for name in list(ip.user_ns):
        if name not in _baseline.names:
            del ip.user_ns[name]
    output_cache = ip.user_ns.get("_oh")  # Out[...]; displayhook.flush() would also gc.collect (slow)
    if isinstance(output_cache, dict):
        output_cache.clear()
    for name in ("_", "__", "___"):
        setattr(ip.displayhook, name, "")
        ip.user_ns[name] = ""
    ip.execution_count = 1
    _reap_children()
    os.chdir(workdir)
    importlib.invalidate_caches()
    api.reset()


def _reap_children() -> None:
    """Collect the processes the engine killed when the previous step ended, so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
