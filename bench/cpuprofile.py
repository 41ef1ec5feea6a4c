"""Where a server's CPU goes: a CPU-time sampler for its worker processes, and the layers it sorts samples into.

The sampler runs inside each worker (see bench/profiled_server.py): a
`setitimer(ITIMER_PROF)` timer fires SIGPROF after every `interval` seconds of
CPU the process uses (user + system), and the handler charges the stack it
interrupted to one layer. A process waiting on a socket uses no CPU and gets
no samples, so socket waits are excluded by construction, greenlets included.

A stack is charged to its innermost frame that belongs to a layer; frames of
shared code (the standard library, gevent's sockets and hub) are charged to
their caller, and a stack with nothing else on it is the event loop. The bench
talks to the workers with signals: SIGUSR1 clears the counts, SIGUSR2 writes
them to `<dir>/<pid>.json`; each answer is a file, so the bench knows it landed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import sysconfig
from collections import Counter
from pathlib import Path

HTTP = "HTTP server (backend_flask.server, gevent pywsgi, event loop)"
FLASK = "Flask routing, views and JSON (flask, werkzeug, flask_cors, routes)"
TOKEN = "token check (auth, cognito_jwt_token, jose, cryptography)"
USERS = "user cache (lib/users; psycopg on a miss)"
DATA = "data access and services (lib/ddb, services)"
REQUEST = "botocore: build and sign the request"
DDB_HTTP = "HTTP client to DynamoDB (urllib3, http.client; socket wait excluded)"
PARSE = "botocore: parse the response (parsers, item deserializer)"
LOGGING = "logging (one JSON access line per request)"
OTHER = "other"
LAYERS = [HTTP, FLASK, TOKEN, USERS, DATA, REQUEST, DDB_HTTP, PARSE, LOGGING, OTHER]

# (fragment of a file's path, layer); the first match wins. Paths use "/" (Linux).
_FILE_RULES = [
    ("backend_flask/logs.py", LOGGING),
    ("/logging/", LOGGING),
    ("backend_flask/server.py", HTTP),
    ("/gevent/pywsgi.py", HTTP),
    ("/gevent/baseserver.py", HTTP),
    ("/gevent/server.py", HTTP),
    ("/gunicorn/", HTTP),
    ("backend_flask/auth.py", TOKEN),
    ("backend_flask/lib/cognito_jwt_token.py", TOKEN),
    ("/jose/", TOKEN),
    ("/cryptography/", TOKEN),
    ("/requests/", TOKEN),          # only the JWKS download uses requests
    ("backend_flask/lib/users.py", USERS),
    ("backend_flask/lib/db.py", USERS),
    ("/psycopg/", USERS),
    ("/psycopg_pool/", USERS),
    ("backend_flask/lib/ddb/", DATA),
    ("backend_flask/services/", DATA),
    ("/botocore/parsers.py", PARSE),
    ("/botocore/httpsession.py", DDB_HTTP),
    ("/botocore/response.py", DDB_HTTP),
    ("/urllib3/", DDB_HTTP),
    ("/botocore/", REQUEST),
    ("/boto3/", REQUEST),
    ("backend_flask/", FLASK),      # app.py, errors.py, clients.py, routes/
    ("/flask/", FLASK),
    ("/werkzeug/", FLASK),
    ("/flask_cors/", FLASK),
    ("/itsdangerous/", FLASK),
    ("/markupsafe/", FLASK),
]
# Files whose functions belong to different layers: path fragment -> (layer of the rest, [(name prefix, layer)]).
_FUNCTION_RULES = {
    "backend_flask/app.py": (FLASK, [("_log", LOGGING)]),
    "/boto3/dynamodb/types.py": (REQUEST, [("_deserialize", PARSE), ("deserialize", PARSE)]),
    # AWSConnection (urllib3's connection with botocore's 100-continue handling) sends; the rest builds requests.
    "/botocore/awsrequest.py": (REQUEST, [("_send", DDB_HTTP), ("send", DDB_HTTP), ("_handle_expect", DDB_HTTP),
                                          ("_is_100", DDB_HTTP), ("_tunnel", DDB_HTTP), ("close", DDB_HTTP)]),
}
_NEUTRAL = None
_SPLIT = "split"
_cache: dict[str, str | None] = {}


def _file_layer(filename: str) -> str | None:
    """Return a file's layer, _SPLIT if it depends on the function, or None for shared code."""
    found = _cache.get(filename, "")
    if found != "":
        return found
    path = filename.replace("\\", "/")
    layer: str | None = _NEUTRAL
    if any(fragment in path for fragment in _FUNCTION_RULES):
        layer = _SPLIT
    else:
        layer = next((rule_layer for fragment, rule_layer in _FILE_RULES if fragment in path), _NEUTRAL)
    _cache[filename] = layer
    return layer


def classify(frame) -> str:
    """Return the layer a stack (given by its innermost frame) is charged to."""
    saw_gevent = False
    depth = 0
    while frame is not None and depth < 200:
        code = frame.f_code
        layer = _file_layer(code.co_filename)
        if layer == _SPLIT:
            layer = _function_layer(code.co_filename.replace("\\", "/"), code.co_name)
        if layer is not None:
            return layer
        if "/gevent/" in code.co_filename or "/greenlet/" in code.co_filename:
            saw_gevent = True
        frame = frame.f_back
        depth += 1
    return HTTP if saw_gevent else OTHER


def _function_layer(path: str, function: str) -> str:
    rest, rules = next(rule for fragment, rule in _FUNCTION_RULES.items() if fragment in path)
    return next((layer for prefix, layer in rules if function.startswith(prefix)), rest)


def _innermost_module(frame) -> str:
    """Name the innermost frame's file for the 'top files' list: package-relative when it can."""
    filename = frame.f_code.co_filename.replace("\\", "/")
    for root in _ROOTS:
        if filename.startswith(root):
            return filename[len(root):]
    return filename


_ROOTS = sorted({p.replace("\\", "/").rstrip("/") + "/" for p in
                 (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], *sys.path) if p},
                key=len, reverse=True)


class Sampler:
    """Counts CPU samples per layer in this process."""

    def __init__(self, out_dir: Path, interval: float):
        self.out_dir = out_dir
        self.interval = interval
        self.layers: Counter[str] = Counter()
        self.files: Counter[str] = Counter()

    def start(self) -> None:
        """Install the handlers and start the CPU timer."""
        signal.signal(signal.SIGPROF, self._sample)
        signal.signal(signal.SIGUSR1, self._reset)
        signal.signal(signal.SIGUSR2, self._dump)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def _sample(self, _signum, frame) -> None:
        if frame is None:
            return
        self.layers[classify(frame)] += 1
        self.files[_innermost_module(frame)] += 1

    def _reset(self, _signum, _frame) -> None:
        self.layers.clear()
        self.files.clear()
        self._write("reset", {})

    def _dump(self, _signum, _frame) -> None:
        self._write("counts", {"interval": self.interval, "layers": dict(self.layers),
                               "top_files": dict(self.files.most_common(40))})

    def _write(self, kind: str, payload: dict) -> None:
        path = self.out_dir / f"{kind}-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)


def install_in_workers(out_dir: Path, interval: float = 0.001) -> None:
    """Start a Sampler in every process this one forks from now on (the server's workers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Interval timers are not inherited across fork: each worker starts its own.
    os.register_at_fork(after_in_child=lambda: Sampler(out_dir, interval).start())
