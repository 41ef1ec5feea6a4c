"""Cognito user-pool administration: pools, users, tokens (cognito-local or real Cognito)."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

POOL_NAME = "cruddur-user-pool"
CLIENT_NAME = "cruddur-web"


def find_pool(idp, pool_name: str = POOL_NAME, client_name: str = CLIENT_NAME) -> tuple[str | None, str | None]:
    """Return (user_pool_id, client_id) of the pool and app client with these names; None where missing."""
    pool_id = next((p["Id"] for p in _pages(idp.list_user_pools, "UserPools", MaxResults=60)
                    if p["Name"] == pool_name), None)
    if pool_id is None:
        return None, None
    client_id = next((c["ClientId"] for c in _pages(idp.list_user_pool_clients, "UserPoolClients",
                                                    UserPoolId=pool_id, MaxResults=60)
                      if c["ClientName"] == client_name), None)
    return pool_id, client_id


def ensure_pool(idp, pool_name: str = POOL_NAME, client_name: str = CLIENT_NAME) -> tuple[str, str]:
    """Return (user_pool_id, client_id), creating the pool and its app client if missing."""
    pool_id, client_id = find_pool(idp, pool_name, client_name)
    if pool_id is None:
        pool_id = idp.create_user_pool(
            PoolName=pool_name,
            UsernameAttributes=["email"],
            AutoVerifiedAttributes=["email"],
            Schema=[{"Name": "preferred_username", "AttributeDataType": "String", "Mutable": True}],
        )["UserPool"]["Id"]
        log.info("created user pool %s", pool_id)
    if client_id is None:
        client_id = idp.create_user_pool_client(
            UserPoolId=pool_id, ClientName=client_name,
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]["ClientId"]
        log.info("created app client %s", client_id)
    return pool_id, client_id


def sign_up(idp, pool_id: str, client_id: str, *, email: str, password: str,
            handle: str, display_name: str) -> str:
    """Create and confirm a user (or find the existing one); return its sub."""
    try:
        sub = idp.sign_up(
            ClientId=client_id, Username=email, Password=password,
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "preferred_username", "Value": handle},
                {"Name": "name", "Value": display_name},
            ],
        )["UserSub"]
        idp.admin_confirm_sign_up(UserPoolId=pool_id, Username=email)
        return sub
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "UsernameExistsException":
            raise
    user = idp.admin_get_user(UserPoolId=pool_id, Username=email)
    return _attributes(user["UserAttributes"])["sub"]


def access_token(idp, client_id: str, *, email: str, password: str) -> str:
    """Sign in with USER_PASSWORD_AUTH and return the access token."""
    result = idp.initiate_auth(
        ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": password},
    )
    return result["AuthenticationResult"]["AccessToken"]


def list_users(idp, pool_id: str) -> list[dict[str, Any]]:
    """Return every user of the pool as {handle, sub, email, username}."""
    users = []
    for user in _pages(idp.list_users, "Users", UserPoolId=pool_id, Limit=60):
        attrs = _attributes(user.get("Attributes", []))
        users.append({
            "handle": attrs.get("preferred_username"),
            "sub": attrs.get("sub"),
            "email": attrs.get("email"),
            "username": user.get("Username"),
        })
    return users


def _attributes(pairs: list[dict[str, str]]) -> dict[str, str]:
    return {a["Name"]: a["Value"] for a in pairs}


def _pages(call, key: str, **kwargs):
    token_names = {"UserPools": "NextToken", "UserPoolClients": "NextToken", "Users": "PaginationToken"}
    token_name = token_names[key]
    while True:
        page = call(**kwargs)
        yield from page.get(key, [])
        token = page.get(token_name)
        if not token:
            return
        kwargs[token_name] = token
