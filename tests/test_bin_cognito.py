"""bin/cognito/list-users run as a subprocess against the session's cognito-local."""

from __future__ import annotations

import json
import subprocess

from backend_flask.config import ROOT
from toolbox import local_services


def run_bin(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run bin/<script> and return the finished process (text output)."""
    return subprocess.run([str(ROOT / "bin" / script), *args], env=env, capture_output=True, text=True, timeout=60)


def test_list_users_prints_the_pool_as_handle_to_sub(script_env, make_user):
    # GIVEN two users in cognito-local (found through COGNITO_ENDPOINT_URL)
    first, second = make_user(), make_user()
    # WHEN list-users runs
    result = run_bin("cognito/list-users", env=script_env)
    # THEN its output is a JSON map in which both users have their sub
    assert result.returncode == 0, result
    listed = json.loads(result.stdout)
    assert listed[first["handle"]] == first["sub"]
    assert listed[second["handle"]] == second["sub"]


def test_list_users_without_a_pool_id_is_a_one_line_error(script_env):
    result = run_bin("cognito/list-users", env={**script_env, "COGNITO_USER_POOL_ID": ""})
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "COGNITO_USER_POOL_ID" in result.stderr


def test_list_users_with_an_unknown_pool_is_a_one_line_error(script_env):
    result = run_bin("cognito/list-users", env={**script_env, "COGNITO_USER_POOL_ID": "us-east-1_nosuchpool"})
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_list_users_with_cognito_down_is_a_one_line_error(script_env):
    dead = {**script_env, "COGNITO_ENDPOINT_URL": f"http://127.0.0.1:{local_services.free_port()}"}
    result = run_bin("cognito/list-users", env=dead)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_token_prints_an_access_token_of_the_app_client(script_env, make_user, config):
    from jose import jwt

    from tests.conftest import TEST_PASSWORD

    user = make_user()
    # WHEN bin/cognito/token runs with the app client known (as bin/dev records it), and with none known
    # (as against docker compose's stack: it is found by name)
    for env in (script_env, {**script_env, "COGNITO_CLIENT_ID": ""}):
        result = run_bin("cognito/token", f"@{user['handle']}", "--password", TEST_PASSWORD, env=env)
        # THEN it prints the user's access token for the stack's app client
        assert result.returncode == 0, result.stderr
        claims = jwt.get_unverified_claims(result.stdout.strip())
        assert (claims["sub"], claims["client_id"], claims["token_use"]) == (user["sub"], config.cognito_client_id,
                                                                             "access")


def test_token_with_cognito_down_is_a_one_line_error(script_env):
    dead = {**script_env, "COGNITO_ENDPOINT_URL": f"http://127.0.0.1:{local_services.free_port()}",
            "COGNITO_CLIENT_ID": ""}
    result = run_bin("cognito/token", "andrewbrown", env=dead)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
