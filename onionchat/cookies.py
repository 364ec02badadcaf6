"""The session cookie for browsers: one name and one set of flags, for every page that sets it."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from onionchat.auth import COOKIE


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
