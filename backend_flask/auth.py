"""@jwt_required: verify the Cognito access token, put the user on g, or answer 401."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import g, request

from backend_flask import clients
from backend_flask.lib.cognito_jwt_token import InvalidToken
from backend_flask.lib.errors import Unauthorized

log = logging.getLogger(__name__)


def bearer_token(header: str | None) -> str:
    """Return the token of an `Authorization: Bearer <token>` header; raise Unauthorized otherwise."""
    if not header or not header.strip():
        raise Unauthorized("token_missing")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("token_invalid")
    return token


def authenticate(header: str | None) -> dict[str, Any]:
    """Return {uuid, handle, display_name} of the token's user; raise Unauthorized or a 503."""
    return authenticated(header)[0]


def authenticated(header: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the token's user and the token's claims; raise Unauthorized or a 503."""
    c = clients.get()
    try:
        claims = c.verifier.verify(bearer_token(header))
    except InvalidToken as exc:
        # The reason names the failed check, never the token itself.
        log.info("token refused (%s): %s", exc.code, exc)
        raise Unauthorized(exc.code) from None
    user = c.users.get(claims["sub"])
    if user is None:
        log.info("valid token for sub %s without a user row", claims["sub"])
        raise Unauthorized("user_not_registered")
    return user, claims


def jwt_required(view: Callable) -> Callable:
    """Run the view only for a verified user, who is then g.user (and the token's claims g.claims)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        g.user, g.claims = authenticated(request.headers.get("Authorization"))
        return view(*args, **kwargs)

    return wrapped
