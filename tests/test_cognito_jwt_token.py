"""TokenVerifier: cognito-local's real tokens, forged ones, and a JWKS endpoint that misbehaves."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from backend_flask.lib import budget
from backend_flask.lib.cognito_jwt_token import InvalidToken, JWKSUnavailable, TokenVerifier
from tests.helpers import concurrently
from toolbox.local_services import free_port


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    """Build a compact JWS by hand, for headers no library would sign."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


@pytest.fixture(scope="module")
def verifier(config) -> TokenVerifier:
    """A verifier for the session's cognito-local pool and app client."""
    return TokenVerifier(issuer=config.cognito_issuer, jwks_url=config.cognito_jwks_url,
                         client_id=config.cognito_client_id)


def claims_of(token: str) -> dict:
    return jwt.get_unverified_claims(token)


# ------------------------------------------------------------------ cognito-local

def test_access_token_from_initiate_auth_verifies(verifier, make_user):
    # GIVEN a user signed in through cognito-local's InitiateAuth
    user = make_user()
    # WHEN its access token is verified
    claims = verifier.verify(user["token"])
    # THEN the claims name that user
    assert claims["sub"] == user["sub"]
    assert claims["token_use"] == "access"


def test_id_token_is_refused(verifier, make_user, sign_in):
    id_token = sign_in(make_user())["IdToken"]
    with pytest.raises(InvalidToken) as err:
        verifier.verify(id_token)
    assert err.value.code == "token_invalid"


def test_forged_valid_token_passes_so_the_negative_cases_below_mean_something(verifier, forge):
    sub = str(uuid.uuid4())
    assert verifier.verify(forge(sub=sub))["sub"] == sub


@pytest.mark.parametrize("claims", [
    {"iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123"},
    {"client_id": "someotherclient"},
    {"token_use": "id"},
    {"token_use": None},
    {"client_id": None},
    {"exp": None},
    {"iat": None},
    {"sub": None},
    {"sub": ""},
    {"iss": None},
    {"nbf": int(time.time()) + 600},
], ids=["wrong_issuer", "wrong_client", "id_use", "no_use", "no_client", "no_exp", "no_iat", "no_sub",
        "empty_sub", "no_iss", "not_yet_valid"])
def test_pool_signed_token_with_a_bad_claim_is_refused(verifier, forge, claims):
    with pytest.raises(InvalidToken) as err:
        verifier.verify(forge(**claims))
    assert err.value.code == "token_invalid"


def test_expired_token_is_refused_as_expired(verifier, forge):
    with pytest.raises(InvalidToken) as err:
        verifier.verify(forge(exp=int(time.time()) - 60))
    assert err.value.code == "token_expired"


def test_token_expired_within_the_leeway_is_accepted(verifier, forge):
    assert verifier.verify(forge(exp=int(time.time()) - 2))


def test_alg_none_is_refused(verifier, forge):
    claims = claims_of(forge())
    for alg in ("none", "None", "NONE"):
        with pytest.raises(InvalidToken):
            verifier.verify(unsigned({"alg": alg, "kid": "CognitoLocal", "typ": "JWT"}, claims))


def test_hs256_signed_with_the_public_key_as_secret_is_refused(verifier, forge, pool_signing_key):
    # The classic confusion attack: the pool's public key, used as an HMAC secret.
    public = jwk.construct(pool_signing_key, "RS256").public_key().to_pem()
    claims = claims_of(forge())
    header = {"alg": "HS256", "kid": pool_signing_key["kid"], "typ": "JWT"}
    signing_input = unsigned(header, claims).rsplit(".", 1)[0]
    for secret in (public, public.strip()):
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken):
            verifier.verify(f"{signing_input}.{b64(signature)}")


@pytest.mark.parametrize("alg", ["RS512", "PS256", "ES256", "HS512"])
def test_other_algorithms_are_refused(verifier, forge, alg):
    token = forge()
    header_part, claims_part, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_part + "=="))
    header["alg"] = alg
    with pytest.raises(InvalidToken):
        verifier.verify(f"{b64(json.dumps(header).encode())}.{claims_part}.{signature}")


def test_foreign_key_signature_under_the_pool_kid_is_refused(verifier, forge, foreign_signing_key):
    with pytest.raises(InvalidToken):
        verifier.verify(forge(key=foreign_signing_key))


def test_foreign_key_with_an_unknown_kid_is_refused(verifier, forge, foreign_signing_key):
    with pytest.raises(InvalidToken):
        verifier.verify(forge(key=foreign_signing_key, kid="attacker-key"))


def test_tampered_claims_are_refused(verifier, forge):
    header, _claims, signature = forge().split(".")
    other = b64(json.dumps(claims_of(forge(sub="someone-else"))).encode())
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{other}.{signature}")


def test_pool_key_cannot_mint_tokens_for_a_real_pool(forge, config):
    # GIVEN a verifier configured for a real pool (issuer pinned to cognito-idp),
    # even one that (mis)reads its keys from cognito-local's JWKS
    real_issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123"
    verifier = TokenVerifier(issuer=real_issuer, jwks_url=config.cognito_jwks_url,
                             client_id=config.cognito_client_id)
    # WHEN a token minted by cognito-local's shipped key is presented
    # THEN the issuer check refuses it
    with pytest.raises(InvalidToken):
        verifier.verify(forge())


GARBAGE = [
    "", "a", "a.b", "a.b.c", "...", "a.b.c.d", "Bearer x", "\x00.\x00.\x00", "é.é.é", "x" * 9000,
    unsigned({"alg": "RS256"}, {}), unsigned({"alg": "RS256", "kid": 7}, {}),
    unsigned({"alg": "RS256", "kid": ["CognitoLocal"]}, {}),
    unsigned({"alg": "RS256", "kid": "CognitoLocal"}, {}),
    f"{b64(b'[]')}.{b64(b'{}')}.", f"{b64(b'null')}.{b64(b'{}')}.", f"{b64(b'{')}.{b64(b'{}')}.",
    f"{b64(json.dumps({'alg': 'RS256', 'kid': 'CognitoLocal'}).encode())}.{b64(b'[1]')}.{b64(b'x' * 256)}",
    f"{b64(json.dumps({'alg': 'RS256', 'kid': 'CognitoLocal'}).encode())}.!!!.{b64(b'x' * 256)}",
]


@pytest.mark.parametrize("token", GARBAGE)
def test_garbage_raises_invalid_token_and_nothing_else(verifier, token):
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_pool_signed_garbage_claims_raise_invalid_token(verifier, pool_signing_key):
    for claims in ({"exp": "tomorrow"}, {"iat": [1]}, {"sub": 5}, {"iss": ["x"]}, {"exp": 1e309}):
        body = {"sub": "x", "iss": verifier.issuer, "client_id": verifier.client_id, "token_use": "access",
                "iat": int(time.time()), "exp": int(time.time()) + 60, **claims}
        token = jwt.encode(body, pool_signing_key, algorithm="RS256", headers={"kid": "CognitoLocal"})
        with pytest.raises(InvalidToken):
            verifier.verify(token)


# ------------------------------------------------------------------ JWKS endpoint behaviour

@dataclass
class JWKSServer:
    """A real HTTP server publishing a JWKS we control, counting downloads."""

    port: int
    keys: list[dict] = field(default_factory=list)
    body: bytes | None = None    # served as is instead of {"keys": keys} when set
    status: int = 200
    delay: float = 0.0
    hits: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def start(self) -> None:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                state.hits += 1
                time.sleep(state.delay)
                body = state.body if state.body is not None else json.dumps({"keys": state.keys}).encode()
                self.send_response(state.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@dataclass
class Signer:
    """An RSA key pair that signs tokens and publishes its public JWK."""

    kid: str
    pem: str
    public_jwk: dict

    @classmethod
    def new(cls, kid: str) -> Signer:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        public = jwk.construct(pem, "RS256").public_key().to_dict()
        return cls(kid, pem, {**public, "kid": kid, "use": "sig", "alg": "RS256"})

    def token(self, **claims) -> str:
        now = int(time.time())
        body = {"sub": "s", "iss": ISSUER, "client_id": "web", "token_use": "access", "iat": now,
                "exp": now + 600, **claims}
        return jwt.encode(body, self.pem, algorithm="RS256", headers={"kid": self.kid})


ISSUER = "http://issuer.test/pool"


@pytest.fixture(scope="module")
def signers() -> tuple[Signer, Signer]:
    return Signer.new("k1"), Signer.new("k2")


@pytest.fixture
def jwks() -> Iterator[JWKSServer]:
    server = JWKSServer(free_port())
    server.start()
    yield server
    server.stop()


def make_verifier(server: JWKSServer, **kwargs) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, jwks_url=server.url, client_id="web", **kwargs)


def test_jwks_is_fetched_lazily_once_and_cached(jwks, signers):
    # GIVEN a new verifier: nothing is downloaded yet
    jwks.keys = [signers[0].public_jwk]
    verifier = make_verifier(jwks)
    assert jwks.hits == 0
    # WHEN many tokens are verified
    for _ in range(20):
        verifier.verify(signers[0].token())
    # THEN the JWKS was downloaded once
    assert jwks.hits == 1


def test_unknown_kid_refetches_at_most_once_per_interval(jwks, signers):
    # GIVEN a verifier that has just loaded the JWKS
    jwks.keys = [signers[0].public_jwk]
    verifier = make_verifier(jwks, refresh_interval=0.5)
    verifier.verify(signers[0].token())
    unknown = signers[1].token()
    # WHEN a stream of tokens with unknown kids arrives within the interval
    for _ in range(10):
        with pytest.raises(InvalidToken):
            verifier.verify(unknown)
    # THEN none of them caused a download
    assert jwks.hits == 1
    # AND after the interval, a second stream causes exactly one
    time.sleep(0.55)
    for _ in range(10):
        with pytest.raises(InvalidToken):
            verifier.verify(unknown)
    assert jwks.hits == 2


def test_rotated_key_is_picked_up_by_the_refetch(jwks, signers):
    # GIVEN a verifier that loaded the old JWKS
    jwks.keys = [signers[0].public_jwk]
    verifier = make_verifier(jwks, refresh_interval=0.2)
    verifier.verify(signers[0].token())
    # WHEN the pool rotates to a new key and the interval has passed
    jwks.keys = [signers[0].public_jwk, signers[1].public_jwk]
    time.sleep(0.25)
    # THEN a token with the new kid verifies after one refetch
    assert verifier.verify(signers[1].token())["sub"] == "s"
    assert jwks.hits == 2


def test_non_rsa_and_non_signing_keys_in_the_jwks_are_ignored(jwks, signers):
    hs = {"kty": "oct", "kid": "k1", "k": b64(b"secret"), "alg": "HS256"}
    enc = {**signers[1].public_jwk, "use": "enc"}
    jwks.keys = [hs, enc]
    verifier = make_verifier(jwks)
    # An HS256 token whose kid names the oct key: refused before any key is used.
    hs_token = jwt.encode({"sub": "s", "iss": ISSUER, "client_id": "web", "token_use": "access",
                           "iat": int(time.time()), "exp": int(time.time()) + 60}, "secret",
                          algorithm="HS256", headers={"kid": "k1"})
    for token in (hs_token, signers[0].token(), signers[1].token()):
        with pytest.raises(InvalidToken):
            verifier.verify(token)


def test_jwks_endpoint_down_is_unavailable_and_recovers(signers):
    # GIVEN a verifier whose JWKS endpoint has nothing listening
    server = JWKSServer(free_port(), keys=[signers[0].public_jwk])
    verifier = make_verifier(server)
    started = time.monotonic()
    with pytest.raises(JWKSUnavailable):
        verifier.verify(signers[0].token())
    # THEN it fails fast; a retry right away does not even try the network
    with pytest.raises(JWKSUnavailable):
        verifier.verify(signers[0].token())
    assert time.monotonic() - started < 2
    # WHEN the endpoint comes up
    server.start()
    try:
        time.sleep(1.05)
        # THEN tokens verify again, without a new verifier
        assert verifier.verify(signers[0].token())["sub"] == "s"
    finally:
        server.stop()


def test_hanging_jwks_endpoint_is_unavailable_within_the_timeout(jwks, signers):
    jwks.keys = [signers[0].public_jwk]
    jwks.delay = 3
    verifier = make_verifier(jwks, http_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(JWKSUnavailable):
        verifier.verify(signers[0].token())
    assert time.monotonic() - started < 1.5


def test_a_hanging_jwks_endpoint_costs_a_request_no_more_than_its_budget(jwks, signers):
    # GIVEN a JWKS endpoint that answers after 3 s, and a verifier that would wait 5 s
    jwks.keys = [signers[0].public_jwk]
    jwks.delay = 3
    verifier = make_verifier(jwks, http_timeout=5.0)
    # WHEN a token is verified within a budget of half a second
    started = time.monotonic()
    with budget.within(0.5), pytest.raises(JWKSUnavailable):
        verifier.verify(signers[0].token())
    # THEN the download gave up with the budget
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("status", [500, 404])
def test_jwks_error_status_is_unavailable(jwks, signers, status):
    jwks.keys = [signers[0].public_jwk]
    jwks.status = status
    with pytest.raises(JWKSUnavailable):
        make_verifier(jwks).verify(signers[0].token())


def test_failed_refetch_keeps_the_known_keys(jwks, signers):
    # GIVEN a verifier that has the pool's keys
    jwks.keys = [signers[0].public_jwk]
    verifier = make_verifier(jwks, refresh_interval=0)
    verifier.verify(signers[0].token())
    # WHEN the endpoint breaks and an unknown kid forces a refetch
    jwks.status = 500
    with pytest.raises(JWKSUnavailable):
        verifier.verify(signers[1].token())
    # THEN tokens signed with the known key still verify
    assert verifier.verify(signers[0].token())["sub"] == "s"


@pytest.mark.parametrize("answer", [
    b"<html>502 Bad Gateway</html>", b'{"keys": "none"}', b'["k1"]', b'{"keys": []}', b'{}',
    b'{"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB"}]}',
    b'{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}',
], ids=["html", "keys-not-a-list", "not-an-object", "no-keys", "empty-object", "broken-rsa", "symmetric-key"])
def test_a_malformed_refresh_never_drops_the_keys_that_verified_a_moment_ago(jwks, signers, answer):
    # GIVEN a verifier that verified a token signed with the pool's key k1
    jwks.keys = [signers[0].public_jwk]
    verifier = make_verifier(jwks, refresh_interval=0)
    assert verifier.verify(signers[0].token())["sub"] == "s"
    # WHEN the JWKS endpoint answers garbage and anyone forces a refresh with an unknown kid
    jwks.body = answer
    with pytest.raises((InvalidToken, JWKSUnavailable)):
        verifier.verify(signers[1].token())
    assert jwks.hits == 2
    # THEN tokens signed with k1 still verify, and a k1 token with bad claims is still refused
    assert verifier.verify(signers[0].token())["sub"] == "s"
    with pytest.raises(InvalidToken):
        verifier.verify(signers[0].token(client_id="other"))


def test_a_rotation_adds_the_new_key_and_retires_the_old_one_only_after_the_grace(jwks, signers):
    # GIVEN a verifier that knows k1
    jwks.keys = [signers[0].public_jwk]
    verifier = make_verifier(jwks, refresh_interval=0, retired_key_grace=0.5)
    old = signers[0].token()
    assert verifier.verify(old)["sub"] == "s"
    # WHEN the pool rotates: its JWKS now lists k2 only
    jwks.keys = [signers[1].public_jwk]
    # THEN k2 tokens verify after one refresh, and k1 tokens signed a moment ago still do
    assert verifier.verify(signers[1].token())["sub"] == "s"
    assert verifier.verify(old)["sub"] == "s"
    # AND once the grace has passed, the retired k1 is refused
    time.sleep(0.6)
    with pytest.raises(InvalidToken):
        verifier.verify(old)
    assert verifier.verify(signers[1].token())["sub"] == "s"


def test_concurrent_first_requests_download_once(jwks, signers):
    jwks.keys = [signers[0].public_jwk]
    jwks.delay = 0.2
    verifier = make_verifier(jwks)
    token = signers[0].token()
    results = concurrently(lambda: verifier.verify(token)["sub"], [()] * 8)
    assert results == ["s"] * 8
    assert jwks.hits == 1



def test_expired_token_of_another_client_is_invalid_not_expired(verifier, forge):
    # A token that was never ours must not be reported as merely expired (which invites a refresh).
    with pytest.raises(InvalidToken) as err:
        verifier.verify(forge(client_id="someotherclient", exp=int(time.time()) - 600))
    assert err.value.code == "token_invalid"
