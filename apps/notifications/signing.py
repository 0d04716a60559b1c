"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<raw body>" with the team's secret.

A receiver checks `X-Plinth-Signature: sha256=<hex>` against the raw body and the
`X-Plinth-Timestamp` header, and refuses old timestamps (a replayed call). `verify` is the
reference implementation (receivers written in Python may copy it)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SCHEME = "sha256"
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None) -> bool:
    """True when `signature` is ours for this body and timestamp, and the timestamp is recent."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    if age > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
