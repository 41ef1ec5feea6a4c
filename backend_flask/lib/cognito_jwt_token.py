"""Verification of Cognito access tokens against the user pool's JWKS (no Flask here).

One TokenVerifier per process: it downloads the pool's signing keys lazily,
keeps them, and refetches only when a token names an unknown `kid`, at most
once per `refresh_interval`. Anyone can force that refetch (any made-up
`kid` does), so a refetch only ever adds keys: a failed, malformed or empty
answer leaves the known keys as they were, and a key the pool stops
publishing is still trusted for `retired_key_grace` seconds (tokens it signed
a moment ago stay valid until then). Only RS256 is accepted, whatever a token's
header claims; the issuer pins the pool, so tokens minted by cognito-local
(whose private key is public) are refused where a real pool is configured.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

import requests
from jose import jwk, jws
from jose.exceptions import JWKError, JWSError

from backend_flask.lib import budget
from backend_flask.lib.errors import ServiceUnavailable

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
MAX_TOKEN_LENGTH = 8192          # Cognito access tokens are ~1 KB; refuse absurd input early
MAX_JWKS_BYTES = 256 * 1024
FAILED_FETCH_BACKOFF = 1.0       # seconds a failed JWKS download is remembered (fail fast meanwhile)
RETIRED_KEY_GRACE = 3600.0       # seconds a key the pool no longer publishes is still trusted (Cognito: 1 h tokens)


class InvalidToken(Exception):
    """The token cannot be trusted; `code` is what the API shows (token_invalid, token_expired)."""

    def __init__(self, code: str = "token_invalid", reason: str = ""):
        super().__init__(reason or code)
        self.code = code


class JWKSUnavailable(ServiceUnavailable):
    """The pool's JWKS could not be downloaded."""

    code = "jwks_unavailable"


class TokenVerifier:
    """Verify Cognito access tokens of one user pool and one app client."""

    def __init__(self, *, issuer: str, jwks_url: str, client_id: str, refresh_interval: float = 60.0,
                 http_timeout: float = 2.0, leeway: float = 5.0, retired_key_grace: float = RETIRED_KEY_GRACE):
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.client_id = client_id
        self.refresh_interval = refresh_interval
        self.http_timeout = http_timeout
        self.leeway = leeway
        self.retired_key_grace = retired_key_grace
        self._keys: dict[str, jwk.Key] | None = None
        self._unpublished_since: dict[str, float] = {}   # kid -> when a download first did not list it
        self._attempted_at = float("-inf")       # monotonic time of the last download attempt
        self._failed_at = float("-inf")          # monotonic time of the last failed download
        self._lock = threading.Lock()
        self.downloads = 0                       # JWKS download attempts, for metrics and tests
        self._session = requests.Session()

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid access token; raise InvalidToken or JWKSUnavailable."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise InvalidToken(reason="not a compact JWS")
        try:
            header = jws.get_unverified_header(token)
        except JWSError as exc:
            raise InvalidToken(reason=f"unreadable header: {exc}") from exc
        # Pin the algorithm before any key is touched: no "none", no HS256 with a public key.
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(reason=f"algorithm {header.get('alg')!r} not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken(reason="no kid")
        key = self._key(kid)
        try:
            payload = jws.verify(token, key, algorithms=[ALGORITHM])
        except JWSError as exc:
            raise InvalidToken(reason=f"bad signature: {exc}") from exc
        try:
            claims = json.loads(payload)
        except ValueError as exc:
            raise InvalidToken(reason="claims are not JSON") from exc
        if not isinstance(claims, dict):
            raise InvalidToken(reason="claims are not an object")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """Raise InvalidToken unless the signed claims make this an unexpired access token for us."""
        # Whose token it is first: a foreign token is invalid, whether or not it has expired.
        if claims.get("iss") != self.issuer:
            raise InvalidToken(reason="issued by another pool")
        if claims.get("token_use") != "access":
            raise InvalidToken(reason="not an access token")
        if claims.get("client_id") != self.client_id:
            raise InvalidToken(reason="issued to another app client")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken(reason="no sub")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
        if not all(_is_time(v) for v in (exp, iat, nbf)):
            raise InvalidToken(reason="exp, iat or nbf missing or not a number")
        now = time.time()
        if now > exp + self.leeway:
            raise InvalidToken("token_expired", "expired")
        if iat > now + self.leeway or nbf > now + self.leeway:
            raise InvalidToken(reason="not valid yet")

    def _key(self, kid: str) -> jwk.Key:
        """Return the pool's key `kid`, downloading the JWKS first if needed and allowed."""
        key = self._known(kid)
        if key is not None:
            return key
        # Another request may be downloading: wait for it no longer than the budget allows.
        wait = budget.remaining()
        if not self._lock.acquire(timeout=-1 if wait is None else max(0.0, wait)):
            raise JWKSUnavailable(detail="JWKS download by another request outlived this one's budget")
        try:
            # Another thread may have refreshed while this one waited.
            key = self._known(kid)
            if key is not None:
                return key
            now = time.monotonic()
            if self._keys is not None and now - self._attempted_at < self.refresh_interval:
                # Rate limit: a stream of made-up kids must not turn into a stream of downloads.
                raise InvalidToken(reason=f"unknown kid {kid!r}")
            if self._keys is None and now - self._failed_at < FAILED_FETCH_BACKOFF:
                raise JWKSUnavailable(detail="JWKS download failed a moment ago")
            self._attempted_at = now
            self.downloads += 1
            self._keys = self._merge(self._fetch())
            key = self._known(kid)
            if key is None:
                raise InvalidToken(reason=f"unknown kid {kid!r}")
            return key
        finally:
            self._lock.release()

    def _known(self, kid: str) -> jwk.Key | None:
        """Return a key already downloaded, unless the pool stopped publishing it longer than the grace ago."""
        keys = self._keys
        if keys is None or kid not in keys:
            return None
        since = self._unpublished_since.get(kid)
        if since is not None and time.monotonic() - since > self.retired_key_grace:
            return None
        return keys[kid]

    def _merge(self, published: dict[str, jwk.Key]) -> dict[str, jwk.Key]:
        """Return the known keys with a download's keys added (called under the lock).

        A download without one usable key tells nothing (a broken or hostile
        answer): the known keys stay. Keys a usable download no longer lists
        are retired after `retired_key_grace`.
        """
        known = dict(self._keys or {})
        now = time.monotonic()
        if not published:
            if known:
                log.warning("JWKS from %s has no usable key; keeping the %d known", self.jwks_url, len(known))
            return known
        for kid in known.keys() - published.keys():
            self._unpublished_since.setdefault(kid, now)
        for kid in published:
            self._unpublished_since.pop(kid, None)
        known.update(published)
        for kid, since in list(self._unpublished_since.items()):
            if now - since > self.retired_key_grace:
                known.pop(kid, None)
                del self._unpublished_since[kid]
        return known

    def _fetch(self) -> dict[str, jwk.Key]:
        """Download and parse the JWKS; only RSA signing keys for RS256 are kept."""
        timeout = budget.bound(self.http_timeout)
        try:
            if timeout <= 0:
                raise requests.Timeout("the request's time budget is spent")
            response = self._session.get(self.jwks_url, timeout=timeout)
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("JWKS too large")
            document = response.json()
            entries = document["keys"]
            if not isinstance(entries, list):
                raise ValueError("keys is not a list")
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            self._failed_at = time.monotonic()
            log.warning("JWKS download from %s failed: %s", self.jwks_url, exc)
            raise JWKSUnavailable(detail=f"JWKS unavailable: {exc}") from exc
        keys: dict[str, jwk.Key] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("alg", ALGORITHM) != ALGORITHM or entry.get("use", "sig") != "sig":
                continue
            try:
                keys[entry["kid"]] = jwk.construct(entry, algorithm=ALGORITHM)
            except (JWKError, ValueError, TypeError, KeyError) as exc:  # python-jose raises all of these
                log.warning("skipping unusable JWKS key %s: %s", entry["kid"], exc)
        log.info("loaded %d signing key(s) from %s", len(keys), self.jwks_url)
        return keys


def _is_time(value: Any) -> bool:
    """Tell whether a claim is a finite NumericDate (bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
