"""Experiment ids: ULIDs, so ids sort by creation time as plain strings."""

import os
import re
import time

CROCKFORD_BASE32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def new_ulid() -> str:
    """Return a 26-character ULID: 48 bits of Unix milliseconds, 80 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(CROCKFORD_BASE32[digit])
    return "".join(reversed(chars))


def is_ulid(text: str) -> bool:
    return ULID_PATTERN.match(text) is not None
