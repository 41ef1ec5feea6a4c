"""bin/rds/update-sg-rule: let this machine reach RDS: point the security group's rule at its public IP.

As the bootcamp's script did: the security group and its ingress rule come
from DB_SG_ID and DB_SG_RULE_ID, the IP from --ip, else GITPOD_IP, else a
lookup (PUBLIC_IP_URL, default https://checkip.amazonaws.com). The rule is
modified in place (ec2 ModifySecurityGroupRules), so the old IP loses access.
--dry-run prints the request and sends nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import urllib.error
import urllib.request

from backend_flask.lib.aws import make_client
from toolbox.scripts.common import ScriptError, config_for, run

DEFAULT_IP_URL = "https://checkip.amazonaws.com"
POSTGRES_PORT = 5432
MAX_ANSWER_BYTES = 256


def public_ip(url: str, timeout: float) -> str:
    """Ask `url` for this machine's public IP (a plain-text answer); ScriptError on any failure."""
    hint = "pass --ip or set GITPOD_IP"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            answer = response.read(MAX_ANSWER_BYTES).decode("ascii", "replace").strip()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            reason = f"no answer within {timeout:g} s"
        raise ScriptError(f"could not look up this machine's public IP at {url}: {reason}; {hint}") from exc
    try:
        return str(parse_ip(answer))
    except ScriptError as exc:
        raise ScriptError(f"{url} answered {answer[:60]!r}, not an IP address; {hint}") from exc


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Return the IP address in `text`, or ScriptError."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise ScriptError(f"{text!r} is not an IP address") from exc


def rule_request(*, group_id: str, rule_id: str, ip: str, port: int, description: str) -> dict:
    """Return the ModifySecurityGroupRules arguments that set the rule to `ip` alone on `port`."""
    address = parse_ip(ip)
    cidr = {"CidrIpv4": f"{address}/32"} if address.version == 4 else {"CidrIpv6": f"{address}/128"}
    return {"GroupId": group_id, "SecurityGroupRules": [{
        "SecurityGroupRuleId": rule_id,
        "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **cidr,
                              "Description": description},
    }]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/rds/update-sg-rule", description=__doc__.splitlines()[0],
                                     epilog="Reads DB_SG_ID, DB_SG_RULE_ID, GITPOD_IP, PUBLIC_IP_URL and the "
                                            "usual AWS settings (AWS_REGION, AWS_PROFILE, ...).")
    parser.add_argument("--ip", help="the address to allow (default: GITPOD_IP, else looked up)")
    parser.add_argument("--group-id", default=os.environ.get("DB_SG_ID"), help="default: DB_SG_ID")
    parser.add_argument("--rule-id", default=os.environ.get("DB_SG_RULE_ID"), help="default: DB_SG_RULE_ID")
    parser.add_argument("--port", type=int, default=POSTGRES_PORT, help="default: %(default)s")
    parser.add_argument("--description", default="GITPOD", help="the rule's description (default: %(default)s, "
                                                                 "as the bootcamp's)")
    parser.add_argument("--ip-url", default=os.environ.get("PUBLIC_IP_URL") or DEFAULT_IP_URL,
                        help="where to look the IP up (default: PUBLIC_IP_URL or %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for the lookup (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the request; send nothing")
    args = parser.parse_args(argv)
    if not args.group_id or not args.rule_id:
        raise ScriptError("no security group or rule: set DB_SG_ID and DB_SG_RULE_ID (or --group-id, --rule-id)")
    ip = args.ip or os.environ.get("GITPOD_IP") or public_ip(args.ip_url, args.timeout)
    request = rule_request(group_id=args.group_id, rule_id=args.rule_id, ip=ip, port=args.port,
                           description=args.description)
    if args.dry_run:
        print(json.dumps({"operation": "ec2:ModifySecurityGroupRules", "request": request}, indent=2))
        return 0
    # Real AWS only: a security group has no local stand-in.
    config = config_for("prod")
    ec2 = make_client("ec2", region=config.aws_region, timeout=10.0, max_attempts=3)
    ec2.modify_security_group_rules(**request)
    rule = request["SecurityGroupRules"][0]["SecurityGroupRule"]
    cidr = rule.get("CidrIpv4") or rule.get("CidrIpv6")
    print(f"rule {args.rule_id} of {args.group_id}: tcp {args.port} from {cidr}")
    return 0


if __name__ == "__main__":
    run(main)
