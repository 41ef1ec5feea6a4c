"""A TCP proxy on 127.0.0.1 that puts real network faults between a client and a local service.

Tests (and benchmarks) point a client at `FaultProxy(upstream_port).url`
instead of the service, then break the link on purpose:

- `hang()`: connections are accepted but nothing is forwarded either way, on
  new and open connections alike: the service looks alive and never answers
  (as a frozen process or a black-holed host does). `resume()` cuts the
  stalled connections and forwards again.
- `cut()`: every connection is closed as soon as it carries a byte.
- `corrupt()`: replies reach the client as garbage of the same length.
- `answer(response)`: every connection gets these bytes back at its first
  request and is closed; nothing reaches the service (an HTTP gateway that
  sheds load, e.g. with 429 or 503).
- `hold_reply(pattern, times)`: the next `times` requests whose bytes contain
  `pattern` reach the service, which does the work, but their reply is kept
  from the client until it gives up and closes the connection: the client's
  read timeout fires, and its retry finds the work already done.
- `count(pattern)`: how many chunks the clients sent contained `pattern` (what
  reached, or would have reached, the service).

Only loopback is ever used. Each connection costs two threads; everything
stops with `close()`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque

MODES = ("pass", "hang", "cut", "corrupt", "answer")
HOLD_LIMIT_SECONDS = 60.0      # a held reply is dropped after this even if the client never gives up
_CHUNK = 65536


class _Link:
    """One client connection and its connection to the service."""

    def __init__(self, client: socket.socket):
        self.client = client
        self.upstream: socket.socket | None = None
        self.hold_reply = threading.Event()
        self.client_gone = threading.Event()
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class FaultProxy:
    """Forward 127.0.0.1:<port> to a service on 127.0.0.1:<upstream_port>, with faults on demand."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._mode = "pass"
        self._answer = b""
        self._changed = threading.Condition()
        self._holds: list[list] = []           # [pattern, remaining]
        self._sent: deque[bytes] = deque(maxlen=100_000)
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._open = True
        threading.Thread(target=self._accept, name=f"fault-proxy:{self.port}", daemon=True).start()

    # ---------------------------------------------------------------- control

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>, for HTTP services."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    def _set(self, mode: str) -> None:
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    def hang(self) -> None:
        """Accept connections and forward nothing, on open connections too."""
        self._set("hang")

    def cut(self) -> None:
        """Close every connection that carries a byte."""
        self._set("cut")

    def corrupt(self) -> None:
        """Turn every reply into garbage of the same length."""
        self._set("corrupt")

    def answer(self, response: bytes) -> None:
        """Answer each connection's first request with `response` and close it; forward nothing."""
        self._answer = response
        self._set("answer")

    def resume(self) -> None:
        """Forward again; connections stalled by hang() are closed (their clients gave up or will)."""
        self._set("pass")

    def hold_reply(self, pattern: bytes, times: int = 1) -> None:
        """Keep the reply of the next `times` requests containing `pattern` until their client closes."""
        with self._lock:
            self._holds.append([pattern, times])

    def count(self, pattern: bytes) -> int:
        """Return how many chunks sent by clients contained `pattern`."""
        with self._lock:
            return sum(pattern in chunk for chunk in self._sent)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._open = False
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        self._set("closed")

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- pumps

    def _accept(self) -> None:
        while self._open:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            link = _Link(client)
            with self._lock:
                self._links.add(link)
            threading.Thread(target=self._client_side, args=(link,), daemon=True).start()

    def _stall(self, link: _Link) -> None:
        """Wait while the proxy hangs; then cut the link, whose peer has given up on it."""
        with self._changed:
            self._changed.wait_for(lambda: self._mode != "hang" or link.closed.is_set())
        link.close()

    def _claim_hold(self, data: bytes) -> bool:
        with self._lock:
            self._sent.append(data)
            for hold in self._holds:
                if hold[1] > 0 and hold[0] in data:
                    hold[1] -= 1
                    return True
        return False

    def _client_side(self, link: _Link) -> None:
        """Read what the client sends and forward it (connecting to the service on the first bytes)."""
        try:
            while not link.closed.is_set():
                try:
                    data = link.client.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    link.client_gone.set()
                    if link.upstream is not None and not link.hold_reply.is_set():
                        with contextlib.suppress(OSError):
                            link.upstream.shutdown(socket.SHUT_WR)
                    return
                if self._claim_hold(data):
                    link.hold_reply.set()
                if self._mode == "hang":
                    self._stall(link)
                    return
                if self._mode in ("cut", "closed"):
                    link.close()
                    return
                if self._mode == "answer":
                    link.client.sendall(self._answer)
                    link.close()
                    return
                if link.upstream is None:
                    try:
                        link.upstream = socket.create_connection(self.upstream, timeout=5)
                        link.upstream.settimeout(None)
                    except OSError:
                        link.close()
                        return
                    threading.Thread(target=self._service_side, args=(link,), daemon=True).start()
                link.upstream.sendall(data)
        except OSError:
            link.close()
        finally:
            if link.closed.is_set():
                with self._lock:
                    self._links.discard(link)

    def _service_side(self, link: _Link) -> None:
        """Forward the service's replies to the client, unless a fault says otherwise."""
        try:
            while not link.closed.is_set():
                try:
                    data = link.upstream.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    if link.hold_reply.is_set():
                        link.client_gone.wait(HOLD_LIMIT_SECONDS)
                    link.close()
                    return
                if link.hold_reply.is_set():
                    # The service answered; the client must not hear it: wait until it gives up.
                    link.client_gone.wait(HOLD_LIMIT_SECONDS)
                    link.close()
                    return
                if self._mode == "hang":
                    self._stall(link)
                    return
                if self._mode in ("cut", "closed"):
                    link.close()
                    return
                if self._mode == "corrupt":
                    data = bytes(0xFF - b for b in data)
                link.client.sendall(data)
        except OSError:
            link.close()
        finally:
            with self._lock:
                self._links.discard(link)
