"""A throw-away local stack on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from toolbox import cognito, local_services, pg, settings


@dataclass
class EphemeralStack:
    """Running services and the settings that reach them."""

    config: Config
    workdir: Path
    postgres: local_services.Service | None
    dynamodb: local_services.Service
    cognito: local_services.Service
    services: list[local_services.Service] = field(default_factory=list)


@contextlib.contextmanager
def ephemeral_stack(workdir: Path, *, connection_url: str | None = None,
                    **config_overrides) -> Iterator[EphemeralStack]:
    """Start Postgres (unless connection_url is given), DynamoDB Local in memory and cognito-local.

    Loads the schema, creates the user pool, app client and table, and stops
    every service on exit.
    """
    started: list[local_services.Service] = []
    try:
        pg_service = None
        if connection_url is None:
            port = local_services.free_port()
            pg_service = local_services.start_postgres(workdir / "postgres", port, database="cruddur_test",
                                                       throwaway=True)
            started.append(pg_service)
            connection_url = f"postgresql://postgres@127.0.0.1:{port}/cruddur_test"
        dynamodb = local_services.start_dynamodb_local(local_services.free_port(), None, workdir / "dynamodb.log")
        started.append(dynamodb)
        cognito_service = local_services.start_cognito_local(local_services.free_port(), workdir / "cognito",
                                                             workdir / "cognito.log")
        started.append(cognito_service)
        pg.load_schema(connection_url)
        idp = make_client("cognito-idp", region="us-east-1", endpoint_url=cognito_service.url)
        pool_id, client_id = cognito.ensure_pool(idp)
        config = Config.from_env(
            environ={},
            **{
                "connection_url": connection_url,
                "aws_endpoint_url": dynamodb.url,
                "cognito_endpoint_url": cognito_service.url,
                "cognito_user_pool_id": pool_id,
                "cognito_client_id": client_id,
                "log_level": "WARNING",
                **config_overrides,
            },
        )
        settings.messages_table(config).create()
        yield EphemeralStack(config, workdir, pg_service, dynamodb, cognito_service, started)
    finally:
        for service in reversed(started):
            service.stop()
