"""bin/chat HANDLE [PEER]: chat in the terminal as a local user, over the live event stream.

Signs in to the local user pool as HANDLE (the demo password), prints each
message of HANDLE's conversations as it arrives (GET /api/events), and sends
every line you type to PEER (without PEER: to whoever wrote last). When the
stream drops it reconnects with Last-Event-ID, so nothing is missed or shown
twice; when the token expires it signs in again. Ctrl-D or Ctrl-C ends it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
from datetime import datetime
from typing import TextIO
from urllib.parse import urlsplit

from toolbox import settings, users
from toolbox.scripts.common import ScriptError, cognito_client, config_for, run
from toolbox.sse import EventStream, SSEEvent, StreamClosed

RECONNECT_ATTEMPTS = 8     # failed connections in a row before giving up
READ_TIMEOUT = 60.0        # the server sends a keep-alive every 15 s; silence this long means a dead stream


class Session:
    """Who we are: the handle, the API's address, and a token that is renewed when it expires."""

    def __init__(self, handle: str, password: str, api: str):
        self.handle = handle
        self.password = password
        parts = urlsplit(api)
        if parts.scheme != "http" or not parts.hostname:
            raise ScriptError(f"--api must be http://HOST:PORT, not {api!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.config = config_for("local")
        if not self.config.cognito_client_id:
            raise ScriptError("no Cognito app client known: start the stack with bin/dev first")
        self._lock = threading.Lock()
        self.token = ""
        self.sign_in()

    def sign_in(self) -> str:
        """Get a fresh access token from the local pool."""
        token = users.token_for_handle(self.config.connection_url, cognito_client(self.config),
                                       self.config.cognito_client_id, self.handle, self.password)
        with self._lock:
            self.token = token
        return token

    def post(self, body: dict) -> tuple[int, object]:
        """POST /api/messages; return (status, parsed JSON)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            conn.request("POST", "/api/messages", body=json.dumps(body),
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()


class Chat:
    """Print the stream's events; send typed lines."""

    def __init__(self, session: Session, peer: str | None, out: TextIO, verbose: bool = False):
        self.session = session
        self.peer = peer
        self.out = out
        self.verbose = verbose
        self.reply_to: str | None = None       # the conversation of the last message from someone else
        self.last_id: str | None = None
        self._print_lock = threading.Lock()
        self.stopped = threading.Event()

    def say(self, line: str) -> None:
        with self._print_lock:
            print(line, file=self.out, flush=True)

    def show(self, event: SSEEvent) -> None:
        """Print one event the way a person reads a chat."""
        data = event.json()
        if event.event == "message":
            if data["handle"].lower() != self.session.handle.lower():
                self.reply_to = data["message_group_uuid"]
            self.say(f"{clock(data['created_at'])} @{data['handle']}: {data['message']}")
        elif event.event == "read":
            self.say(f"{clock(data['last_read_at'])} (@{data['handle']} read the conversation)")
        elif event.event == "reset":
            self.say("(the stream could not replay everything missed: older messages are in the app)")
        elif self.verbose:
            self.say(f"({event.event}: {event.data})")

    def listen(self) -> None:
        """Follow the stream until stopped, reconnecting with the last id (a few failures in a row at most)."""
        failures = 0
        while not self.stopped.is_set() and failures < RECONNECT_ATTEMPTS:
            try:
                stream = EventStream(self.session.port, host=self.session.host, token=self.session.token,
                                     last_event_id=self.last_id, timeout=15)
            except OSError as exc:
                failures += 1
                self.say(f"(cannot reach the API: {exc}; retrying)")
                self.stopped.wait(min(10.0, 0.5 * 2 ** failures))
                continue
            if stream.status == 401:
                failures += 1
                self.session.sign_in()
                continue
            if stream.status != 200:
                failures += 1
                self.say(f"(the API answered {stream.status}; retrying)")
                self.stopped.wait(min(10.0, 0.5 * 2 ** failures))
                continue
            if self.last_id is None:
                self.say(f"(connected as @{self.session.handle}"
                         + (f"; lines you type go to @{self.peer})" if self.peer else "; type to reply)"))
            failures = 0
            self._follow(stream)
        if not self.stopped.is_set():
            self.say("(gave up reconnecting to the API; Ctrl-D quits)")

    def _follow(self, stream: EventStream) -> None:
        with stream:
            try:
                while not self.stopped.is_set():
                    beats = stream.parser.comments
                    event = stream.next(READ_TIMEOUT)
                    self.last_id = stream.last_id or self.last_id
                    if event is None:
                        if stream.parser.comments == beats:
                            return  # not even a keep-alive for a minute: a dead connection, reconnect
                        continue
                    if event.event == "token_expired":
                        self.session.sign_in()
                        return
                    self.show(event)
            except (StreamClosed, OSError):
                self.last_id = stream.last_id or self.last_id

    def send(self, text: str) -> None:
        """Send a line to the peer, or to whoever wrote last."""
        if self.peer:
            body = {"handle": self.peer, "message": text}
        elif self.reply_to:
            body = {"message_group_uuid": self.reply_to, "message": text}
        else:
            self.say("(nobody to send to yet: bin/chat HANDLE PEER, or wait for a message)")
            return
        status, answer = self.session.post(body)
        if status == 401:
            self.session.sign_in()
            status, answer = self.session.post(body)
        if status != 200:
            self.say(f"(not sent: {status} {answer})")


def clock(timestamp: str) -> str:
    """Return a table timestamp as local wall-clock time."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/chat", description=__doc__.split("\n")[0])
    parser.add_argument("handle", help="who you are: a local user, e.g. andrewbrown, bayko, londo")
    parser.add_argument("peer", nargs="?", help="who you write to (default: whoever wrote last)")
    parser.add_argument("--api", default=f"http://127.0.0.1:{settings.API_PORT}", help="the API (default: bin/dev's)")
    parser.add_argument("--password", default=settings.DEMO_PASSWORD, help="defaults to the demo password")
    parser.add_argument("--verbose", action="store_true", help="also print conversation-row events")
    args = parser.parse_args(argv)
    session = Session(args.handle.lstrip("@"), args.password, args.api)
    chat = Chat(session, args.peer.lstrip("@") if args.peer else None, sys.stdout, verbose=args.verbose)
    listener = threading.Thread(target=chat.listen, name="chat-listener", daemon=True)
    listener.start()
    try:
        for line in sys.stdin:
            if line.strip():
                chat.send(line.rstrip("\n"))
    finally:
        chat.stopped.set()
    return 0


if __name__ == "__main__":
    run(main)
