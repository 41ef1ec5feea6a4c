"""The data every local stack starts with: bin/dev and docker compose's init service both call prepare().

The schema and the demo users in Postgres, the user pool and app client in
cognito-local with the demo users signed up and linked (users.cognito_user_id
= sub), the DynamoDB table (with TTL) and the demo conversation. Each step
creates only what is missing, so running it again changes nothing.
"""

from __future__ import annotations

import logging

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from toolbox import cognito, pg, seed, settings, users

log = logging.getLogger(__name__)


def prepare(config: Config, password: str = settings.DEMO_PASSWORD) -> Config:
    """Create what is missing of the demo data; return the config with the pool and app client ids."""
    pg.load_schema(config.connection_url)
    pg.load_seed(config.connection_url)
    idp = make_client("cognito-idp", region=config.cognito_region, endpoint_url=config.cognito_endpoint_url,
                      timeout=10.0)
    pool_id, client_id = cognito.ensure_pool(idp)
    config = config.replace(cognito_user_pool_id=pool_id, cognito_client_id=client_id)
    users.sign_up_all(config.connection_url, idp, pool_id, client_id, password)
    result = users.update_cognito_user_ids(config.connection_url, idp, pool_id)
    for handle, _old, new in result["changed"]:
        log.info("user %s -> cognito sub %s", handle, new)
    table = settings.messages_table(config)
    if table.create():
        log.info("created DynamoDB table %s (with TTL)", config.ddb_message_table)
    group = seed.seed_demo_conversation(table, config.connection_url)
    if group:
        log.info("wrote the demo conversation %s", group)
    return config
