"""bench/cpuprofile.py: a sampled stack is charged to its innermost frame that belongs to a layer."""

from __future__ import annotations

import sys

from bench import cpuprofile


def stack(*frames: tuple[str, str]):
    """Build a real call stack, outermost first, of functions compiled as if they lived in these files."""
    namespace: dict = {"sys": sys}
    callee = "return sys._getframe()"
    for index, (filename, function) in enumerate(reversed(frames)):
        name = f"f{index}"
        code = f"def {function}():\n    {callee}\n{name} = {function}\n"
        exec(compile(code, filename, "exec"), namespace)  # noqa: S102  (test-only stack builder)
        callee = f"return {name}()"
    return namespace[f"f{len(frames) - 1}"]()


SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"


def test_shared_code_is_charged_to_its_caller():
    # GIVEN botocore reading a socket through urllib3, http.client and gevent's socket
    frame = stack((f"{SITE}/backend_flask/server.py", "handle_one_request"),
                  (f"{SITE}/flask/app.py", "wsgi_app"),
                  (f"{SITE}/botocore/endpoint.py", "_send"),
                  (f"{SITE}/urllib3/connectionpool.py", "urlopen"),
                  (f"{STDLIB}/http/client.py", "getresponse"),
                  (f"{SITE}/gevent/_socketcommon.py", "recv"))
    # THEN the sample goes to the HTTP client layer, not to gevent or the server
    assert cpuprofile.classify(frame) == cpuprofile.DDB_HTTP


def test_functions_of_one_file_can_belong_to_different_layers():
    access_line = stack((f"{SITE}/flask/app.py", "full_dispatch_request"),
                        ("/work/backend_flask/app.py", "_log"),
                        (f"{STDLIB}/json/encoder.py", "encode"))
    deserialize = stack((f"{SITE}/backend_flask/lib/ddb/keys.py", "from_item"),
                        (f"{SITE}/boto3/dynamodb/types.py", "deserialize"))
    serialize = stack((f"{SITE}/backend_flask/lib/ddb/keys.py", "to_item"),
                      (f"{SITE}/boto3/dynamodb/types.py", "serialize"))
    assert cpuprofile.classify(access_line) == cpuprofile.LOGGING
    assert cpuprofile.classify(deserialize) == cpuprofile.PARSE
    assert cpuprofile.classify(serialize) == cpuprofile.REQUEST


def test_a_stack_of_nothing_but_the_hub_is_the_event_loop():
    assert cpuprofile.classify(stack((f"{SITE}/gevent/hub.py", "run"))) == cpuprofile.HTTP
    assert cpuprofile.classify(stack((f"{STDLIB}/threading.py", "run"))) == cpuprofile.OTHER
