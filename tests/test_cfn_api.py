"""aws/cfn/api-service.yaml: the API on Fargate behind an ALB, with the settings Config reads and no more."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from cfnlint.decode import decode

from backend_flask import config as config_module
from backend_flask.config import Config
from tests.test_cfn import PSEUDO, Resolver, api_policy, as_list, policy_file

ROOT = Path(__file__).resolve().parents[1]
API_TEMPLATE = ROOT / "aws" / "cfn" / "api-service.yaml"
MESSAGING_TEMPLATE = ROOT / "aws" / "cfn" / "messaging.yaml"

# Local-stack settings of Config (bin/dev's ports, the demo password): never part of a deployment,
# and on their way out of the shipped Config.
DEV_ONLY = {"PORT", "DEV_PG_PORT", "DEV_DDB_PORT", "DEV_COGNITO_PORT", "DEMO_PASSWORD"}
# Settings Config reads that must stay UNSET in AWS:
NOT_IN_AWS = {
    "AWS_ENDPOINT_URL",      # set, boto3 sends DynamoDB calls there (DynamoDB Local) instead of to AWS
    "COGNITO_ENDPOINT_URL",  # set, the API trusts that issuer and JWKS (cognito-local) instead of the pool's
    "PROD_CONNECTION_URL",   # the database `bin/db/* prod` reaches from a laptop; the API reads CONNECTION_URL
}
# Settings that hold credentials: passed through the task definition's Secrets, never as plain values.
SECRET = {"CONNECTION_URL"}
# The only actions the API stack may grant on Resource "*": ECR has no resource-level permission for it.
STAR_ONLY = {"ecr:GetAuthorizationToken"}

POOL_ID = "us-east-1_AbCdEfGhI"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cruddur/api/connection-url-AbCdEf"
CERTIFICATE_ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
# One made-up deployment of the API stack (every parameter without a default).
DEPLOYMENT = {
    "ImageTag": "3f2a9c1", "VpcId": "vpc-0123456789abcdef0",
    "PublicSubnetIds": "subnet-0aaa,subnet-0bbb", "ServiceSubnetIds": "subnet-0ccc,subnet-0ddd",
    "ConnectionUrlSecretArn": SECRET_ARN, "CognitoUserPoolId": POOL_ID, "CognitoClientId": "4tq1c1ient1d",
    "FrontendUrl": "https://cruddur.example",
}


class ApiResolver(Resolver):
    """Resolve the API stack against the messaging stack's exports (deployed under its default name)."""

    def __init__(self, template: dict, messaging: dict, **parameters: str):
        super().__init__(template, imports=Resolver(messaging).exports(), stack_name="cruddur-api",
                         **{**DEPLOYMENT, **parameters})

    def get_att(self, name: str, attribute: str) -> str:
        # A stand-in: none of these values is compared with a policy file.
        return f"{name}.{attribute}"


@pytest.fixture(scope="module")
def api() -> dict:
    decoded, problems = decode(str(API_TEMPLATE))
    assert not problems, problems
    return decoded


@pytest.fixture(scope="module")
def messaging() -> dict:
    decoded, problems = decode(str(MESSAGING_TEMPLATE))
    assert not problems, problems
    return decoded


@pytest.fixture(scope="module")
def container(api) -> dict:
    (definition,) = api["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    return definition


def inline_policies(api: dict, role: str, resolve: Resolver) -> dict[str, dict]:
    return {p["PolicyName"]: p["PolicyDocument"] for p in resolve(api["Resources"][role]["Properties"]["Policies"])}


def intrinsics(node, function: str) -> list:
    """The arguments of every call of an intrinsic function in a template fragment."""
    if isinstance(node, list):
        return [found for item in node for found in intrinsics(item, function)]
    if isinstance(node, dict):
        return [found for key, value in node.items()
                for found in ([value] if key == function else []) + intrinsics(value, function)]
    return []


def dockerfile_port() -> int:
    return int(re.search(r"^EXPOSE\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1))


# ------------------------------------------------------- container settings

def test_container_sets_exactly_the_settings_config_reads_in_aws(container):
    # GIVEN the names the shipped Config reads, less the local-only ones and those AWS must not have
    expected = {f.name.upper() for f in fields(Config)} - DEV_ONLY - NOT_IN_AWS
    # WHEN the container's environment is listed, plain values and secrets together
    names = [v["Name"] for v in container["Environment"]] + [s["Name"] for s in container.get("Secrets", [])]
    # THEN each setting is set once, none is missing and none is extra
    assert len(names) == len(set(names)), f"set twice: {sorted(n for n in names if names.count(n) > 1)}"
    missing = sorted(expected - set(names))
    assert not missing, (
        f"backend_flask.config.Config reads {missing}, but aws/cfn/api-service.yaml does not set it: add each to "
        "the container's Environment (a value, or a new parameter) or, if it holds a credential, to its Secrets. "
        "If it must stay unset in AWS, add it to NOT_IN_AWS in tests/test_cfn_api.py with the reason.")
    extra = sorted(set(names) - expected)
    assert not extra, (f"aws/cfn/api-service.yaml sets {extra}, which Config does not read in AWS "
                       "(or which NOT_IN_AWS says must stay unset there)")


def test_credentials_come_from_secrets_manager_never_as_plain_values(api, container):
    plain = {v["Name"] for v in container["Environment"]}
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    assert set(secrets) == SECRET and not plain & SECRET
    assert secrets["CONNECTION_URL"] == {"Ref": "ConnectionUrlSecretArn"}
    assert "secretsmanager" in api["Parameters"]["ConnectionUrlSecretArn"]["AllowedPattern"]


def test_config_built_from_the_task_environment_talks_to_real_aws(api, messaging, container, monkeypatch):
    # GIVEN the container's environment for one deployment, the secret's value standing in for ECS
    resolve = ApiResolver(api, messaging)
    env = {v["Name"]: str(v["Value"]) for v in resolve(container["Environment"])}
    env["CONNECTION_URL"] = "postgresql://cruddur:secret@cruddur.abc.eu-west-1.rds.amazonaws.com:5432/cruddur"
    # (a Config that still falls back to bin/dev's state file must not see this machine's local stack)
    monkeypatch.setattr(config_module, "local_state", lambda: {}, raising=False)
    # WHEN the API builds its settings from it
    config = Config.from_env(env)
    # THEN every value parses, and DynamoDB and Cognito are the real services of this deployment
    assert config.aws_endpoint_url is None and config.cognito_endpoint_url is None
    assert config.aws_region == PSEUDO["AWS::Region"]
    assert config.ddb_message_table == "cruddur-messages"
    assert config.cognito_region == "us-east-1"
    assert config.cognito_issuer == f"https://cognito-idp.us-east-1.amazonaws.com/{POOL_ID}"
    assert config.frontend_url == DEPLOYMENT["FrontendUrl"]
    assert config.backend_url == "http://LoadBalancer.DNSName"
    with_cert = ApiResolver(api, messaging, CertificateArn=CERTIFICATE_ARN)
    assert {v["Name"]: v["Value"] for v in with_cert(container["Environment"])}["BACKEND_URL"] == (
        "https://LoadBalancer.DNSName")


def test_container_runs_the_image_default_command_from_the_stack_repository(api, messaging, container):
    assert "Command" not in container and "EntryPoint" not in container
    image = ApiResolver(api, messaging)(container["Image"])
    assert image == f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend-flask:{DEPLOYMENT['ImageTag']}"
    assert container["PortMappings"] == [{"ContainerPort": dockerfile_port(), "Protocol": "tcp"}]


def test_the_table_the_api_stack_imports_is_what_the_messaging_stack_exports(api, messaging):
    exported = Resolver(messaging).exports()
    assert api["Parameters"]["MessagingStackName"]["Default"] == PSEUDO["AWS::StackName"]
    assert set(exported) == {"cruddur-messaging-TableName", "cruddur-messaging-TableArn"}
    resolve = ApiResolver(api, messaging)
    assert {resolve(name) for name in intrinsics(api["Resources"], "Fn::ImportValue")} == set(exported)


# -------------------------------------------------------------------- roles

def test_task_role_grants_exactly_the_api_table_policy(api, messaging):
    resolve = ApiResolver(api, messaging)
    assert set(inline_policies(api, "TaskRole", resolve)) == {"api-table"}
    assert "ManagedPolicyArns" not in api["Resources"]["TaskRole"]["Properties"]
    granted = inline_policies(api, "TaskRole", resolve)["api-table"]
    assert granted == policy_file("api-table-policy.json")
    assert granted == api_policy(messaging)   # the managed policy the messaging stack offers other hosts


def test_execution_role_pulls_only_the_api_image_writes_its_logs_and_reads_its_secret(api, messaging):
    resolve = ApiResolver(api, messaging)
    policy = inline_policies(api, "ExecutionRole", resolve)["api-execution"]
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["PullTheApiImage"]["Resource"] == [
        "arn:aws:ecr:eu-west-1:123456789012:repository/backend-flask"]
    assert by_sid["WriteApiLogs"]["Resource"] == [
        "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/cruddur-api/api:*"]
    assert by_sid["ReadConnectionUrl"] == {"Sid": "ReadConnectionUrl", "Effect": "Allow",
                                           "Action": ["secretsmanager:GetSecretValue"], "Resource": [SECRET_ARN]}


def test_no_wildcard_beyond_what_aws_requires(api, messaging):
    resolve = ApiResolver(api, messaging)
    roles = [name for name, r in api["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    assert {r["Type"] for r in api["Resources"].values() if r["Type"].startswith("AWS::IAM::")} == {"AWS::IAM::Role"}
    for role in roles:
        for document in inline_policies(api, role, resolve).values():
            for statement in document["Statement"]:
                assert statement["Effect"] == "Allow" and "NotAction" not in statement
                actions = set(as_list(statement["Action"]))
                assert not any("*" in a for a in actions)
                if "*" in as_list(statement["Resource"]):
                    assert actions <= STAR_ONLY, (role, statement["Sid"])


# ------------------------------------------------------------ load balancer

def test_http_on_80_and_https_on_443_only_with_a_certificate(api, messaging):
    resources = api["Resources"]
    plain, secure = ApiResolver(api, messaging), ApiResolver(api, messaging, CertificateArn=CERTIFICATE_ARN)
    http = resources["HttpListener"]
    assert "Condition" not in http
    assert (http["Properties"]["Port"], http["Properties"]["Protocol"]) == (80, "HTTP")
    assert http["Properties"]["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": "TargetGroup"}}]
    https = resources["HttpsListener"]
    assert https["Condition"] == "HasCertificate"
    assert (https["Properties"]["Port"], https["Properties"]["Protocol"]) == (443, "HTTPS")
    assert https["Properties"]["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    redirect = resources["HttpToHttpsRedirect"]
    assert redirect["Condition"] == "HasCertificate"
    assert redirect["Properties"]["Actions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    assert not plain.condition("HasCertificate") and secure.condition("HasCertificate")

    def open_ports(resolve: Resolver) -> set[int]:
        rules = resolve(resources["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"])
        assert all(r["CidrIp"] == "0.0.0.0/0" and r["FromPort"] == r["ToPort"] for r in rules)
        return {r["FromPort"] for r in rules}

    assert open_ports(plain) == {80}
    assert open_ports(secure) == {80, 443}


def test_target_group_checks_the_health_route_on_the_container_port(api):
    target_group = api["Resources"]["TargetGroup"]["Properties"]
    paths = yaml.safe_load((ROOT / "openapi.yml").read_text())["paths"]
    assert target_group["HealthCheckPath"] == "/api/health" and "/api/health" in paths
    assert target_group["TargetType"] == "ip" and target_group["Port"] == dockerfile_port()
    attributes = {a["Key"]: a["Value"] for a in target_group["TargetGroupAttributes"]}
    assert 5 <= int(attributes["deregistration_delay.timeout_seconds"]) <= 60
    balancer = {a["Key"]: a["Value"] for a in api["Resources"]["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]}
    assert int(balancer["idle_timeout.timeout_seconds"]) == 60


def test_tasks_take_traffic_only_from_the_load_balancer_on_the_container_port(api):
    (rule,) = api["Resources"]["ServiceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert rule["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    assert rule["FromPort"] == rule["ToPort"] == dockerfile_port() and rule["IpProtocol"] == "tcp"
    assert "CidrIp" not in rule
    database = api["Resources"]["DatabaseIngressFromService"]
    assert database["Condition"] == "HasDbSecurityGroup"
    assert database["Properties"]["SourceSecurityGroupId"] == {"Ref": "ServiceSecurityGroup"}


def test_service_registers_only_after_its_target_group_has_a_listener(api):
    service = api["Resources"]["Service"]
    assert "HttpListener" in as_list(service["DependsOn"])
    (balancer,) = service["Properties"]["LoadBalancers"]
    assert balancer == {"ContainerName": "api", "ContainerPort": dockerfile_port(),
                        "TargetGroupArn": {"Ref": "TargetGroup"}}


# -------------------------------------------------------------- autoscaling

def test_service_scales_on_cpu_and_on_requests_per_task_between_the_given_counts(api):
    resources = api["Resources"]
    target = resources["ScalableTarget"]["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == ({"Ref": "MinTasks"}, {"Ref": "MaxTasks"})
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert target["ResourceId"] == {"Fn::Sub": "service/${Cluster}/${Service.Name}"}
    # A DesiredCount in the template would undo autoscaling on every stack update.
    assert "DesiredCount" not in resources["Service"]["Properties"]
    policies = {r["Properties"]["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
        "PredefinedMetricType"]: r["Properties"] for r in resources.values()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"}
    assert set(policies) == {"ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"}
    for policy in policies.values():
        assert policy["PolicyType"] == "TargetTrackingScaling"
        assert policy["ScalingTargetId"] == {"Ref": "ScalableTarget"}
    requests = policies["ALBRequestCountPerTarget"]["TargetTrackingScalingPolicyConfiguration"]
    # app/<lb name>/<lb id>/targetgroup/<tg name>/<tg id>: this load balancer and this target group.
    assert requests["PredefinedMetricSpecification"]["ResourceLabel"] == {
        "Fn::Sub": "${LoadBalancer.LoadBalancerFullName}/${TargetGroup.TargetGroupFullName}"}
    assert requests["TargetValue"] == {"Ref": "RequestsPerTaskPerMinute"}


def test_logs_go_to_the_stack_log_group_with_a_retention(api, container):
    log_group = api["Resources"]["LogGroup"]["Properties"]
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    options = container["LogConfiguration"]["Options"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert options["awslogs-group"] == {"Ref": "LogGroup"}
