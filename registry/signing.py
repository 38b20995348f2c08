"""Signed, expiring URLs for assets in the local file store: HMAC-SHA256 over the ref and the
expiry time, so a URL can be handed to a browser or another machine that holds no registry secret, is
useless for any other blob, and stops working at ``exp``.

The secret is ``registry.secret`` when set, else 32 random bytes generated once and kept in
``<root>/signing.key`` (mode 0600), so URLs survive a restart of the service."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from persona.blobs import check_ref
from registry.errors import Forbidden

KEY_FILE = "signing.key"


def load_secret(section: dict, root: Path) -> bytes:
    """The signing secret from config, or the one stored under ``root`` (created if missing)."""
    if section.get("secret"):
        return str(section["secret"]).encode()
    path = Path(root) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made earlier, or by another process a moment ago
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return _read_secret(path)


def _read_secret(path: Path, timeout_s: float = 5.0) -> bytes:
    # A concurrent creator may not have written the key yet: wait for it, but not forever.
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text().strip()
        if text or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if len(text) < 32:
        raise Forbidden(f"signing key {path} is empty or too short; delete it to make a new one")
    return text.encode()


class UrlSigner:
    """Signs and verifies (ref, expiry) pairs with one secret."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self.secret = secret

    def signature(self, ref: str, expires_at: int) -> str:
        message = f"{check_ref(ref)}\n{int(expires_at)}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def sign(self, ref: str, expires_at: int) -> dict:
        """The query parameters that make a GET of ``ref`` valid until ``expires_at`` (Unix s)."""
        return {"exp": str(int(expires_at)), "sig": self.signature(ref, int(expires_at))}

    def verify(self, ref: str, exp: str | None, sig: str | None, now: float | None = None) -> None:
        """Forbidden unless ``sig`` is this signer's signature of (ref, exp) and exp is in the future."""
        if not exp or not sig:
            raise Forbidden("asset URL is not signed (exp and sig are required)")
        if not exp.isdigit():
            raise Forbidden(f"asset URL has a malformed expiry {exp[:20]!r}")
        try:
            expected = self.signature(ref, int(exp))
        except KeyError as exc:
            raise Forbidden(str(exc.args[0])) from None
        # Compared before the expiry, in constant time, so a forged URL learns nothing from the answer.
        if not hmac.compare_digest(expected, sig):
            raise Forbidden("asset URL signature does not match (tampered with, or signed by another registry)")
        now = time.time() if now is None else now
        if int(exp) <= now:
            raise Forbidden(f"asset URL expired {now - int(exp):.0f} s ago; ask for a new one")
