"""The object store: content-addressed files under `.kit/objects/<aa>/<rest-of-sha256>`.

Writes go to a temporary file and are renamed into place, so a crash never leaves a
half-written object, and workers may write without any lock: equal content has one name.
Every read re-hashes the bytes first (DESIGN section 7): an object whose bytes no
longer match its name is a `CorruptObject`, never used. A write of content whose
object is there but corrupt puts the right bytes back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kit.base.digests import sha256_bytes, sha256_file
from kit.errors import KitError, NoSpace, is_no_space
from kit.kernel.api import ARTIFACT_PREFIX

TEMP_PREFIX = ".tmp-"


class CorruptObject(KitError):
    """An object whose bytes do not hash to its name: tampered with, or damaged."""

    def __init__(self, digest: str, path: Path, actual: str, origin: str = ""):
        self.digest, self.path, self.actual = digest, path, actual
        super().__init__(
            f"object sha256:{digest} ({path}) is corrupt: its bytes hash to sha256:{actual}"
            + (f"; it was made by {origin}" if origin else "")
        )

    def made_by(self, origin: str) -> CorruptObject:
        """The same error, saying which run and step made the object."""
        return CorruptObject(self.digest, self.path, self.actual, origin) if origin else self


class MissingObject(KitError):
    """An object the ledger refers to is not in the store."""


def ref_of(digest: str) -> str:
    return ARTIFACT_PREFIX + digest


def digest_of(ref: str) -> str:
    return ref[len(ARTIFACT_PREFIX) :] if ref.startswith(ARTIFACT_PREFIX) else ref


class ObjectStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        digest = digest_of(digest)
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def intact(self, digest: str) -> bool:
        """The object is there and its bytes hash to its name."""
        path = self.path(digest)
        return path.is_file() and sha256_file(path) == digest_of(digest)

    def verified_path(self, digest: str) -> Path:
        """The object's path, once its bytes are re-hashed and match; else MissingObject or CorruptObject."""
        digest = digest_of(digest)
        path = self.path(digest)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise MissingObject(f"object sha256:{digest} is missing from {self.root}") from None
        if actual != digest:
            raise CorruptObject(digest, path, actual)
        return path

    def read_bytes(self, digest: str) -> bytes:
        """The object's bytes, re-hashed against its name first."""
        digest = digest_of(digest)
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingObject(f"object sha256:{digest} is missing from {self.root}") from None
        actual = sha256_bytes(data)
        if actual != digest:
            raise CorruptObject(digest, path, actual)
        return data

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        if self.intact(digest):
            return digest
        return self._write(digest, lambda fh: fh.write(data))

    def put_file(self, source: str | Path) -> str:
        digest = sha256_file(source)
        if self.intact(digest):
            return digest

        def copy(fh) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, fh)

        return self._write(digest, copy)

    def _write(self, digest: str, fill) -> str:
        """Write through a temporary file, made durable, then renamed into place (over a corrupt copy)."""
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.root, prefix=TEMP_PREFIX)
            tmp = Path(name)
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            target = self.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if is_no_space(exc):
                raise NoSpace.writing(self.root) from None
            raise
        return digest

    def temporary_files(self) -> list[Path]:
        """Temporary files a killed writer left behind."""
        return sorted(self.root.glob(TEMP_PREFIX + "*")) if self.root.is_dir() else []

    def digests(self) -> list[str]:
        """Every object's name (its digest)."""
        if not self.root.is_dir():
            return []
        return sorted(
            folder.name + path.name
            for folder in self.root.iterdir()
            if folder.is_dir() and len(folder.name) == 2
            for path in folder.iterdir()
        )
