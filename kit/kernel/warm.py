"""Kernel side of the warm engine: make a reused kernel look fresh for the next step.

Runs inside the kernel, silently, before each step's cells: it removes every name the
previous step defined, empties the output cache, restarts the execution count, sets
the step's environment and working directory. Imported modules stay imported: that
is what makes a warm kernel fast, and the isolation it gives up (module-level state
of imported modules) is stated in each run's record.
"""

from __future__ import annotations

import importlib
import os

_baseline: set[str] | None = None
_env_keys: set[str] = set()


def prepare(workdir: str, env: dict[str, str]) -> None:
    global _baseline, _env_keys
    from IPython import get_ipython

    ip = get_ipython()
    if _baseline is None:
        _baseline = set(ip.user_ns)
    for name in list(ip.user_ns):
        if name not in _baseline:
            del ip.user_ns[name]
    output_cache = ip.user_ns.get("_oh")  # Out[...]; displayhook.flush() would also gc.collect (slow)
    if isinstance(output_cache, dict):
        output_cache.clear()
    for name in ("_", "__", "___"):
        setattr(ip.displayhook, name, "")
        ip.user_ns[name] = ""
    ip.execution_count = 1
    for key in _env_keys - set(env):
        os.environ.pop(key, None)
    os.environ.update(env)
    _env_keys = set(env)
    os.chdir(workdir)
    importlib.invalidate_caches()
    from kit.kernel import api

    api.reset()
