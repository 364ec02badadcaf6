"""The session cookie for browsers: one name and one set of flags, for every page that sets it."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from onionchat.auth import COOKIE, DEVICE_COOKIE

DEVICE_DAYS = 365


def set_session(request: Request, response: Response, token: str, expires: int) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=max(0, expires - int(time.time())),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")


def set_device(request: Request, response: Response, token: str) -> None:
    """The device token: this browser's later logins to the same name skip the delays that
    other clients' failures put on it."""
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=DEVICE_DAYS * 86400,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
