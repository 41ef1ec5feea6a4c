"""The processes a bin/dev started, recorded in .local/dev-pids.json so the next one can clean up after it.

A bin/dev killed with SIGKILL cannot stop its services: they run in sessions
of their own and keep their ports. The file names bin/dev itself and every
service with its pid, its start time and its command line; a process counts
as ours only if all three still match, so a pid the system has since given to
another program is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

STOP_TIMEOUT = 20.0     # seconds a process gets to exit after its stop signal, before SIGKILL


@dataclass(frozen=True)
class Recorded:
    """One process as bin/dev saw it when it started it."""

    name: str
    pid: int
    started: float          # psutil create_time(): with the pid, it names one process for good
    cmdline: list[str]
    stop_signal: int = signal.SIGTERM

    @classmethod
    def of(cls, name: str, pid: int, stop_signal: int = signal.SIGTERM, cmdline: list[str] | None = None) -> Recorded:
        """Describe the running process `pid`, started with `cmdline` (read from the process if not given).

        Give the command that was started: right after a start, /proc may
        still show it empty (the java launcher, for one, executes itself again).
        """
        process = psutil.Process(pid)
        return cls(name, pid, process.create_time(), list(cmdline or process.cmdline()), int(stop_signal))

    def process(self) -> psutil.Process | None:
        """Return the live process if it is still the one recorded, else None (gone, a zombie, or another one).

        The start time names the process (a reused pid starts later); the
        program's name must match too, unless /proc shows no command line (a
        process starting or exiting).
        """
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - self.started) > 0.05:
                return None
            shown = process.cmdline()
            if shown and self.cmdline and os.path.basename(shown[0]) != os.path.basename(self.cmdline[0]):
                return None
            return process
        except psutil.Error:
            return None

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"


class PidFile:
    """The record of one bin/dev: itself (`owner`) and the services it started."""

    def __init__(self, path: Path):
        self.path = path
        self.owner: Recorded | None = None
        self.services: list[Recorded] = []

    @classmethod
    def read(cls, path: Path) -> PidFile | None:
        """Return the recorded bin/dev, or None if there is no (readable) record."""
        try:
            data = json.loads(path.read_text())
            record = cls(path)
            record.owner = Recorded(**data["owner"]) if data.get("owner") else None
            record.services = [Recorded(**entry) for entry in data.get("services", [])]
            return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable %s (%s)", path, exc)
            return None

    def start(self, pid: int | None = None) -> None:
        """Record this process as the owner, with no services yet."""
        self.owner = Recorded.of("bin/dev", pid or os.getpid())
        self.services = []
        self._write()

    def add(self, name: str, pid: int, stop_signal: int = signal.SIGTERM, cmdline: list[str] | None = None) -> None:
        """Record a service the moment its process exists."""
        with contextlib.suppress(psutil.Error):  # it exited at once: nothing to clean up later
            self.services.append(Recorded.of(name, pid, stop_signal, cmdline))
            self._write()

    def remove(self) -> None:
        """Forget the record (bin/dev stopped everything itself)."""
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"owner": asdict(self.owner) if self.owner else None, "services": [asdict(s) for s in self.services]}
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(partial, self.path)

    def live_owner(self) -> psutil.Process | None:
        """Return the recorded bin/dev if it is still running."""
        return self.owner.process() if self.owner else None

    def stop_leftovers(self) -> tuple[list[Recorded], list[Recorded]]:
        """Stop the recorded services that are still ours; return (stopped, alive but no longer ours)."""
        ours: list[tuple[Recorded, psutil.Process]] = []
        foreign: list[Recorded] = []
        for entry in self.services:
            process = entry.process()
            if process is not None:
                ours.append((entry, process))
            elif _exists(entry.pid):
                foreign.append(entry)
        stop_processes(ours)
        return [entry for entry, _process in ours], foreign


def stop_processes(entries: Iterable[tuple[Recorded, psutil.Process]]) -> None:
    """Send each its stop signal (to its whole process group), wait, then SIGKILL what is left."""
    entries = list(entries)
    for entry, _process in reversed(entries):
        _signal_group(entry.pid, entry.stop_signal)
    alive = wait_gone([entry for entry, _process in entries], STOP_TIMEOUT)
    for entry in alive:
        log.warning("%s did not stop within %.0f s: killing it", entry.describe(), STOP_TIMEOUT)
        _signal_group(entry.pid, signal.SIGKILL)
    wait_gone(alive, 5.0)


def wait_gone(entries: Iterable[Recorded], timeout: float) -> list[Recorded]:
    """Wait until none of these processes runs (a zombie counts as gone); return those still running."""
    deadline = time.monotonic() + timeout
    alive = list(entries)
    while alive:
        alive = [entry for entry in alive if entry.process() is not None]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return alive


def _signal_group(pid: int, signum: int) -> None:
    # Services run in sessions of their own (local_services.spawn): their pid is their process group.
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _exists(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def listener(port: int) -> str:
    """Name the process listening on a loopback TCP port, as well as this user may know it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return "another program"
