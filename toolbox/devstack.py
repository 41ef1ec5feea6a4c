"""bin/dev: bring up the whole local stack with demo data and serve the API.

Postgres (embedded, or CONNECTION_URL), DynamoDB Local and cognito-local run
as child processes with their data under .local/, so a second run keeps it.
Ctrl-C stops every process started here.
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
from backend_flask.lib.aws import make_client
from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.errors import Error
from toolbox import cognito, local_services, pg, seed, settings, stream_runner, users
from toolbox.settings import LOCAL_DIR, ROOT

log = logging.getLogger("bin/dev")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/dev", description=__doc__.splitlines()[0])
    parser.add_argument("--flask-dev", action="store_true",
                        help="serve with Flask's reloading dev server instead of gunicorn")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--no-api", action="store_true", help="start the services and data only")
    return parser.parse_args(argv)


def start_services(config: Config, env_has_db_url: bool) -> tuple[list[local_services.Service], Config]:
    """Start the backing services on their fixed ports; return them and the config that reaches them."""
    started: list[local_services.Service] = []
    logs = LOCAL_DIR / "logs"
    for name, port in (("DynamoDB Local", settings.DDB_PORT), ("cognito-local", settings.COGNITO_PORT),
                       ("the API", settings.API_PORT)) + (() if env_has_db_url else (("Postgres", settings.PG_PORT),)):
        if local_services.port_open(port):
            raise local_services.ServiceError(
                f"port {port} for {name} is already in use (another bin/dev running?); stop it first")
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


def prepare_data(config: Config) -> Config:
    """Load schemas, create the pool and demo users once, and return the config with the pool ids."""
    pg.load_schema(config.connection_url)
    pg.run_script(config.connection_url, pg.SEED_FILE)
    idp = make_client("cognito-idp", region=config.cognito_region, endpoint_url=config.cognito_endpoint_url)
    pool_id, client_id = cognito.ensure_pool(idp)
    config = config.replace(cognito_user_pool_id=pool_id, cognito_client_id=client_id)
    users.sign_up_all(config.connection_url, idp, pool_id, client_id, settings.DEMO_PASSWORD)
    result = users.update_cognito_user_ids(config.connection_url, idp, pool_id)
    for handle, _old, new in result["changed"]:
        log.info("user %s -> cognito sub %s", handle, new)
    table = MessagesTable(make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url),
                          config.ddb_message_table)
    if table.create():
        log.info("created DynamoDB table %s", config.ddb_message_table)
    group = seed.seed_demo_conversation(table, config.connection_url)
    if group:
        log.info("wrote the demo conversation %s", group)
    return config


def stop_all(services: list[local_services.Service]) -> None:
    """Stop services in reverse start order."""
    for service in reversed(services):
        try:
            service.stop()
            log.info("stopped %s", service.name)
        except Exception:  # keep stopping the others
            log.exception("could not stop %s", service.name)


def main(argv: list[str] | None = None) -> int:
    """Run the local stack until Ctrl-C."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    # The environment wins over the local services' fixed addresses (CONNECTION_URL: your own Postgres).
    base = Config.from_env({**settings.local_defaults(), **os.environ})
    env_has_db_url = bool(os.environ.get("CONNECTION_URL"))
    LOCAL_DIR.mkdir(exist_ok=True)
    started: list[local_services.Service] = []
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    # Explicitly, because a shell starts background jobs with SIGINT ignored, and the services run
    # in sessions of their own: a closed terminal (SIGHUP) must stop them too.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        started, config = start_services(base, env_has_db_url)
        config = prepare_data(config)
        settings.write_state(config)
        # Pattern E, as the Lambda does it in AWS: conversation lists follow new messages.
        started.append(stream_runner.start_process(config))
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
        log.error("%s exited; stopping the rest", ", ".join(dead))
        return 1
    except KeyboardInterrupt:
        return 0
    except (local_services.ServiceError, Error) as exc:
        log.error("%s", exc)
        return 1
    finally:
        stop_all(started)


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
Ctrl-C stops everything; data stays in {Path(LOCAL_DIR).relative_to(ROOT)}/.
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
