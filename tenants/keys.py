"""API key tokens: `hub_<prefix>_<secret>`.

The prefix (12 hex digits) is the key's public id, used to find it and to revoke it; the secret
(48 hex digits, 192 bits) is shown once and stored only as its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import msgspec

_TOKEN = re.compile(r"^hub_([0-9a-f]{12})_([0-9a-f]{48})\Z")


class Token(msgspec.Struct, frozen=True):
    prefix: str
    secret: str

    def __str__(self) -> str:
        return f"hub_{self.prefix}_{self.secret}"


def new_token() -> Token:
    return Token(prefix=secrets.token_hex(6), secret=secrets.token_hex(24))


def parse_token(raw: str) -> Token | None:
    """The token's parts, or None when it is not shaped like a hub key."""
    match = _TOKEN.match(raw.strip())
    return Token(prefix=match[1], secret=match[2]) if match else None


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored: bytes) -> bool:
    """Constant-time comparison, so timing tells nothing about how much of a guess was right."""
    return hmac.compare_digest(hash_secret(secret), stored)
