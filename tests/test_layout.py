"""The house: what ships is separate from the local toolbox, and ships no developer's settings."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from backend_flask.config import ROOT, Config
from tests.helpers import dockerfile_stages

SHIPPED = ROOT / "backend_flask"


def _run(code: str, env: dict[str, str] | None = None, cwd=ROOT) -> dict:
    """Run Python code in a fresh interpreter with the project importable; return its JSON output."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COGNITO_", "DDB_"))}
    result = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {}), "PYTHONPATH": str(ROOT)},
                            cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", ["backend_flask", "backend_flask.lib.ddb", "backend_flask.lib.db",
                                    "backend_flask.lib.users", "backend_flask.lib.cognito_jwt_token",
                                    "backend_flask.config", "backend_flask.services.messages"])
def test_importing_the_data_access_and_services_does_not_import_flask(module):
    loaded = _run(f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))")
    assert not [m for m in loaded if m == "flask" or m.startswith(("flask.", "werkzeug", "flask_cors"))]


def test_the_shipped_package_never_imports_the_toolbox_bench_or_tests():
    # GIVEN every import statement of every shipped file
    offenders = []
    for path in SHIPPED.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [(path.name, n) for n in names if n.split(".")[0] in {"toolbox", "bench", "tests"}]
    # THEN none of them reaches local tooling
    assert offenders == []


def test_only_config_reads_the_environment():
    readers = [p.relative_to(ROOT).as_posix() for p in SHIPPED.rglob("*.py")
               if "os.environ" in p.read_text() or "getenv" in p.read_text()]
    assert readers == ["backend_flask/config.py"]


def test_a_stale_dev_state_file_never_reaches_the_shipped_config(tmp_path):
    # GIVEN a checkout where bin/dev once ran (its state file names local services) and no AWS settings
    state = ROOT / ".local" / "dev-state.json"
    state.parent.mkdir(exist_ok=True)
    saved = state.read_text() if state.exists() else None
    state.write_text(json.dumps({"AWS_ENDPOINT_URL": "http://127.0.0.1:8000",
                                 "COGNITO_ENDPOINT_URL": "http://127.0.0.1:9229",
                                 "COGNITO_USER_POOL_ID": "local_pool", "COGNITO_CLIENT_ID": "local-client"}))
    try:
        # WHEN the app is built as production builds it, from the checkout and from elsewhere
        code = ("import json; from backend_flask.app import create_app; from backend_flask import clients;"
                "app = create_app(); c = app.extensions['cruddur'];"
                "print(json.dumps({'ddb': c.messages.client.meta.endpoint_url, 'iss': c.verifier.issuer,"
                " 'client_id': c.verifier.client_id}))")
        env = {"AWS_REGION": "eu-west-1", "COGNITO_USER_POOL_ID": "eu-west-1_Real", "COGNITO_CLIENT_ID": "realclient",
               "COGNITO_REGION": "eu-west-1", "CONNECTION_URL": "postgresql://app@db.example.invalid/cruddur",
               "LOG_LEVEL": "ERROR"}
        seen = [_run(code, env, cwd=cwd) for cwd in (ROOT, tmp_path)]
    finally:
        if saved is None:
            state.unlink()
        else:
            state.write_text(saved)
    # THEN it talks to real DynamoDB and trusts only the real pool's issuer
    for resolved in seen:
        assert resolved["ddb"] == "https://dynamodb.eu-west-1.amazonaws.com"
        assert resolved["iss"] == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Real"
        assert resolved["client_id"] == "realclient"


def test_config_defaults_are_production_defaults():
    config = Config.from_env({})
    assert config.aws_endpoint_url is None and config.cognito_endpoint_url is None
    assert config.connection_url == ""  # required in production: no developer's server as a default


def test_the_api_image_holds_only_the_shipped_package_and_its_data():
    # GIVEN the Dockerfile's stages
    stages = dockerfile_stages(ROOT / "Dockerfile")
    by_name = {stage.name: stage for stage in stages if stage.name}
    api = by_name["api"]
    # THEN the API stage gets backend_flask, the SQL templates and the API description, nothing of the toolbox
    assert api.base.startswith("python:")
    assert set(api.copies()) == {"requirements.txt", "backend_flask/", "db/sql/", "openapi.yml"}
    # AND the default target (the last stage) is that image, with nothing added
    assert (stages[-1].base, stages[-1].instructions) == ("api", [])
    # AND the toolbox is in the `tools` stage only, which no other stage is built from
    assert [stage.name for stage in stages if any(src.startswith("toolbox") for src in stage.copies())] == ["tools"]
    assert by_name["tools"].base == "api" and all(stage.base != "tools" for stage in stages)


def test_the_build_context_keeps_what_the_stages_copy_and_nothing_local():
    import fnmatch

    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.rstrip("/").split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(prefix, pattern.rstrip("/")) for prefix in prefixes for pattern in patterns)

    copied = {src for stage in dockerfile_stages(ROOT / "Dockerfile") for src in stage.copies()}
    assert {"toolbox/", "db/", "aws/lambdas/"} <= copied
    assert [src for src in sorted(copied) if ignored(src)] == []
    for local_only in (".venv", "node_modules", ".local", ".git", "tests", "bench"):
        assert ignored(local_only), local_only


def test_the_api_image_runs_as_a_user_with_a_home_that_exists():
    # A system user's home does not exist by default: a server that keeps a file there (gunicorn's
    # control socket in ~/.gunicorn) fails. The image creates it and says where it is.
    api = {stage.name: stage for stage in dockerfile_stages(ROOT / "Dockerfile")}["api"]
    [useradd] = [run for run in api.args("RUN") if "useradd" in run]
    assert "--create-home" in useradd.split() and "--home-dir /home/cruddur cruddur" in useradd
    assert api.env()["HOME"] == "/home/cruddur"
    assert api.args("USER") == ["cruddur"]
