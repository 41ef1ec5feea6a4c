"""bin/dev: bring up the whole local stack with demo data and serve the API.

Postgres (embedded, or CONNECTION_URL), DynamoDB Local and cognito-local run
as child processes with their data under .local/, so a second run keeps it.
Ctrl-C stops every process started here. Their pids are recorded in
.local/dev-pids.json: if this process is killed outright (SIGKILL), the next
bin/dev, or `bin/dev --stop`, stops what it left running.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from backend_flask.config import Config
from backend_flask.lib.errors import Error
from toolbox import demo, dev_pids, local_services, pg, settings, stream_runner
from toolbox.settings import LOCAL_DIR, ROOT

log = logging.getLogger("bin/dev")


class UsageError(Exception):
    """The command line is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # As every failure of bin/dev: one `error:` line and exit status 1 (argparse would exit 2).
        raise UsageError(f"{message} (see bin/dev --help)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="bin/dev", description=__doc__.splitlines()[0])
    parser.add_argument("--flask-dev", action="store_true",
                        help="serve with Flask's reloading dev server instead of the API's server")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--no-api", action="store_true", help="start the services and data only")
    parser.add_argument("--stop", action="store_true",
                        help="stop the running bin/dev, or what a killed one left running, and exit")
    return parser.parse_args(argv)


def clean_up_after_dead_dev(pids: dev_pids.PidFile | None) -> None:
    """Refuse to start beside a live bin/dev; stop what a dead one left running."""
    if pids is None:
        return
    owner = pids.live_owner()
    if owner is not None:
        raise local_services.ServiceError(
            f"another bin/dev is running (pid {owner.pid}); stop it with Ctrl-C in its terminal or bin/dev --stop")
    stopped, foreign = pids.stop_leftovers()
    dead = pids.owner.pid if pids.owner else "?"
    for entry in stopped:
        log.info("stopped %s, left running by a bin/dev that died (pid %s)", entry.describe(), dead)
    for entry in foreign:
        log.info("left pid %s alone: it is no longer the %s that bin/dev started", entry.pid, entry.name)
    pids.remove()
    settings.STATE_FILE.unlink(missing_ok=True)


def stop_command() -> int:
    """bin/dev --stop: stop the recorded bin/dev (it stops its services) and anything it left running."""
    pids = dev_pids.PidFile.read(settings.PID_FILE)
    if pids is None:
        print(f"nothing to stop: no bin/dev recorded in {settings.PID_FILE}")
        return 0
    owner = pids.live_owner()
    if owner is not None:
        os.kill(owner.pid, signal.SIGTERM)
        if dev_pids.wait_gone([pids.owner], dev_pids.STOP_TIMEOUT * 2):
            raise local_services.ServiceError(f"bin/dev (pid {owner.pid}) did not stop; its services are "
                                              f"listed in {settings.PID_FILE}")
        print(f"stopped bin/dev (pid {owner.pid}) and its services")
    stopped, foreign = pids.stop_leftovers()
    for entry in stopped:
        print(f"stopped {entry.describe()}")
    for entry in foreign:
        print(f"left pid {entry.pid} alone: it is no longer the {entry.name} that bin/dev started")
    if owner is None and not stopped:
        print("nothing was running")
    pids.remove()
    settings.STATE_FILE.unlink(missing_ok=True)
    return 0


def start_services(config: Config, env_has_db_url: bool) -> tuple[list[local_services.Service], Config]:
    """Start the backing services on their fixed ports; return them and the config that reaches them."""
    started: list[local_services.Service] = []
    logs = LOCAL_DIR / "logs"
    for name, port in (("DynamoDB Local", settings.DDB_PORT), ("cognito-local", settings.COGNITO_PORT),
                       ("the API", settings.API_PORT)) + (() if env_has_db_url else (("Postgres", settings.PG_PORT),)):
        if local_services.port_open(port):
            raise local_services.ServiceError(
                f"port {port} for {name} is already in use by {dev_pids.listener(port)}; stop it first")
    try:
        if not env_has_db_url:
            started.append(local_services.start_postgres(LOCAL_DIR / "postgres", settings.PG_PORT))
            config = config.replace(connection_url=f"postgresql://postgres@127.0.0.1:{settings.PG_PORT}/cruddur")
        ddb_service = local_services.start_dynamodb_local(settings.DDB_PORT, LOCAL_DIR / "dynamodb",
                                                          logs / "dynamodb-local.log")
        started.append(ddb_service)
        cognito_service = local_services.start_cognito_local(settings.COGNITO_PORT, LOCAL_DIR / "cognito",
                                                             logs / "cognito-local.log")
        started.append(cognito_service)
    except BaseException:
        stop_all(started)
        raise
    config = config.replace(aws_endpoint_url=ddb_service.url, cognito_endpoint_url=cognito_service.url)
    return started, config


def stop_all(services: list[local_services.Service]) -> None:
    """Stop services in reverse start order."""
    for service in reversed(services):
        try:
            service.stop()
            log.info("stopped %s", service.name)
        except Exception:  # keep stopping the others
            log.exception("could not stop %s", service.name)


def main(argv: list[str] | None = None) -> int:
    """Run the local stack until Ctrl-C; failures print one `error:` line and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.stop:
            return stop_command()
        return run_stack(args)
    except (UsageError, local_services.ServiceError, Error) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1


def run_stack(args: argparse.Namespace) -> int:
    """Start everything, serve until a signal or a dead service, stop everything."""
    # The environment wins over the local services' fixed addresses (CONNECTION_URL: your own Postgres).
    base = Config.from_env({**settings.local_defaults(), **os.environ})
    env_has_db_url = bool(os.environ.get("CONNECTION_URL"))
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    clean_up_after_dead_dev(dev_pids.PidFile.read(settings.PID_FILE))
    pids = dev_pids.PidFile(settings.PID_FILE)
    pids.start()
    started: list[local_services.Service] = []
    stopping = False

    def record(service: local_services.Service) -> None:
        pids.add(service.name, service.process.pid, service.stop_signal, [str(a) for a in service.process.args])

    def on_signal(signum, _frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    # Explicitly, because a shell starts background jobs with SIGINT ignored, and the services run
    # in sessions of their own: a closed terminal (SIGHUP) must stop them too.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    local_services.on_spawn.append(record)
    try:
        started, config = start_services(base, env_has_db_url)
        config = demo.prepare(config)
        settings.write_state(config)
        # Pattern E, as the Lambda does it in AWS: conversation lists follow new messages.
        started.append(stream_runner.start_process(config, state_file=LOCAL_DIR / "stream-positions.json"))
        if args.no_api:
            print("Local services are up. Ctrl-C stops them.", flush=True)
        elif args.flask_dev:
            api = local_services.spawn("api", [sys.executable, "-m", "flask", "--app", "backend_flask.wsgi:app",
                                               "run", "--debug", "--host", "127.0.0.1", "--port",
                                               str(settings.API_PORT)],
                                       None, settings.API_PORT, cwd=ROOT, env=settings.child_env(config))
            started.append(api)
            api.wait_ready(lambda: local_services.port_open(settings.API_PORT), timeout=30)
            print_banner(config)
        else:
            started.append(local_services.start_api(settings.child_env(config), settings.API_PORT,
                                                    workers=args.workers))
            print_banner(config)
        while all(s.running() for s in started):
            time.sleep(0.5)
        dead = [s.name for s in started if not s.running()]
        raise local_services.ServiceError(f"{', '.join(dead)} exited; stopped the rest (logs in {LOCAL_DIR}/)")
    except KeyboardInterrupt:
        return 0
    finally:
        local_services.on_spawn.remove(record)
        stop_all(started)
        pids.remove()
        settings.STATE_FILE.unlink(missing_ok=True)


def print_banner(config: Config) -> None:
    """Tell the developer where things are and how to call the API."""
    url = f"http://localhost:{settings.API_PORT}"
    print(f"""
Cruddur messaging API:  {url}   (health: {url}/api/health)
  Postgres              {pg.redact(config.connection_url)}
  DynamoDB Local        {config.aws_endpoint_url}   (table {config.ddb_message_table})
  cognito-local         {config.cognito_endpoint_url}   (pool {config.cognito_user_pool_id})

Call it as a demo user (andrewbrown, bayko, londo):
  curl -H "Authorization: Bearer $(bin/cognito/token andrewbrown)" {url}/api/message_groups

Chat over the live event stream, in two terminals:
  bin/chat andrewbrown bayko        bin/chat bayko

The stream runner moves conversation rows as messages land (pattern E).
Ctrl-C stops everything; data stays in {_shown(LOCAL_DIR)}/.
""", flush=True)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main())
