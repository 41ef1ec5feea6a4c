"""GET /api/events (the signed-in user's events, Server-Sent Events) and POST /api/events/ticket."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from backend_flask import clients
from backend_flask.auth import authenticated, jwt_required
from backend_flask.lib.errors import BadRequest
from backend_flask.services import events

bp = Blueprint("events", __name__)

MAX_EVENT_ID_LENGTH = 4096


@bp.post("/api/events/ticket")
@jwt_required
def ticket() -> Response:
    """Issue a one-time ticket (valid 30 s) that opens my stream: for EventSource, which cannot send a token."""
    return jsonify(events.issue_ticket(clients.get().messages, g.user, token_expires_at=g.claims["exp"]))


@bp.get("/api/events")
def stream() -> Response:
    """Stream my events; `?ticket=` or a Bearer token; resume after `Last-Event-ID` (or `?last_event_id=`)."""
    c = clients.get()
    ticket = request.args.get("ticket")
    if ticket is not None:
        g.user, token_expires_at = events.redeem_ticket(c.messages, ticket)
    else:
        g.user, claims = authenticated(request.headers.get("Authorization"))
        token_expires_at = claims["exp"]
    # A browser's EventSource sends Last-Event-ID itself; a client that opens a new one passes it in the URL.
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if last_event_id is not None and len(last_event_id) > MAX_EVENT_ID_LENGTH:
        raise BadRequest("invalid_last_event_id")
    body = events.open_stream(c.bus, c.messages, g.user, token_expires_at=token_expires_at,
                              last_event_id=last_event_id,
                              heartbeat=current_app.config["CRUDDUR"].events_heartbeat)
    # no-transform and X-Accel-Buffering: proxies must pass each event on at once, not buffer them.
    return Response(body, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store, no-transform", "X-Accel-Buffering": "no"})
