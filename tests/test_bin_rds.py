"""bin/rds/update-sg-rule, checked on the request it would send (--dry-run): no AWS, no external network."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from backend_flask.config import ROOT
from toolbox import local_services

SCRIPT = ROOT / "bin" / "rds" / "update-sg-rule"


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run bin/rds/update-sg-rule and return the finished process (text output)."""
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def env(script_env: dict[str, str]) -> dict[str, str]:
    """The bootcamp's variables, no GITPOD_IP, and an IP lookup URL where nothing listens."""
    base = {k: v for k, v in script_env.items() if k not in ("GITPOD_IP", "PUBLIC_IP_URL")}
    return {**base, "DB_SG_ID": "sg-0123456789abcdef0", "DB_SG_RULE_ID": "sgr-0fedcba9876543210",
            "PUBLIC_IP_URL": f"http://127.0.0.1:{local_services.free_port()}/"}


@pytest.fixture
def ip_service() -> Iterator[dict]:
    """A loopback HTTP server standing in for the public-IP lookup; set ["answer"] to what it says."""
    state = {"answer": "198.51.100.23\n", "calls": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            state["calls"] += 1
            body = state["answer"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/"
    yield state
    server.shutdown()
    server.server_close()


def dry_run(*args: str, env: dict[str, str]) -> dict:
    """Run with --dry-run; return the printed request."""
    result = run("--dry-run", *args, env=env)
    assert result.returncode == 0, result
    printed = json.loads(result.stdout)
    assert printed["operation"] == "ec2:ModifySecurityGroupRules"
    return printed["request"]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_dry_run_prints_the_rule_change_for_the_given_ip(env):
    # WHEN the script is told the IP
    request = dry_run("--ip", "203.0.113.7", env=env)
    # THEN the request modifies the bootcamp's rule, by id, to that address alone on Postgres' port
    assert request == {"GroupId": "sg-0123456789abcdef0", "SecurityGroupRules": [{
        "SecurityGroupRuleId": "sgr-0fedcba9876543210",
        "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "CidrIpv4": "203.0.113.7/32",
                              "Description": "GITPOD"},
    }]}


def test_gitpod_ip_is_used_when_set_and_ipv6_gets_a_128_prefix(env):
    assert dry_run(env={**env, "GITPOD_IP": "192.0.2.44"})["SecurityGroupRules"][0]["SecurityGroupRule"][
        "CidrIpv4"] == "192.0.2.44/32"
    rule = dry_run("--ip", "2001:db8::7", env=env)["SecurityGroupRules"][0]["SecurityGroupRule"]
    assert rule["CidrIpv6"] == "2001:db8::7/128" and "CidrIpv4" not in rule


def test_without_an_ip_it_looks_the_public_ip_up(env, ip_service):
    # GIVEN no --ip and no GITPOD_IP, and a lookup service that answers
    request = dry_run(env={**env, "PUBLIC_IP_URL": ip_service["url"]})
    # THEN the rule gets the address the lookup gave
    assert request["SecurityGroupRules"][0]["SecurityGroupRule"]["CidrIpv4"] == "198.51.100.23/32"
    assert ip_service["calls"] == 1


def test_a_lookup_that_answers_nonsense_is_a_clear_error(env, ip_service):
    ip_service["answer"] = "<html>rate limited</html>"
    error = one_line_error(run("--dry-run", "--ip-url", ip_service["url"], env=env))
    assert "not an IP address" in error and "--ip" in error


def test_an_unreachable_lookup_is_a_clear_error(env):
    error = one_line_error(run("--dry-run", env=env))
    assert "could not look up this machine's public IP" in error and env["PUBLIC_IP_URL"] in error
    assert "--ip" in error and "GITPOD_IP" in error


def test_a_lookup_that_never_answers_times_out_with_a_clear_error(env):
    # GIVEN a lookup address that accepts the connection and then says nothing
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        # WHEN the script looks its IP up there with a short timeout
        result = run("--dry-run", "--ip-url", url, "--timeout", "0.5", env=env)
    # THEN it gives up with one line that says why and what to do instead
    error = one_line_error(result)
    assert "no answer within 0.5 s" in error and "--ip" in error


@pytest.mark.parametrize("missing", ["DB_SG_ID", "DB_SG_RULE_ID"])
def test_a_missing_group_or_rule_id_is_a_clear_error(env, missing):
    error = one_line_error(run("--dry-run", "--ip", "203.0.113.7", env={**env, missing: ""}))
    assert "DB_SG_ID" in error and "DB_SG_RULE_ID" in error


def test_a_malformed_ip_is_a_clear_error(env):
    assert "is not an IP address" in one_line_error(run("--dry-run", "--ip", "300.1.2.3", env=env))
