"""Realistic fake BILL identifiers, shaped like the ones in https://developer.bill.com/docs/sign-up-process

Organization ``008`` + ``01`` + 11 ``A-Z`` + 4 ``[a-z0-9]`` (20 chars), user ``006`` + the same,
developer key ``01`` + 18 ``[A-Z0-9]``, session id ``!a`` + 43 ``[A-Za-z0-9_-]`` (45 chars).
Spend & Expense ids and API tokens have no published shape (UNCONFIRMED): user ids here are
base64 of ``User:<n>`` (what Divvy's GraphQL ids look like), tokens 64 url-safe characters.
"""

from __future__ import annotations

import base64
import random
import secrets
import string
import uuid

# Ids only need to look real and not collide; a seeded PRNG is ten times faster than
# `secrets` when a benchmark creates ten thousand accounts. Session ids, passwords and tokens
# still come from `secrets`.
_random = random.Random(secrets.randbits(128))

UPPER = string.ascii_uppercase
LOWER_DIGITS = string.ascii_lowercase + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


def _pick(alphabet: str, n: int) -> str:
    return "".join(_random.choices(alphabet, k=n))


def entity_id(prefix: str) -> str:
    """A 20-character BILL entity id with a 3-character type prefix (``008`` org, ``006`` user)."""
    return prefix + "01" + _pick(UPPER, 11) + _pick(LOWER_DIGITS, 4)


def organization_id() -> str:
    return entity_id("008")


def user_id() -> str:
    return entity_id("006")


def dev_key() -> str:
    return "01" + _pick(UPPER_DIGITS, 18)


def session_id() -> str:
    # token_urlsafe(32) is exactly 43 characters of [A-Za-z0-9_-].
    return "!a" + secrets.token_urlsafe(32)


def api_token() -> str:
    return secrets.token_urlsafe(48)


def password() -> str:
    return secrets.token_urlsafe(12)


def spend_user_id() -> str:
    return base64.b64encode(f"User:{_random.randrange(100000, 1000000)}".encode()).decode()


def spend_uuid() -> str:
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))
