"""The API under gunicorn, as bin/dev and production run it: each worker builds its own clients."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import requests

from toolbox import local_services
from toolbox.local_services import free_port, port_open
from toolbox.settings import child_env


def test_gunicorn_workers_each_build_their_app_and_serve_without_logging_tokens(script_env, auth, tmp_path):
    # GIVEN gunicorn with two workers on the session's services
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {**script_env, "LOG_LEVEL": "INFO"}
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "backend_flask.wsgi:app", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--worker-class", "gthread", "--threads", "4", "--access-logfile", "-"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        # WHEN requests come in over HTTP
        base = f"http://127.0.0.1:{port}"
        with requests.Session() as http:
            statuses = [http.get(f"{base}/api/message_groups", headers=auth["headers"], timeout=10).status_code
                        for _ in range(12)]
            refused = http.get(f"{base}/api/message_groups", headers={"Authorization": "Bearer a.b.c"}, timeout=10)
            health = http.get(f"{base}/api/health", timeout=10)
        # THEN they are served
        assert statuses == [200] * 12
        assert (refused.status_code, refused.json()) == (401, ["token_invalid"])
        assert health.status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
    output = log_path.read_text()
    # AND each worker built its own app (pool, DynamoDB client, JWKS cache), not the master
    creators = set(re.findall(r"app created \(pid (\d+)", output))
    assert len(creators) == 2, output
    assert str(server.pid) not in creators
    # AND one request line per request, none with the token in it
    assert output.count('"path": "/api/message_groups"') == 13
    assert auth["token"] not in output
    assert auth["token"].split(".")[2] not in output


def test_every_line_the_server_logs_is_one_json_object_even_for_a_sub_with_a_newline(config, auth, forge, tmp_path):
    # GIVEN the API's own server logging at INFO to a file
    log_path = tmp_path / "api.log"
    api = local_services.start_api(child_env(config, LOG_LEVEL="INFO"), free_port(), log_path=log_path, workers=1)
    sub = 'evil\n{"level": "ERROR", "message": "forged line"}'
    try:
        # WHEN a served request, a refused token and a token whose sub carries a newline come in
        base = f"http://127.0.0.1:{api.port}"
        with requests.Session() as http:
            assert http.get(f"{base}/api/message_groups", headers=auth["headers"], timeout=10).status_code == 200
            assert http.get(f"{base}/api/message_groups", headers={"Authorization": "Bearer a.b.c"},
                            timeout=10).status_code == 401
            forged = http.get(f"{base}/api/message_groups", headers={"Authorization": f"Bearer {forge(sub=sub)}"},
                              timeout=10)
            assert forged.json() == ["user_not_registered"]
    finally:
        api.stop()
    # THEN every line of the log is a JSON object, and the sub sits inside one of them, intact
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    assert any(sub in r["message"] for r in records)
    assert [r["status"] for r in records if r["logger"] == "backend_flask.access"] == [200, 401, 401]
