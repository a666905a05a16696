"""Keyed pseudonyms and invitation codes: what ATS analysts see instead of resident ids, and what a letter carries.

Both are HMAC-SHA-256 under one secret key, so nobody without the key can compute them from a resident id or
guess them. The key comes from configuration: ``PRESA_SECRET_KEY`` (at least 32 characters), else the file named
by ``PRESA_SECRET_KEY_FILE``, else ``presa.key`` in the working directory - created with 256 random bits, readable
by its owner only, the first time it is needed (the embedded default, beside the default SQLite file). Changing
the key changes every pseudonym and invalidates the codes of letters already sent.

- a pseudonym is ``ps_`` and 20 hex digits (80 bits) of HMAC(key, ``resident:<resident_id>``): stable across
  runs and databases, so analyses can be linked over time without knowing who is who;
- an invitation code is ``<invitation id>-<8 base32 characters>`` (40 bits of HMAC(key, ``invitation:<id>``)):
  the patient shows it to the gestore they choose, who cannot take in charge a patient whose code they were not
  given;
- a pseudonym's index is 64 bits of HMAC(key, ``pseudonym-index:<pseudonym>``), stored per patient so that a
  pseudonym finds its patient by an index lookup (``presa.care.service.pseudonyms``). The store keeps this digest,
  not the pseudonym: someone holding a copy of the database and an analyst's pseudonymised extract still needs the
  key to join them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

KEY_VARIABLE = "PRESA_SECRET_KEY"
KEY_FILE_VARIABLE = "PRESA_SECRET_KEY_FILE"
DEFAULT_KEY_FILE = "presa.key"
MIN_KEY_LENGTH = 32
PSEUDONYM = re.compile(r"ps_[0-9a-f]{20}")
INVITATION_CODE = re.compile(r"([1-9][0-9]{0,17})-([A-Z2-7]{8})")


class SecretKeyError(ValueError):
    """A secret key that is missing or too short."""


def secret_key(environ: dict[str, str] | None = None) -> bytes:
    """The configured key (see the module docstring)."""
    env = environ if environ is not None else dict(os.environ)
    raw = env.get(KEY_VARIABLE, "").strip()
    if raw:
        return check_key(raw.encode("utf-8"), KEY_VARIABLE)
    path = Path(env.get(KEY_FILE_VARIABLE, "").strip() or Path.cwd() / DEFAULT_KEY_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
    return check_key(path.read_bytes().strip(), str(path))


def check_key(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_LENGTH:
        raise SecretKeyError(f"{where}: the secret key must have at least {MIN_KEY_LENGTH} characters")
    return key


def pseudonym(key: bytes, resident_id: str) -> str:
    digest = hmac.new(key, f"resident:{resident_id}".encode(), hashlib.sha256).hexdigest()
    return "ps_" + digest[:20]


def pseudonym_index(key: bytes, value: str) -> int:
    """The signed 64-bit index of a pseudonym (a BIGINT in the store)."""
    digest = hmac.new(key, f"pseudonym-index:{value}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def resident_index(key: bytes, resident_id: str) -> int:
    """The index of a resident's pseudonym."""
    return pseudonym_index(key, pseudonym(key, resident_id))


def invitation_code(key: bytes, invitation_id: int) -> str:
    return f"{invitation_id}-{_code_mac(key, invitation_id)}"


def invitation_of_code(key: bytes, code: str) -> int | None:
    """The invitation id a code stands for, or None when the code is malformed or forged."""
    match = INVITATION_CODE.fullmatch(code.strip().upper())
    if match is None:
        return None
    invitation_id = int(match.group(1))
    if not hmac.compare_digest(_code_mac(key, invitation_id), match.group(2)):
        return None
    return invitation_id


def _code_mac(key: bytes, invitation_id: int) -> str:
    digest = hmac.new(key, f"invitation:{invitation_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:5]).decode("ascii")
