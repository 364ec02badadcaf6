"""The weakest passwords, refused before an account is made (the node never sees a password to
judge it): the same rule as the page's sign-up (`strength` in web/js/main.js)."""

from __future__ import annotations

import re

MIN_CHARS = 8
COMMON = frozenset(
    {
        "password", "password1", "12345678", "123456789", "1234567890", "qwerty123",
        "qwertyuiop", "iloveyou", "11111111", "00000000", "abcdefgh", "abc12345", "parol123",
        "пароль123", "йцукенгш", "qwerty12", "letmein1", "admin123", "welcome1", "onionchat",
    }
)  # fmt: skip


def weakness(password: str, name: str) -> str | None:
    """Why the password is too weak for a new account, or None."""
    lowered = password.lower()
    if len(password) < MIN_CHARS:
        return f"too short: at least {MIN_CHARS} characters"
    if lowered in COMMON or lowered == name.lower() or re.fullmatch(r"(.)\1*", lowered):
        return "too easy to guess: choose another (a few words make a strong one)"
    return None
