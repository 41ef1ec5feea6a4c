"""The baseline: how the original bootcamp backend served GET /api/message_groups.

It is kept only to be measured against, on the same services in the same
run. It reproduces the original's costs, not its bugs' effects on data:
per request it downloads the pool's JWKS and builds a new boto3 client, then
looks the user up through a shared pool and runs the year-filtered query.
Serve with gunicorn: bench.baseline_app:app (settings from the environment).
"""

from __future__ import annotations

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


@app.get("/api/message_groups")
def message_groups():
    """List my conversations the original way."""
    try:
        claims = verify(request.headers["Authorization"].split(" ", 1)[1])
    except Exception:
        return jsonify({}), 401
    with pool.connection() as conn:
        row = conn.execute("SELECT uuid FROM public.users WHERE cognito_user_id = %s LIMIT 1",
                           (claims["sub"],)).fetchone()
    client = boto3.client("dynamodb", endpoint_url=config.aws_endpoint_url, region_name=config.aws_region,
                          aws_access_key_id="local", aws_secret_access_key="local")
    year = str(datetime.now(timezone.utc).year)
    response = client.query(
        TableName=config.ddb_message_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :year)",
        ExpressionAttributeValues={":pk": {"S": f"GRP#{row[0]}"}, ":year": {"S": year}},
        ScanIndexForward=False, Limit=20, ReturnConsumedCapacity="TOTAL",
    )
    results = [{
        "uuid": item["message_group_uuid"]["S"],
        "display_name": item["user_display_name"]["S"],
        "handle": item["user_handle"]["S"],
        "message": item["message"]["S"],
        "created_at": item["sk"]["S"],
    } for item in response["Items"]]
    return jsonify(results), 200
