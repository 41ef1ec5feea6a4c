"""@jwt_required over HTTP: every way a token can be wrong is a 401 with a code, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid

import pytest
from jose import jwk

from backend_flask import clients
from backend_flask.app import create_app
from backend_flask.logs import JSONFormatter
from toolbox import cognito, local_services

PROTECTED = [
    ("GET", "/api/message_groups"),
    ("GET", f"/api/messages/{uuid.uuid4()}"),
    ("POST", "/api/messages"),
    ("GET", "/api/users/@someone/short"),
]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def call(client, method: str, path: str, token: str | None = None, header: str | None = None):
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.open(path, method=method, headers=headers, json={"message": "hi", "handle": "x"})


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token_is_401_token_missing_on_every_protected_route(client, method, path):
    response = call(client, method, path)
    assert response.status_code == 401
    assert response.json == ["token_missing"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc", "bearer abc.def.ghi",
                                    "Bearer abc.def.ghi", "Bearer a b c"])
def test_malformed_authorization_header_is_401_token_invalid(client, header):
    response = call(client, "GET", "/api/message_groups", header=header)
    assert response.status_code == 401
    assert response.json == ["token_invalid"]


def test_valid_access_token_of_a_registered_user_is_let_in(client, auth):
    response = client.get("/api/message_groups", headers=auth["headers"])
    assert response.status_code == 200
    assert response.json == []


def test_bearer_scheme_is_case_insensitive(client, auth):
    response = client.get("/api/message_groups", headers={"Authorization": f"bearer {auth['token']}"})
    assert response.status_code == 200


def test_expired_token_is_401_token_expired(client, auth, forge):
    token = forge(sub=auth["sub"], exp=int(time.time()) - 120, iat=int(time.time()) - 3720)
    response = call(client, "GET", "/api/message_groups", token)
    assert response.status_code == 401
    assert response.json == ["token_expired"]


@pytest.mark.parametrize("claims", [
    {"iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123"},
    {"iss": "http://127.0.0.1:1/local_pool"},
    {"client_id": "anotherappclient"},
    {"token_use": "id"},
], ids=["real_cognito_issuer", "other_local_issuer", "wrong_client", "token_use_id"])
def test_pool_signed_token_with_wrong_claims_is_401(client, auth, forge, claims):
    # GIVEN a token for a registered user, signed by the pool's own key, with one claim wrong
    response = call(client, "GET", "/api/message_groups", forge(sub=auth["sub"], **claims))
    assert response.status_code == 401
    assert response.json == ["token_invalid"]


def test_forged_token_with_right_claims_is_let_in_so_the_401s_above_are_about_the_claim(client, auth, forge):
    assert call(client, "GET", "/api/message_groups", forge(sub=auth["sub"])).status_code == 200


def test_id_token_instead_of_access_token_is_401(client, make_user, sign_in):
    user = make_user()
    response = call(client, "GET", "/api/message_groups", sign_in(user)["IdToken"])
    assert response.status_code == 401
    assert response.json == ["token_invalid"]


def test_alg_none_is_401(client, auth, forge):
    claims = forge(sub=auth["sub"]).split(".")[1]
    for alg in ("none", "None"):
        header = b64(json.dumps({"alg": alg, "kid": "CognitoLocal", "typ": "JWT"}).encode())
        for token in (f"{header}.{claims}.", f"{header}.{claims}"):
            response = call(client, "GET", "/api/message_groups", token)
            assert response.status_code == 401
            assert response.json == ["token_invalid"]


def test_hs256_signed_with_the_pool_public_key_as_secret_is_401(client, auth, forge, pool_signing_key):
    public_pem = jwk.construct(pool_signing_key, "RS256").public_key().to_pem()
    claims = forge(sub=auth["sub"]).split(".")[1]
    header = b64(json.dumps({"alg": "HS256", "kid": pool_signing_key["kid"], "typ": "JWT"}).encode())
    signature = hmac.new(public_pem, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    response = call(client, "GET", "/api/message_groups", f"{header}.{claims}.{b64(signature)}")
    assert response.status_code == 401
    assert response.json == ["token_invalid"]


def test_token_signed_with_a_foreign_key_is_401(client, auth, forge, foreign_signing_key):
    for kid in ("CognitoLocal", "attacker"):
        response = call(client, "GET", "/api/message_groups", forge(sub=auth["sub"], key=foreign_signing_key, kid=kid))
        assert response.status_code == 401
        assert response.json == ["token_invalid"]


def test_real_token_of_a_user_missing_from_postgres_is_401_user_not_registered(client, config, idp):
    # GIVEN a user who exists in the pool (real InitiateAuth token) but has no users row
    email = f"ghost{uuid.uuid4().hex[:8]}@example.test"
    cognito.sign_up(idp, config.cognito_user_pool_id, config.cognito_client_id, email=email,
                    password="Test-passw0rd!", handle=email.split("@")[0], display_name="Ghost")
    token = cognito.access_token(idp, config.cognito_client_id, email=email, password="Test-passw0rd!")
    for method, path in PROTECTED:
        response = call(client, method, path, token)
        assert response.status_code == 401, path
        assert response.json == ["user_not_registered"]


def test_tokens_never_reach_the_logs_and_each_request_logs_one_line(client, auth, forge, caplog):
    # GIVEN every log record of every logger captured
    bad = forge(sub=auth["sub"], exp=int(time.time()) - 120)
    with caplog.at_level(logging.DEBUG):
        client.get("/api/message_groups", headers=auth["headers"])
        call(client, "GET", "/api/message_groups", bad)
        call(client, "GET", "/api/message_groups", "x.y.z")
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    # THEN no token (nor its signature) appears
    for token in (auth["token"], bad):
        assert token not in text
        assert token.split(".")[2] not in text
    # AND every record is one JSON object on one line; each request left one access line
    formatted = [JSONFormatter().format(r) for r in caplog.records]
    assert all("\n" not in line for line in formatted)
    lines = [json.loads(line) for line in formatted if json.loads(line)["logger"] == "backend_flask.access"]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", "/api/message_groups", 200), ("GET", "/api/message_groups", 401),
        ("GET", "/api/message_groups", 401)]
    assert lines[0]["user"] == auth["uuid"]
    assert lines[1]["user"] is None
    assert all(isinstance(line["ms"], float) for line in lines)


def test_a_sub_with_a_newline_stays_inside_one_json_log_line(client, forge, caplog):
    # GIVEN a pool-signed token whose sub carries a newline and what looks like a log line of its own
    sub = 'evil\n{"level": "ERROR", "message": "forged line"}'
    with caplog.at_level(logging.INFO):
        response = call(client, "GET", "/api/message_groups", forge(sub=sub))
    assert (response.status_code, response.json) == (401, ["user_not_registered"])
    # THEN every record formats as one line holding one JSON object, and the sub is inside it, intact
    formatted = [JSONFormatter().format(r) for r in caplog.records]
    assert formatted and all("\n" not in line for line in formatted)
    assert any(sub in json.loads(line)["message"] for line in formatted)


def test_jwks_endpoint_down_is_503_fast_not_500(config, auth):
    # GIVEN an app whose pool's JWKS endpoint has nothing listening
    dead = config.replace(cognito_endpoint_url=f"http://127.0.0.1:{local_services.free_port()}")
    app = create_app(dead)
    try:
        started = time.monotonic()
        response = app.test_client().get("/api/message_groups", headers=auth["headers"])
        elapsed = time.monotonic() - started
    finally:
        clients.close(app)
    assert response.status_code == 503
    assert response.json == ["jwks_unavailable"]
    assert response.headers["Retry-After"]
    assert elapsed < 3


def test_jwks_is_fetched_once_per_process_not_per_request(app, client, auth):
    # GIVEN the app has verified a token (and so holds the pool's keys)
    verifier = app.extensions["cruddur"].verifier
    assert client.get("/api/message_groups", headers=auth["headers"]).status_code == 200
    downloads = verifier.downloads
    # WHEN more requests come
    for _ in range(5):
        assert client.get("/api/message_groups", headers=auth["headers"]).status_code == 200
    # THEN none of them downloaded the JWKS again
    assert verifier.downloads == downloads >= 1
