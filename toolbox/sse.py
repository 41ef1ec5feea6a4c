"""A small Server-Sent Events client for GET /api/events: parsing, and a blocking stream over one socket.

The parser and the chunked-body decoder do no I/O, so bin/chat, the tests and
the bench's asyncio client (one process, a thousand sockets) share them.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


@dataclass
class SSEEvent:
    """One dispatched event: its type, data (lines joined) and the id in force when it came."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        """Return the data as JSON."""
        return json.loads(self.data)


class SSEParser:
    """Turn a stream's text into events, as EventSource does (comments and id-only blocks dispatch nothing)."""

    def __init__(self):
        self._pending = b""
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.comments = 0
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume bytes; return the events they complete."""
        self._pending += chunk
        events = []
        *lines, self._pending = self._pending.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8")
            if not line:
                if self._data:
                    events.append(SSEEvent(self._event or "message", "\n".join(self._data), self.last_id))
                self._event, self._data = "", []
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    self._event = value
                elif name == "data":
                    self._data.append(value)
                elif name == "id" and "\0" not in value:
                    self.last_id = value
                elif name == "retry" and value.isdigit():
                    self.retry = int(value)
        return events


class ChunkedDecoder:
    """Decode an HTTP/1.1 chunked body as it arrives."""

    def __init__(self):
        self._buffer = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Consume bytes of the body; return the payload they complete."""
        self._buffer += data
        out = []
        while not self.done:
            head, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                break
            size = int(head.split(b";")[0], 16)
            if size == 0:
                self.done = True
                break
            if len(rest) < size + 2:
                break
            out.append(rest[:size])
            self._buffer = rest[size + 2:]
        return b"".join(out)


def request_bytes(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    """Return a GET request's bytes."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def events_path(*, ticket: str | None = None, last_event_id: str | None = None) -> str:
    """Return the path of the stream, with a ticket and a resume id in the query when given."""
    query = {k: v for k, v in (("ticket", ticket), ("last_event_id", last_event_id)) if v is not None}
    return "/api/events" + (f"?{urlencode(query)}" if query else "")


class StreamClosed(Exception):
    """The server ended the stream."""


class EventStream:
    """GET /api/events on one socket; read events with a deadline. Not thread-safe."""

    def __init__(self, port: int, *, token: str | None = None, ticket: str | None = None,
                 last_event_id: str | None = None, host: str = "127.0.0.1", timeout: float = 15.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if last_event_id is not None and ticket is None:
            headers["Last-Event-ID"] = last_event_id
        path = events_path(ticket=ticket, last_event_id=last_event_id if ticket else None)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(request_bytes(host, port, path, headers))
        self.parser = SSEParser()
        self.decoder = ChunkedDecoder()
        self._queue: list[SSEEvent] = []
        head, body = self._read_head(timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        self.body = b""
        if self.status != 200:
            self.body = self._read_rest(body, timeout)
            self.close()
        else:
            # The server's first block names the id to resume from: the stream counts as open once it is here.
            self._feed(body)
            deadline = time.monotonic() + timeout
            while self.parser.last_id is None and not self._queue:
                self._feed(self._recv(deadline))

    def _read_head(self, timeout: float) -> tuple[bytes, bytes]:
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data:
            data += self._recv(deadline)
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _read_rest(self, body: bytes, timeout: float) -> bytes:
        length = int(self.headers.get("content-length", "0"))
        deadline = time.monotonic() + timeout
        while len(body) < length:
            body += self._recv(deadline)
        return body

    def _recv(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from the event stream in time")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            raise StreamClosed("the server closed the stream")
        return data

    def _feed(self, data: bytes) -> None:
        self._queue += self.parser.feed(self.decoder.feed(data))

    @property
    def last_id(self) -> str | None:
        """The id to resume from (Last-Event-ID)."""
        return self.parser.last_id

    def next(self, timeout: float) -> SSEEvent | None:
        """Return the next event, or None if none came within `timeout` seconds; StreamClosed at its end."""
        deadline = time.monotonic() + timeout
        while not self._queue:
            if self.decoder.done:
                raise StreamClosed("the server ended the stream")
            try:
                self._feed(self._recv(deadline))
            except TimeoutError:
                return None
        return self._queue.pop(0)

    def collect(self, until, timeout: float, kinds: set[str] | None = None) -> list[SSEEvent]:
        """Read events (of `kinds`, if given) until `until(events)` is true or `timeout` passes."""
        deadline = time.monotonic() + timeout
        seen: list[SSEEvent] = []
        while not until(seen):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event = self.next(left)
            if event is not None and (kinds is None or event.event in kinds):
                seen.append(event)
        return seen

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
