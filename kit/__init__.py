"""kit: notebooks as typed, governed, replayable workflow steps.

In a step notebook, ``import kit`` gives the notebook API: ``kit.output``,
``kit.load``, ``kit.span``, ``kit.secret``, ``kit.idempotency_key`` and ``kit.llm``. Importing kit stays cheap
because it happens in every kernel. In any notebook, ``kit.explore()`` opens the ledger's explorer.
"""

from kit.base.version import __version__
from kit.kernel.api import component, idempotency_key, load, output, outputs, secret, span

__all__ = [
    "component",
    "explore",
    "idempotency_key",
    "llm",
    "load",
    "output",
    "outputs",
    "secret",
    "span",
    "__version__",
]


def __getattr__(name: str):
    """`kit.llm` and `kit.explore` are imported on first use, so `import kit` stays cheap in every kernel."""
    if name == "llm":
        import importlib

        return importlib.import_module("kit.kernel.llm")
    if name == "explore":
        from kit.review.explorer import explore

        return explore
    raise AttributeError(f"module 'kit' has no attribute {name!r}")
