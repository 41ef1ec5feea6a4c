"""Settings of the local stack: fixed dev ports, the demo password, and bin/dev's state file.

The shipped `Config` reads only the environment. bin/dev records the running
stack's addresses and pool ids in `.local/dev-state.json`; bin/ scripts run
from another terminal read it here, and every process the toolbox starts gets
those settings in its environment, explicitly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from backend_flask.lib.ddb import MessagesTable

ROOT = Path(__file__).resolve().parents[1]
# bin/dev's data, logs and records; DEV_LOCAL_DIR moves it (tests run a bin/dev of their own there).
LOCAL_DIR = Path(os.environ.get("DEV_LOCAL_DIR") or ROOT / ".local")
STATE_FILE = LOCAL_DIR / "dev-state.json"
PID_FILE = LOCAL_DIR / "dev-pids.json"

# Fixed ports the frontend and README expect; each can be moved with its variable.
API_PORT = int(os.environ.get("PORT") or 4567)
PG_PORT = int(os.environ.get("DEV_PG_PORT") or 15432)
DDB_PORT = int(os.environ.get("DEV_DDB_PORT") or 8000)
COGNITO_PORT = int(os.environ.get("DEV_COGNITO_PORT") or 9229)
DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD") or "Cruddur-demo-1!"
DEMO_HANDLES = ("andrewbrown", "bayko", "londo")
# The settings of a running stack that bin/dev records for other terminals.
STATE_KEYS = ("CONNECTION_URL", "AWS_ENDPOINT_URL", "COGNITO_ENDPOINT_URL", "COGNITO_USER_POOL_ID",
              "COGNITO_CLIENT_ID", "DDB_MESSAGE_TABLE", "AWS_REGION")


def local_defaults() -> dict[str, str]:
    """Return the settings that reach the local stack on its fixed ports."""
    return {
        "CONNECTION_URL": f"postgresql://postgres@127.0.0.1:{PG_PORT}/cruddur",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{DDB_PORT}",
        "COGNITO_ENDPOINT_URL": f"http://127.0.0.1:{COGNITO_PORT}",
    }


def read_state() -> dict[str, str]:
    """Return the settings bin/dev recorded for the running local stack (empty if none)."""
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in state.items() if k in STATE_KEYS} if isinstance(state, dict) else {}


def write_state(config: Config) -> None:
    """Record the running local stack's settings for bin/ scripts in other terminals."""
    env = config.as_env()
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps({k: env[k] for k in STATE_KEYS if k in env}, indent=2, sort_keys=True) + "\n")


def local_config(environ: Mapping[str, str] | None = None) -> Config:
    """Return the settings of the local stack: fixed ports, then bin/dev's state, then the environment."""
    env = {**local_defaults(), **read_state(), **(os.environ if environ is None else environ)}
    return Config.from_env(env)


def prod_config(environ: Mapping[str, str] | None = None) -> Config:
    """Return the production settings: the environment alone, endpoints of local services dropped."""
    env = dict(os.environ if environ is None else environ)
    for name in ("AWS_ENDPOINT_URL", "COGNITO_ENDPOINT_URL"):
        env.pop(name, None)
    if env.get("PROD_CONNECTION_URL"):
        env["CONNECTION_URL"] = env["PROD_CONNECTION_URL"]
    return Config.from_env(env)


def child_env(config: Config, **extra: str) -> dict[str, str]:
    """Return the environment of a child process of the stack: ours, the config's settings, and `extra`."""
    return {**os.environ, **config.as_env(), **extra, "PYTHONPATH": str(ROOT)}


def messages_table(config: Config, **client_options) -> MessagesTable:
    """Return the messages table the config names, over a client for its endpoint (the one way tools build it)."""
    options = {"timeout": config.ddb_timeout, "max_attempts": config.ddb_max_attempts, **client_options}
    client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url, **options)
    return MessagesTable(client, config.ddb_message_table)
