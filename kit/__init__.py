"""kit: notebooks as typed, governed, replayable workflow steps.

In a step notebook, ``import kit`` gives the notebook API: ``kit.output``,
``kit.load``, ``kit.span`` and ``kit.secret``. Importing kit stays cheap because it
happens in every kernel.
"""

from kit.api import load, output, outputs, secret, span

__version__ = "0.1.0"

__all__ = ["llm", "load", "output", "outputs", "secret", "span", "__version__"]


def __getattr__(name: str):
    """`kit.llm` is imported on first use, so `import kit` stays cheap in every kernel."""
    if name == "llm":
        import importlib

        return importlib.import_module("kit.llm")
    raise AttributeError(f"module 'kit' has no attribute {name!r}")
