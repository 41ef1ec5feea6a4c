"""openapi.yml stays true: it lists exactly the app's routes, is served, and real answers match it."""

from __future__ import annotations

import re

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from backend_flask.config import ROOT

SPEC = yaml.safe_load((ROOT / "openapi.yml").read_text())
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def app_operations(app) -> set[tuple[str, str]]:
    """Return (METHOD, /openapi/{style}) of every route the app serves."""
    operations = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        operations |= {(method, path) for method in rule.methods - IGNORED_METHODS}
    return operations


def spec_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in SPEC["paths"].items() for method in item
            if method in {"get", "post", "put", "patch", "delete"}}


def test_every_route_is_in_openapi_and_every_openapi_path_is_a_route(app):
    assert app_operations(app) == spec_operations()


def test_openapi_is_served_and_is_the_file(client):
    response = client.get("/api/openapi.yml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    assert yaml.safe_load(response.data) == SPEC


def test_every_operation_documents_its_errors(app):
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            if operation.get("security", SPEC["security"]):
                assert "401" in codes, (method, path)
            if path not in {"/api/openapi.yml"}:
                assert "503" in codes, (method, path)


def resolved(response: dict) -> dict:
    """A response object, following a $ref into components."""
    ref = response.get("$ref")
    return SPEC["components"]["responses"][ref.rsplit("/", 1)[1]] if ref else response


def test_every_503_documents_retry_after_and_every_error_code_the_app_may_answer_is_named():
    described = yaml.safe_dump(SPEC)
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if "503" in operation["responses"]:
                assert "Retry-After" in resolved(operation["responses"]["503"]).get("headers", {}), (method, path)
    for code in ("payload_too_large", "message_invalid", "message_blank", "invalid_json", "invalid_cursor",
                 "database_unavailable", "dynamodb_unavailable", "jwks_unavailable"):
        assert f"`{code}`" in described, code


@pytest.mark.parametrize("token", ["valid", "forged", "none"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_documented_answers_and_never_a_500(app, auth, mode, token, foreign_signing_key,
                                                                     forge):
    headers = {"valid": auth["headers"],
               "forged": {"Authorization": f"Bearer {forge(sub=auth['sub'], key=foreign_signing_key)}"},
               "none": {}}[token]
    # GIVEN the schema as the app serves it, bound to the app (WSGI, no network)
    api = schemathesis.openapi.from_wsgi("/api/openapi.yml", app)
    for result in api.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/events" and token == "valid":
            continue  # an open stream never ends; tests/test_events.py covers it
        if mode is GenerationMode.NEGATIVE and not operation.body and not list(operation.iter_parameters()):
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # WHEN schemathesis sends whatever it generates, with a valid, a forged or no token
            # THEN the answer's status, content type, headers and body are the documented ones.
            # Not checked: that schema-valid requests succeed (a cursor, id or handle is only valid
            # if it exists, which no schema can say) and that every schema violation is refused
            # (unknown query parameters are ignored, as HTTP APIs do).
            case.call_and_validate(headers=headers,
                                   excluded_checks=[positive_data_acceptance, negative_data_rejection])

        check()
