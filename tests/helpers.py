"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def concurrently(target: Callable[..., Any], arguments: Sequence[tuple], timeout: float = 120.0) -> list:
    """Run target(*args) for every tuple at the same time, one thread each; return the results in order.

    The first exception a call raised is raised here, so a failing thread fails the test.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(arguments))) as pool:
        futures = [pool.submit(target, *args) for args in arguments]
        return [future.result(timeout=timeout) for future in futures]


class Watched:
    """A child process whose output (stdout and stderr together) is read line by line as it comes."""

    def __init__(self, args: Sequence[str], **popen: Any):
        import queue
        import subprocess
        import threading

        self.process = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True, **popen)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        """Read output until a line contains text; fail with the output if the process ends or time runs out.

        The timeout only bounds a broken run: nothing here expects a speed.
        """
        import queue
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"{self.process.args[0]} ended before {text!r}:\n{self.output}")
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout:.0f}s:\n{self.output}")

    def finish(self, timeout: float = 120.0) -> int:
        """Wait for the process to end and for the rest of its output; return its exit status."""
        self.process.wait(timeout)
        self._drain()
        return self.process.returncode

    def _drain(self) -> None:
        import queue

        try:
            while (line := self._queue.get(timeout=10)) is not None:
                self.lines.append(line)
        except queue.Empty:
            pass  # a child that outlived it still holds the pipe: what came so far is enough

    def stop(self) -> None:
        """End the process and its group (SIGTERM, then SIGKILL) if it still runs."""
        import os
        import signal
        import subprocess

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self._drain()


class DockerStage:
    """One stage of a Dockerfile: its name, what it is built FROM, and its instructions in order."""

    def __init__(self, base: str, name: str | None):
        self.base, self.name = base, name
        self.instructions: list[tuple[str, str]] = []   # (KEYWORD, the rest of the line)

    def args(self, keyword: str) -> list[str]:
        """The argument text of every instruction with this keyword."""
        return [rest for key, rest in self.instructions if key == keyword]

    def copies(self) -> list[str]:
        """The sources of its COPY instructions (COPY --from=... excluded)."""
        return [rest.split()[0] for rest in self.args("COPY") if not rest.startswith("--from")]

    def env(self) -> dict[str, str]:
        """Its ENV settings (KEY=value form)."""
        import shlex

        return dict(pair.split("=", 1) for rest in self.args("ENV") for pair in shlex.split(rest))

    def cmd(self) -> list[str] | None:
        """Its last CMD, in exec (JSON) form."""
        import json

        found = self.args("CMD")
        return json.loads(found[-1]) if found else None


def dockerfile_stages(path) -> list[DockerStage]:
    """Parse a Dockerfile (comments dropped, continued lines joined) into its stages, in order."""
    import re

    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in path.read_text().splitlines()
                                            if not line.lstrip().startswith("#")))
    stages: list[DockerStage] = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            stages.append(DockerStage(words[0], words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages
