"""The object store: content-addressed files under `.kit/objects/<aa>/<rest-of-sha256>`.

Writes go to a temporary file and are renamed into place, so a crash never leaves a
half-written object, and workers may write without any lock: equal content has one name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from kit.kernel.api import ARTIFACT_PREFIX

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


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

    def _place(self, tmp: Path, digest: str) -> str:
        target = self.path(digest)
        if target.exists():
            tmp.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        return digest

    def _tempfile(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        os.close(fd)
        return Path(name)

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.has(digest):
            return digest
        tmp = self._tempfile()
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return self._place(tmp, digest)

    def put_file(self, source: str | Path) -> str:
        digest = sha256_file(source)
        if self.has(digest):
            return digest
        tmp = self._tempfile()
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        return self._place(tmp, digest)

    def read_bytes(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()
