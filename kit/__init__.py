"""kit: notebooks as typed, governed, replayable workflow steps.

In a step notebook, ``import kit`` gives the notebook API: ``kit.output``,
``kit.load``, ``kit.span`` and ``kit.secret``. Importing kit stays cheap because it
happens in every kernel.
"""

from kit.api import load, output, outputs, secret, span

__version__ = "0.1.0"

__all__ = ["load", "output", "outputs", "secret", "span", "__version__"]
