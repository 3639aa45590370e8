"""Imports put off until first use, for what kit's processes import and rarely use.

Called before the import that would pull the module in (the fork engine's zygote, the
contracts' jsonschema): the real module is imported the first time anything uses it,
so behaviour is unchanged and only the start-up cost moves.
"""

from __future__ import annotations

import sys
from typing import Any


def defer_iri_grammar() -> None:
    """Put off building rfc3987_syntax's IRI grammar (0.7 s) until something checks an IRI.

    jsonschema's format checker imports ``rfc3987_syntax`` for its ``iri`` formats only, and
    that import builds a grammar: every process importing jsonschema (nbformat does) would
    start 0.7 s slower (FIELD-NOTES). A stand-in module takes its place; its first use
    imports the real one, so a format check sees what it would see without kit.
    """
    import importlib
    import importlib.util
    import types

    name = "rfc3987_syntax"
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    stand_in = types.ModuleType(name)
    loaded: list[types.ModuleType] = []

    def real() -> types.ModuleType:
        if not loaded:
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            loaded.append(importlib.import_module(name))  # from now on the real one is imported
        return loaded[0]

    def is_valid_syntax(*args: Any, **kwargs: Any) -> Any:  # what jsonschema imports from it
        return real().is_valid_syntax(*args, **kwargs)

    def attribute(key: str) -> Any:
        if key.startswith("__"):  # what the import system asks a module (__path__, __spec__) is not a use
            raise AttributeError(key)
        return getattr(real(), key)

    stand_in.is_valid_syntax = is_valid_syntax
    stand_in.__getattr__ = attribute
    sys.modules[name] = stand_in
