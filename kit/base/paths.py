"""Confinement: a path a user names must stay inside the folder it belongs to (DESIGN section 11).

Paths are resolved with symlinks followed, so neither ``../..``, an absolute path nor a
symlink can lead a manifest, a scenario or a bundle to a file outside its folder.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutsideRoot(ValueError):
    """A path that resolves outside the folder it must stay in."""


def inside(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """`name` (relative to `root`, or absolute) resolved, symlinks followed; OutsideRoot unless it lies in `root`."""
    root = Path(root).resolve()
    try:
        target = (root / name).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop leads nowhere, so not inside `root`
        raise OutsideRoot(f"{name} cannot be followed ({exc})") from None
    if target != root and not target.is_relative_to(root):
        shown = f"{name} (resolves to {target})" if str(target) != str(name) else str(name)
        raise OutsideRoot(f"{shown} is outside {root}")
    return target
