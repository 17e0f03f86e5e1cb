"""The API-key token format: generating a token, reading its id, hashing it.

A key looks like ``llmobs_<id>_<secret>``. The id is stored in clear so a key can be listed and
revoked; only the SHA-256 of the whole token is stored, never the token. The secret has 190 bits
of entropy, so a fast hash is enough (a slow password hash guards low-entropy secrets).

A leaf module: settings generate keys (``llmobs init``) and the store keeps their hashes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass

_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_TOKEN_RE = re.compile(r"^llmobs_([a-z0-9]{12})_([A-Za-z0-9]{32})$")


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    token: str


def generate_api_key() -> NewApiKey:
    """A new random key: its id and the whole token (shown once, then only its hash is kept)."""
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))
    return NewApiKey(key_id, f"llmobs_{key_id}_{secret}")


def key_id_of(token: str) -> str | None:
    """The id part of a well-formed token; None for anything else."""
    match = _TOKEN_RE.match(token)
    return match.group(1) if match else None


def hash_token(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()
