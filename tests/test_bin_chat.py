"""bin/chat, the terminal client of the event stream, run as a subprocess against the session's API."""

from __future__ import annotations

import queue
import subprocess
import threading
import time

from backend_flask.config import ROOT
from tests.conftest import TEST_PASSWORD
from toolbox.sse import EventStream

WAIT = 30.0


class Running:
    """bin/chat as a child process whose output lines we can wait for."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.process = subprocess.Popen([str(ROOT / "bin" / "chat"), *args], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str) -> list[str]:
        """Return the output lines up to the first that contains `text` (fail after WAIT seconds)."""
        seen, deadline = [], time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if text in line:
                return seen
        raise AssertionError(f"{text!r} not in the output: {seen}")

    def type(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()


def test_chat_prints_what_arrives_and_sends_what_is_typed(live_api, make_user, script_env):
    # GIVEN a and b, and a running bin/chat as a, writing to b
    a, b = make_user(), make_user()
    chat = Running([a["handle"], b["handle"], "--api", f"http://127.0.0.1:{live_api.port}",
                    "--password", TEST_PASSWORD], script_env)
    try:
        chat.wait_for(f"connected as @{a['handle']}")
        with EventStream(live_api.port, token=b["token"], timeout=WAIT) as to_b:
            # WHEN a line is typed
            chat.type("hello from the terminal")
            # THEN b's stream gets it, and the chat shows it (its echo through the stream)
            got = to_b.collect(lambda s: bool(s), WAIT, kinds={"message"})
            assert got[0].json()["message"] == "hello from the terminal"
            assert chat.wait_for("hello from the terminal")[-1].endswith(f"@{a['handle']}: hello from the terminal")
            # AND what b answers is printed as it arrives
            status, _, _ = live_api.request("POST", "/api/messages", token=b["token"],
                                            body={"message_group_uuid": got[0].json()["message_group_uuid"],
                                                  "message": "hi, terminal"})
            assert status == 200
            assert chat.wait_for("hi, terminal")[-1].endswith(f"@{b['handle']}: hi, terminal")
        # WHEN stdin ends, THEN the chat ends
        chat.process.stdin.close()
        assert chat.process.wait(WAIT) == 0
    finally:
        if chat.process.poll() is None:
            chat.process.kill()
            chat.process.wait(5)


def test_chat_as_someone_unknown_is_a_one_line_error(live_api, script_env):
    result = subprocess.run([str(ROOT / "bin" / "chat"), "nobody-such", "--api", f"http://127.0.0.1:{live_api.port}"],
                            env=script_env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
