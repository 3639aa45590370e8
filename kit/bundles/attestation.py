"""Verification records as in-toto attestations: a Statement v1 in a DSSE envelope, signed with ed25519.

The record of `kit verify` is what a store keeps and what `kit install` checks, so it
uses formats other tools read: an in-toto Statement (`subject`: the bundle id and every
file's sha256; `predicate`: kit's verdicts) wrapped in a DSSE envelope whose payload is
the statement as RFC 8785 canonical JSON. A signature covers DSSE's pre-authentication
encoding of that payload, never the pretty-printed file, so re-indenting a record does
not break it. A key's id is the sha256 of its raw 32-byte ed25519 public key.

Keys are PEM files (``openssl genpkey -algorithm ed25519 -out team.key``; the public
half with ``openssl pkey -in team.key -pubout -out team.pub``) or OpenSSH ed25519 keys.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from kit.base.digests import canonical_bytes, sha256_bytes
from kit.errors import InvalidInput, KitError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "urn:kit:verification:v1"
BUNDLE_SUBJECT = "bundle:"  # the prefix of the subject naming the bundle id; the others name its files


class AttestationError(KitError):
    """A verification record that is malformed, unsigned, or signed by no trusted key (exit 1)."""


# ---- the statement -----------------------------------------------------------


def subject_of(lock: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle (its id is the sha256 of its canonical lock) first, then every file by its path in the bundle."""
    bundle = {
        "name": f"{BUNDLE_SUBJECT}{lock['workflow']}@{lock['version']}",
        "digest": {"sha256": lock["bundle_id"]},
    }
    files = [{"name": name, "digest": {"sha256": sha}} for name, sha in sorted(lock["files"].items())]
    return [bundle, *files]


def statement(subject: list[dict[str, Any]], predicate: dict[str, Any]) -> dict[str, Any]:
    return {"_type": STATEMENT_TYPE, "subject": subject, "predicateType": PREDICATE_TYPE, "predicate": predicate}


def bundle_id_of(stmt: dict[str, Any]) -> str:
    """The bundle id a statement is about; AttestationError when it names none."""
    for entry in stmt.get("subject") or []:
        if str(entry.get("name", "")).startswith(BUNDLE_SUBJECT):
            return entry["digest"]["sha256"]
    raise AttestationError("the verification record's subject names no bundle")


def files_of(stmt: dict[str, Any]) -> dict[str, str]:
    """The bundle's files the statement is about: path in the bundle -> sha256."""
    return {
        entry["name"]: entry["digest"]["sha256"]
        for entry in stmt.get("subject") or []
        if not str(entry.get("name", "")).startswith(BUNDLE_SUBJECT)
    }


# ---- the DSSE envelope -------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a signature covers (type and body, lengths first)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(stmt: dict[str, Any], key_path: str | Path | None = None) -> dict[str, Any]:
    """The statement as a DSSE envelope, signed with the ed25519 key at `key_path` when given."""
    payload = canonical_bytes(stmt)
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [sign(payload, key_path)] if key_path else [],
    }


def countersigned(env: dict[str, Any], key_path: str | Path) -> dict[str, Any]:
    """The envelope with one more signature (an existing record signed later, e.g. when it is published)."""
    signature = sign(payload_of(env), key_path, env["payloadType"])
    kept = [s for s in env.get("signatures") or [] if s.get("keyid") != signature["keyid"]]
    return {**env, "signatures": [*kept, signature]}


def payload_of(env: dict[str, Any]) -> bytes:
    """The envelope's payload bytes; AttestationError when it is no in-toto DSSE envelope."""
    if not isinstance(env, dict) or not isinstance(env.get("payload"), str):
        raise AttestationError("not a DSSE envelope: expected a JSON object with a base64 `payload`")
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise AttestationError(f"the envelope's payloadType is {env.get('payloadType')!r}, expected {PAYLOAD_TYPE!r}")
    try:
        return base64.b64decode(env["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise AttestationError("the envelope's payload is not valid base64") from None


def statement_of(env: dict[str, Any]) -> dict[str, Any]:
    """The in-toto statement inside an envelope (signatures are not checked here: see `check_signature`)."""
    try:
        stmt = json.loads(payload_of(env))
    except ValueError:
        raise AttestationError("the envelope's payload is not JSON") from None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise AttestationError(f"the envelope's payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if stmt.get("predicateType") != PREDICATE_TYPE:
        raise AttestationError(
            f"the statement's predicateType is {stmt.get('predicateType')!r}, expected {PREDICATE_TYPE!r}"
        )
    return stmt


def record_digest(env: dict[str, Any]) -> str:
    """The sha256 of the record's statement (its canonical payload): the same however it is signed or indented."""
    return sha256_bytes(payload_of(env))


# ---- keys and signatures -----------------------------------------------------


def _key_bytes(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def load_private_key(path: str | Path):
    """An ed25519 private key from a PEM (PKCS#8) or OpenSSH file; InvalidInput naming what is wrong."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _key_bytes(path, "signing key")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InvalidInput(f"{path}: the signing key is encrypted; kit signs with an unencrypted key file") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(
            f"{path}: not a PEM or OpenSSH private key ({exc}); make one with: openssl genpkey -algorithm ed25519"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path}: kit signs with ed25519 keys, this is a {type(key).__name__}")
    return key


def load_public_key(path: str | Path):
    """An ed25519 public key from a PEM (SubjectPublicKeyInfo) or OpenSSH (`ssh-ed25519 ...`) file."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _key_bytes(path, "public key")
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(
            f"{path}: not a PEM or OpenSSH public key ({exc}); from a private key: openssl pkey -in KEY -pubout"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path}: kit checks ed25519 signatures, this is a {type(key).__name__}")
    return key


def keyid_of(public_key) -> str:
    """sha256 (hex) of the raw 32-byte ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_bytes(raw)


def sign(payload: bytes, key_path: str | Path, payload_type: str = PAYLOAD_TYPE) -> dict[str, str]:
    """A DSSE signature of `payload`: ``{"keyid": ..., "sig": base64}``, over PAE(payload_type, payload)."""
    key = load_private_key(key_path)
    signature = key.sign(pae(payload_type, payload))
    return {"keyid": keyid_of(key.public_key()), "sig": base64.b64encode(signature).decode("ascii")}


def check_signature(env: dict[str, Any], trusted_public_key_paths: list[str | Path]) -> str:
    """The keyid of a trusted key whose valid signature the envelope carries.

    AttestationError, naming the problem, when the record is unsigned, when no signature
    is by a trusted key, or when a trusted key's signature does not verify (the record
    was changed after it was signed). InvalidInput when a trusted key file is unusable.
    """
    from cryptography.exceptions import InvalidSignature

    payload = payload_of(env)
    signatures = env.get("signatures") or []
    if not signatures:
        raise AttestationError("the verification record is not signed")
    if not trusted_public_key_paths:
        raise AttestationError("no trusted public keys to check the record's signature against")
    trusted = {}
    for path in trusted_public_key_paths:
        key = load_public_key(path)
        trusted[keyid_of(key)] = (key, path)
    message = pae(env["payloadType"], payload)
    for signature in signatures:
        keyid = signature.get("keyid") if isinstance(signature, dict) else None
        if keyid not in trusted:
            continue
        key, path = trusted[keyid]
        try:
            key.verify(base64.b64decode(signature.get("sig") or "", validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            raise AttestationError(
                f"the verification record's signature by key {keyid[:16]} ({path}) does not verify: "
                "the record was changed after it was signed"
            ) from None
        return keyid
    signed_by = ", ".join(str(s.get("keyid", "?"))[:16] for s in signatures if isinstance(s, dict)) or "unknown keys"
    known = ", ".join(f"{k[:16]} ({p})" for k, (_, p) in trusted.items())
    raise AttestationError(f"the verification record is signed by {signed_by}, none of them trusted (trusted: {known})")
