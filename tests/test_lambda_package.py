"""bin/lambda/package: the zip imports and runs on its own, with only boto3 from the runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

from backend_flask.config import ROOT
from backend_flask.lib import ddb

# Runs in a fresh interpreter with -I: no PYTHONPATH, no current directory on sys.path,
# so only the unzipped folder and site-packages (boto3) can provide modules.
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import handler
result = handler.handler(json.loads(sys.argv[2]), None)
print(json.dumps({"result": result, "backend_flask": sys.modules["backend_flask"].__file__,
                  "flask_loaded": "flask" in sys.modules, "psycopg_loaded": "psycopg" in sys.modules}))
"""


def test_zip_holds_only_the_handler_and_the_access_layer_it_imports(tmp_path):
    # WHEN the package is built
    subprocess.run([str(ROOT / "bin" / "lambda" / "package"), "--out", str(tmp_path)], check=True,
                   capture_output=True, text=True, timeout=60)
    # THEN it holds the handler, the real package files (no stub) of backend_flask/lib/ddb/ and what it imports
    names = set(zipfile.ZipFile(tmp_path / "messaging-stream.zip").namelist())
    assert {"handler.py", "backend_flask/__init__.py", "backend_flask/lib/__init__.py",
            "backend_flask/lib/ddb/__init__.py", "backend_flask/lib/ddb/stream.py",
            "backend_flask/lib/errors.py"} <= names
    archive = zipfile.ZipFile(tmp_path / "messaging-stream.zip")
    assert archive.read("backend_flask/__init__.py") == (ROOT / "backend_flask" / "__init__.py").read_bytes()
    assert all(n in {"handler.py", "backend_flask/__init__.py"} or n.startswith("backend_flask/lib/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "backend_flask/lib/db.py" not in names  # Postgres is not the Lambda's business


def test_zip_is_reproducible(tmp_path):
    for out in ("one", "two"):
        subprocess.run([str(ROOT / "bin" / "lambda" / "package"), "--out", str(tmp_path / out)], check=True,
                       capture_output=True, timeout=60)
    one, two = ((tmp_path / out / "messaging-stream.zip").read_bytes() for out in ("one", "two"))
    assert one == two


def test_unzipped_handler_imports_without_the_project_and_moves_rows(tmp_path, config, ddb_client, conversation,
                                                                     stream_record):
    messages = ddb.MessagesTable(ddb_client, config.ddb_message_table)
    # GIVEN the zip unpacked into an empty folder, and a conversation in the session's table
    subprocess.run([str(ROOT / "bin" / "lambda" / "package"), "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=60)
    function_dir = tmp_path / "function"
    function_dir.mkdir()
    zipfile.ZipFile(tmp_path / "messaging-stream.zip").extractall(function_dir)
    convo = conversation()
    sk = ddb.now_iso()
    item = {"pk": ddb.MESSAGE_PREFIX + convo["group"], "sk": sk, "message_uuid": "m-1", "message": "from the zip",
            "user_uuid": convo["b"]["uuid"], "user_display_name": "Bob", "user_handle": convo["b"]["handle"]}
    event = {"Records": [stream_record("INSERT", item, "900")]}
    # The environment Lambda gives the function, pointed at DynamoDB Local.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DDB_", "PYTHON"))}
    env.update({"AWS_REGION": config.aws_region, "AWS_ENDPOINT_URL": config.aws_endpoint_url,
                "DDB_MESSAGE_TABLE": config.ddb_message_table})
    # WHEN a python with boto3 but without the project imports it there and invokes it
    probe = subprocess.run([sys.executable, "-I", "-c", PROBE, str(function_dir), json.dumps(event)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    # THEN it ran from the zip's files, without Flask or psycopg, and moved both rows
    assert probe.returncode == 0, probe.stderr
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["result"] == {"batchItemFailures": []}
    assert out["backend_flask"].startswith(str(function_dir))
    assert not out["flask_loaded"] and not out["psycopg_loaded"]
    for person in (convo["a"], convo["b"]):
        rows = [r for r in messages.list_message_groups(person["uuid"])["items"]
                if r["uuid"] == convo["group"]]
        assert [(r["created_at"], r["message"]) for r in rows] == [(sk, "from the zip")]
