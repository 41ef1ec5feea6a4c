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
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return self.process.returncode

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
