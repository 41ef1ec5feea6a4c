"""bin/dev as a new user meets it: killed outright, started again, stopped with --stop, given bad input.

Each test runs real bin/dev processes (--no-api) on free ports, with their data
and records in a folder of the test's own (DEV_LOCAL_DIR), so they run beside
a developer's bin/dev and the session's services.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from backend_flask.config import ROOT
from tests.helpers import Watched
from toolbox import dev_pids, local_services

BIN_DEV = ROOT / "bin" / "dev"
UP = "Local services are up"
START_TIMEOUT = 240.0    # a bound for a broken start, not a speed expectation
pytestmark = pytest.mark.timeout(900)


def dev(env: dict[str, str], *args: str) -> Watched:
    """Start bin/dev in a session of its own, its output read as it comes."""
    return Watched([str(BIN_DEV), *args], env=env)


def kill(process: Watched | None) -> None:
    """Last resort in a finally: SIGKILL that bin/dev (the dev_env fixture stops what it recorded)."""
    if process is not None and process.process.poll() is None:
        process.process.kill()
        process.process.wait()


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a bin/dev of this test's own: its folder, free ports, embedded Postgres, no AWS settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "COGNITO_", "DDB_", "DEV_")) and k not in ("CONNECTION_URL", "PORT")}
    env.update({"DEV_LOCAL_DIR": str(tmp_path / "local"), "PORT": str(local_services.free_port()),
                "DEV_PG_PORT": str(local_services.free_port()), "DEV_DDB_PORT": str(local_services.free_port()),
                "DEV_COGNITO_PORT": str(local_services.free_port())})
    yield env
    # Whatever a failed test left: stop it by its record, as bin/dev --stop would.
    record = dev_pids.PidFile.read(Path(env["DEV_LOCAL_DIR"]) / "dev-pids.json")
    if record is not None:
        owner = record.live_owner()
        if owner is not None:
            owner.kill()
        record.stop_leftovers()


def recorded(env: dict[str, str]) -> dev_pids.PidFile:
    record = dev_pids.PidFile.read(Path(env["DEV_LOCAL_DIR"]) / "dev-pids.json")
    assert record is not None, "bin/dev keeps no pid file"
    return record


def running(entries: list[dev_pids.Recorded]) -> list[str]:
    return [e.name for e in entries if e.process() is not None]


def test_dev_stop_ends_what_a_sigkilled_bin_dev_left_running(dev_env):
    # GIVEN a bin/dev that is up, with its services recorded
    dev_process = dev(dev_env, "--no-api")
    try:
        dev_process.wait_for(UP, START_TIMEOUT)
        services = recorded(dev_env).services
        assert {"postgres", "dynamodb-local", "cognito-local", "stream-runner"} <= {s.name for s in services}
        # WHEN it is killed outright: its services stay up (they run in sessions of their own)
        dev_process.process.send_signal(signal.SIGKILL)
        dev_process.process.wait(30)
        assert sorted(running(services)) == sorted(s.name for s in services)
        # AND the user runs bin/dev --stop
        stop = subprocess.run([str(BIN_DEV), "--stop"], env=dev_env, capture_output=True, text=True, timeout=120)
    finally:
        kill(dev_process)
    # THEN every one of them is stopped, by name and pid, and the records are gone
    assert stop.returncode == 0, stop
    for service in services:
        assert f"stopped {service.name} (pid {service.pid})" in stop.stdout
    assert dev_pids.wait_gone(services, 30) == []
    assert not (Path(dev_env["DEV_LOCAL_DIR"]) / "dev-pids.json").exists()
    assert not (Path(dev_env["DEV_LOCAL_DIR"]) / "dev-state.json").exists()
    # AND a second --stop has nothing to do
    again = subprocess.run([str(BIN_DEV), "--stop"], env=dev_env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_the_next_bin_dev_cleans_up_after_a_killed_one_and_refuses_to_run_beside_a_live_one(dev_env):
    first = dev(dev_env, "--no-api")
    second = None
    try:
        # GIVEN a bin/dev killed outright, its services still up
        first.wait_for(UP, START_TIMEOUT)
        left_behind = recorded(dev_env).services
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        # WHEN bin/dev starts again
        second = dev(dev_env, "--no-api")
        second.wait_for(UP, START_TIMEOUT)
        # THEN it stopped what the dead one left (saying which pids) and started its own services
        output = "\n".join(second.lines)
        for service in left_behind:
            assert f"stopped {service.describe()}, left running by a bin/dev that died (pid {first.process.pid})" \
                in output
        assert running(left_behind) == []
        fresh = recorded(dev_env)
        assert fresh.owner.pid == second.process.pid and len(running(fresh.services)) == len(fresh.services)
        # WHEN a third one starts while the second runs
        third = subprocess.run([str(BIN_DEV), "--no-api"], env=dev_env, capture_output=True, text=True,
                               timeout=120)
        # THEN it refuses in one error line naming the running one, and leaves it alone
        assert third.returncode == 1, third
        assert third.stderr.strip().splitlines()[-1] == (
            f"error: another bin/dev is running (pid {second.process.pid}); "
            "stop it with Ctrl-C in its terminal or bin/dev --stop")
        assert second.process.poll() is None
        # WHEN bin/dev --stop runs
        stop = subprocess.run([str(BIN_DEV), "--stop"], env=dev_env, capture_output=True, text=True, timeout=120)
        # THEN the running bin/dev stopped cleanly, with its services
        assert stop.returncode == 0 and f"stopped bin/dev (pid {second.process.pid})" in stop.stdout, stop
        assert second.finish() == 0, second.output
        assert dev_pids.wait_gone(fresh.services, 30) == []
    finally:
        kill(first)
        kill(second)


def test_a_recorded_pid_that_now_belongs_to_another_program_is_left_alone(dev_env):
    # GIVEN a record of a dead bin/dev whose "service" pid is now some other process
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        record = dev_pids.PidFile(Path(dev_env["DEV_LOCAL_DIR"]) / "dev-pids.json")
        record.owner = dev_pids.Recorded("bin/dev", 4_000_000, 1.0, ["python", "-m", "toolbox.devstack"])
        real = dev_pids.Recorded.of("dynamodb-local", stranger.pid)
        record.services = [dev_pids.Recorded(real.name, real.pid, real.started - 3600, real.cmdline)]
        record._write()
        # WHEN bin/dev --stop runs
        stop = subprocess.run([str(BIN_DEV), "--stop"], env=dev_env, capture_output=True, text=True, timeout=60)
        # THEN it says it left that pid alone, and the process still runs
        assert stop.returncode == 0, stop
        assert f"left pid {stranger.pid} alone" in stop.stdout
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_port_in_use_is_one_error_line_naming_who_holds_it(dev_env):
    # GIVEN something of ours listening on bin/dev's DynamoDB port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(dev_env["DEV_DDB_PORT"])))
        holder.listen()
        result = subprocess.run([str(BIN_DEV), "--no-api"], env=dev_env, capture_output=True, text=True,
                                timeout=120)
    # THEN bin/dev exits 1 with one `error:` line that names the port and the pid
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: port {dev_env['DEV_DDB_PORT']} for DynamoDB Local is already in use by pid "
                      f"{os.getpid()} ({psutil.Process().name()}); stop it first"]


def test_a_bad_option_is_one_error_line_and_exit_1(dev_env):
    result = subprocess.run([str(BIN_DEV), "--bogus"], env=dev_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "error: unrecognized arguments: --bogus (see bin/dev --help)\n"


def test_the_pid_file_is_json_naming_owner_and_services(tmp_path):
    # a round trip of the record format, as a later bin/dev reads it
    record = dev_pids.PidFile(tmp_path / "dev-pids.json")
    record.start()
    record.add("me-again", os.getpid(), signal.SIGINT)
    data = json.loads((tmp_path / "dev-pids.json").read_text())
    assert data["owner"]["pid"] == os.getpid() and data["services"][0]["stop_signal"] == signal.SIGINT
    again = dev_pids.PidFile.read(tmp_path / "dev-pids.json")
    assert again.live_owner() is not None and again.live_owner().pid == os.getpid()
    assert again.services[0].process() is not None
