"""The baseline: how the original bootcamp backend served the three message routes.

It is kept only to be measured against, on the same services in the same
run. It reproduces the original's costs, not its bugs' effects on data:
per request it downloads the pool's JWKS and builds a new boto3 client, looks
the user up through a shared pool, then runs the original's single DynamoDB
call: the year-filtered Query of a conversation list (B) or of a conversation
(A, with no membership check), or an unconditional PutItem (D). Timestamps are
UTC, so the stream handler can read what it writes.
Serve with gunicorn: bench.baseline_app:app (settings from the environment).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import boto3
import requests
from flask import Flask, jsonify, request
from jose import jwk, jwt
from jose.utils import base64url_decode
from psycopg_pool import ConnectionPool

from backend_flask.config import Config

config = Config.from_env()
app = Flask(__name__)
pool = ConnectionPool(config.connection_url, min_size=1, max_size=8, open=True)


def verify(token: str) -> dict:
    """Download the JWKS and check the token's signature and claims, as the original did each call."""
    keys = requests.get(config.cognito_jwks_url, timeout=5).json()["keys"]
    headers = jwt.get_unverified_header(token)
    key = next(k for k in keys if k["kid"] == headers["kid"])
    message, signature = token.rsplit(".", 1)
    if not jwk.construct(key).verify(message.encode(), base64url_decode(signature.encode())):
        raise ValueError("bad signature")
    claims = jwt.get_unverified_claims(token)
    if claims.get("client_id") != config.cognito_client_id:
        raise ValueError("bad client")
    return claims


def current_user() -> tuple | None:
    """Return (uuid, display_name, handle) of the token's user, or None if the token does not verify."""
    try:
        claims = verify(request.headers["Authorization"].split(" ", 1)[1])
    except Exception:
        return None
    with pool.connection() as conn:
        return conn.execute("SELECT uuid::text, display_name, handle FROM public.users "
                            "WHERE cognito_user_id = %s LIMIT 1", (claims["sub"],)).fetchone()


def new_client():
    """A new boto3 client, as the original built for every request."""
    return boto3.client("dynamodb", endpoint_url=config.aws_endpoint_url, region_name=config.aws_region,
                        aws_access_key_id="local", aws_secret_access_key="local")


def query_this_year(pk: str) -> list[dict]:
    """The original's Query: newest 20 of a partition, only this year's (its January bug)."""
    year = str(datetime.now(timezone.utc).year)
    return new_client().query(
        TableName=config.ddb_message_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :year)",
        ExpressionAttributeValues={":pk": {"S": pk}, ":year": {"S": year}},
        ScanIndexForward=False, Limit=20, ReturnConsumedCapacity="TOTAL",
    )["Items"]


def shown(item: dict, uuid_attribute: str) -> dict:
    """An item as the original answered it: its uuid, the user's name and handle, the text and the time."""
    return {"uuid": item[uuid_attribute]["S"], "display_name": item["user_display_name"]["S"],
            "handle": item["user_handle"]["S"], "message": item["message"]["S"], "created_at": item["sk"]["S"]}


@app.get("/api/message_groups")
def message_groups():
    """List my conversations the original way."""
    user = current_user()
    if user is None:
        return jsonify({}), 401
    return jsonify([shown(item, "message_group_uuid") for item in query_this_year(f"GRP#{user[0]}")]), 200


@app.get("/api/messages/<message_group_uuid>")
def messages(message_group_uuid: str):
    """List a conversation's latest messages the original way (no membership check)."""
    if current_user() is None:
        return jsonify({}), 401
    items = query_this_year(f"MSG#{message_group_uuid}")
    return jsonify([shown(item, "message_uuid") for item in reversed(items)]), 200


@app.post("/api/messages")
def create_message():
    """Append to a conversation the original way: one unconditional PutItem."""
    user = current_user()
    if user is None:
        return jsonify({}), 401
    body = request.get_json()
    group, text = body["message_group_uuid"], body["message"]
    created_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    new_client().put_item(TableName=config.ddb_message_table, Item={
        "pk": {"S": f"MSG#{group}"}, "sk": {"S": created_at}, "message": {"S": text},
        "message_uuid": {"S": str(uuid.uuid4())}, "user_uuid": {"S": user[0]},
        "user_display_name": {"S": user[1]}, "user_handle": {"S": user[2]},
    })
    return jsonify({"message_group_uuid": group, "uuid": user[0], "display_name": user[1], "handle": user[2],
                    "message": text, "created_at": created_at}), 200
