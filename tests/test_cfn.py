"""aws/cfn templates and aws/policies: lint clean, the table as designed, a least-privilege role."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from cfnlint.decode import decode

from backend_flask.config import ROOT
from backend_flask.lib import ddb
from backend_flask.lib.aws import make_client
from toolbox import stream_runner

CFN_DIR = ROOT / "aws" / "cfn"
POLICY_DIR = ROOT / "aws" / "policies"
TEMPLATE = CFN_DIR / "messaging.yaml"
TEMPLATES = sorted(p for p in CFN_DIR.iterdir() if p.suffix in {".yaml", ".yml", ".json", ".template"})
# What the stream function may do, and nothing else (TransactWriteItems is authorized per item).
ALLOWED_ACTIONS = {
    "dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams",
    "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage",
}
# What Lambda needs to attach the function to subnets (AWSLambdaVPCAccessExecutionRole v3 without logs),
# and the part of it EC2 cannot scope to a resource (Describe* actions have no resource-level permissions).
VPC_ACTIONS = {"ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:CreateNetworkInterface",
               "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}
VPC_ACTIONS_ON_ANY_RESOURCE = {"ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}
VPC_ID = "vpc-0123456789abcdef0"
# One made-up deployment, to compare ARNs built by the template with the policy files' placeholders.
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012",
          "AWS::StackName": "cruddur-messaging", "AWS::URLSuffix": "amazonaws.com"}
STREAM_LABEL = "2026-01-01T00:00:00.000"
# What Fn::If and Ref AWS::NoValue leave out of a resolved list or mapping.
NO_VALUE = object()
TRANSACT_ACTIONS = {"Put": "dynamodb:PutItem", "Delete": "dynamodb:DeleteItem", "Update": "dynamodb:UpdateItem",
                    "ConditionCheck": "dynamodb:ConditionCheckItem"}


@pytest.fixture(scope="module")
def template() -> dict:
    decoded, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return decoded


class Resolver:
    """Evaluate the intrinsic functions the templates use, for one made-up deployment."""

    def __init__(self, template: dict, imports: dict | None = None, stack_name: str | None = None,
                 **parameters: str):
        self.template = template
        self.imports = imports or {}
        self.pseudo = {**PSEUDO, "AWS::StackName": stack_name or PSEUDO["AWS::StackName"]}
        self.values = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
        self.values.update(parameters)

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.values:
            kind = self.template["Parameters"][name]["Type"]
            is_list = kind == "CommaDelimitedList" or kind.startswith("List<")
            return self.values[name].split(",") if is_list else self.values[name]
        props = self.template["Resources"][name]["Properties"]
        for key in ("TableName", "FunctionName", "RoleName", "QueueName", "LogGroupName"):
            if key in props:
                return self(props[key])
        return name

    def get_att(self, name: str, attribute: str) -> str:
        region, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
        kind = self.template["Resources"][name]["Type"]
        if kind == "AWS::DynamoDB::Table":
            arn = f"arn:aws:dynamodb:{region}:{account}:table/{self.ref(name)}"
            return {"Arn": arn, "StreamArn": f"{arn}/stream/{STREAM_LABEL}"}[attribute]
        if kind == "AWS::SQS::Queue" and attribute == "Arn":
            return f"arn:aws:sqs:{region}:{account}:{self.ref(name)}"
        raise NotImplementedError(f"{name}.{attribute}")

    def condition(self, name: str) -> bool:
        """Whether the template's condition holds for this deployment."""
        return self.holds(self.template["Conditions"][name])

    def holds(self, node: dict) -> bool:
        ((function, argument),) = node.items()
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::Equals":
            return self(argument[0]) == self(argument[1])
        if function == "Fn::Not":
            return not self.holds(argument[0])
        if function == "Fn::And":
            return all(self.holds(a) for a in argument)
        if function == "Fn::Or":
            return any(self.holds(a) for a in argument)
        raise NotImplementedError(function)

    def exports(self) -> dict[str, str]:
        """The stack's exported output values by export name."""
        return {self(o["Export"]["Name"]): self(o["Value"])
                for o in self.template.get("Outputs", {}).values() if "Export" in o}

    def __call__(self, node):
        if isinstance(node, list):
            return [v for v in (self(n) for n in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return self.ref(node["Ref"])
        if set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            return self.get_att(*(target.split(".", 1) if isinstance(target, str) else target))
        if set(node) == {"Fn::If"}:
            name, if_true, if_false = node["Fn::If"]
            return self(if_true if self.condition(name) else if_false)
        if set(node) == {"Fn::ImportValue"}:
            return self.imports[self(node["Fn::ImportValue"])]
        if set(node) == {"Fn::Join"}:
            separator, parts = node["Fn::Join"]
            return separator.join(self(parts))
        if set(node) == {"Fn::Split"}:
            separator, text = node["Fn::Split"]
            return self(text).split(separator)
        if set(node) == {"Fn::Select"}:
            index, items = node["Fn::Select"]
            return self(items)[int(self(index))]
        if set(node) == {"Fn::Sub"}:
            text, names = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]

            def value(match: re.Match) -> str:
                name = match.group(1)
                if name in names:
                    return self(names[name])
                return self.get_att(*name.split(".", 1)) if "." in name else self.ref(name)

            return re.sub(r"\$\{([^}!]+)\}", value, text)
        resolved = {k: self(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}


def policy_file(name: str, **extra: str) -> dict:
    """A policy of aws/policies with its placeholders filled for the made-up deployment."""
    values = {"Partition": "aws", "Region": PSEUDO["AWS::Region"], "AccountId": PSEUDO["AWS::AccountId"],
              "TableName": "cruddur-messages", "StreamLabel": STREAM_LABEL,
              "FunctionName": f"{PSEUDO['AWS::StackName']}-messaging-stream",
              "DeadLetterQueueName": f"{PSEUDO['AWS::StackName']}-messaging-stream-dlq", **extra}
    text = (POLICY_DIR / name).read_text()
    filled = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)
    return json.loads(filled)


def role_policies(template: dict, **parameters: str) -> dict[str, dict]:
    """The stream function role's inline policies by name, for a deployment with these parameters."""
    policies = Resolver(template, **parameters)(template["Resources"]["StreamFunctionRole"]["Properties"]["Policies"])
    return {p["PolicyName"]: p["PolicyDocument"] for p in policies}


def role_policy(template: dict) -> dict:
    return role_policies(template)["messaging-stream"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def allows(policy: dict, action: str, resource: str) -> bool:
    return any(s["Effect"] == "Allow" and action in as_list(s["Action"])
               and any(fnmatch.fnmatchcase(resource, pattern) for pattern in as_list(s["Resource"]))
               for s in policy["Statement"])


# ------------------------------------------------------------------ lint

@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_finds_no_errors(path: Path):
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), "--format", "parseable", "-t", str(path)],
                            capture_output=True, text=True, timeout=120)
    # cfn-lint's exit status is a bit mask: 2 = errors, 4 = warnings, 8 = informational; 1 = it failed.
    assert result.returncode & 0b11 == 0, result.stdout + result.stderr


# -------------------------------------------------------------- the table

def test_table_is_the_one_lib_ddb_creates_plus_production_safeguards(template):
    table = template["Resources"]["MessagesTable"]
    props = table["Properties"]
    local = ddb.table_definition()
    assert props["KeySchema"] == local["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(local["AttributeDefinitions"], key=str)
    assert props["GlobalSecondaryIndexes"] == local["GlobalSecondaryIndexes"]
    assert props["BillingMode"] == local["BillingMode"] == "PAY_PER_REQUEST"
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    assert template["Parameters"]["TableName"]["Default"] == ddb.TABLE_NAME
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_table_expires_idempotency_items_on_the_attribute_the_api_writes(template):
    # Without TTL in AWS, every Idempotency-Key item would be kept (and billed) forever.
    ttl = template["Resources"]["MessagesTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": ddb.TTL_ATTRIBUTE, "Enabled": True}


# ----------------------------------------------------- function and mapping

def test_stream_mapping_retries_bisects_reports_items_and_has_a_dead_letter_queue(template):
    resources = template["Resources"]
    mapping = resources["StreamEventSourceMapping"]["Properties"]
    resolve = Resolver(template)
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["MessagesTable", "StreamArn"]}
    assert mapping["FunctionName"] == {"Ref": "StreamFunction"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert 1 <= int(resolve(mapping["BatchSize"])) <= 1000
    assert 0 <= int(resolve(mapping["MaximumRetryAttempts"])) <= 10
    destination = mapping["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert resources["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    # The filters let through new messages and moved read markers, with the key formats lib/ddb defines.
    messages_only, markers = (json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"])
    assert messages_only["eventName"] == ["INSERT"]
    assert messages_only["dynamodb"]["Keys"]["pk"]["S"] == [{"prefix": ddb.MESSAGE_PREFIX}]
    assert markers["eventName"] == ["INSERT", "MODIFY"]
    assert markers["dynamodb"]["Keys"]["pk"]["S"] == [{"prefix": ddb.MEMBER_PREFIX}]
    assert markers["dynamodb"]["NewImage"] == {"last_read_at": {"S": [{"exists": True}]}}


def test_function_runs_the_packaged_handler_with_the_table_from_its_environment(template):
    function = template["Resources"]["StreamFunction"]["Properties"]
    handler_module, handler_name = function["Handler"].split(".")
    assert (stream_runner.HANDLER_FILE.stem, handler_name) == (handler_module, "handler")
    assert (TEMPLATE.parent / function["Code"]).resolve() == ROOT / "dist" / "messaging-stream.zip"
    env = function["Environment"]["Variables"]
    assert env["DDB_MESSAGE_TABLE"] == {"Ref": "MessagesTable"}
    assert "AWS_ENDPOINT_URL" not in env
    assert function["Runtime"].startswith("python3.")
    assert function["Role"] == {"Fn::GetAtt": ["StreamFunctionRole", "Arn"]}


def test_vpc_settings_apply_only_when_a_vpc_is_given(template):
    resources = template["Resources"]
    assert template["Conditions"]["InVpc"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "VpcId"}, ""]}]}
    vpc_config = resources["StreamFunction"]["Properties"]["VpcConfig"]["Fn::If"]
    assert vpc_config[0] == "InVpc" and vpc_config[2] == {"Ref": "AWS::NoValue"}
    endpoint = resources["DynamoDBGatewayEndpoint"]
    assert endpoint["Condition"] == "AddGatewayEndpoint"
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    assert "messaging-stream-vpc" in role_policies(template, VpcId=VPC_ID)
    assert "messaging-stream-vpc" not in role_policies(template)


def test_function_is_created_only_once_its_role_grants_everything(template):
    # GIVEN the function and every policy resource that grants its role something
    resources = template["Resources"]
    function = resources["StreamFunction"]
    separate = {name for name, r in resources.items()
                if r["Type"] in {"AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"}
                and "StreamFunctionRole" in json.dumps(r["Properties"])}
    # THEN the function waits for the role (inline policies are part of it) and for each separate policy:
    # without that, Lambda could be asked to create network interfaces before it may
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["StreamFunctionRole", "Arn"]}
    assert separate <= set(as_list(function.get("DependsOn", [])))
    assert not any("Condition" in resources[name] for name in separate)  # DependsOn on those is invalid


# ------------------------------------------------------------------ policy

def test_role_policy_lists_only_the_needed_actions_and_no_star(template):
    policy = template["Resources"]["StreamFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    actions = [a for s in policy["Statement"] for a in as_list(s["Action"])]
    assert set(actions) <= ALLOWED_ACTIONS
    assert not any("*" in a for a in actions)
    assert all(s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s
               for s in policy["Statement"])
    for resource in (r for s in role_policy(template)["Statement"] for r in as_list(s["Resource"])):
        assert resource != "*"
        # The only wildcard: the log streams Lambda creates in the function's own log group.
        assert "*" not in resource or re.fullmatch(
            r"arn:aws:logs:[\w-]+:\d{12}:log-group:/aws/lambda/cruddur-messaging-messaging-stream:\*", resource)


def test_role_policy_in_the_template_and_in_aws_policies_agree(template):
    assert role_policy(template) == policy_file("messaging-stream-role-policy.json")


def test_vpc_policy_in_the_template_and_in_aws_policies_agree(template):
    in_template = role_policies(template, VpcId=VPC_ID)["messaging-stream-vpc"]
    assert in_template == policy_file("messaging-stream-vpc-policy.json", VpcId=VPC_ID)
    assert {a for s in in_template["Statement"] for a in as_list(s["Action"])} == VPC_ACTIONS
    for statement in in_template["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        if statement["Resource"] == "*":
            assert set(as_list(statement["Action"])) <= VPC_ACTIONS_ON_ANY_RESOURCE
        else:
            # Everything else stays in this account and region.
            assert all(r.startswith(f"arn:aws:ec2:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:")
                       for r in as_list(statement["Resource"]))


def test_every_policy_file_is_compared_with_its_template_and_its_placeholders_are_explained():
    # The tests above and tests/test_cfn_api.py compare these files with the templates, statement by statement.
    compared = {"api-table-policy.json", "messaging-stream-role-policy.json", "messaging-stream-vpc-policy.json"}
    files = {p.name for p in POLICY_DIR.glob("*.json")}
    assert files == compared, "a new policy file needs a test that compares it with the template creating it"
    readme = (POLICY_DIR / "README.md").read_text()
    for name in sorted(files):
        assert f"`{name}`" in readme, f"aws/policies/README.md does not say what {name} is for"
        for placeholder in sorted(set(re.findall(r"\$\{(\w+)\}", (POLICY_DIR / name).read_text()))):
            assert f"`${{{placeholder}}}`" in readme, f"aws/policies/README.md does not explain ${{{placeholder}}}"


def recording_client(config) -> tuple[object, list[tuple[str, dict]]]:
    """A real DynamoDB client that notes every operation it sends, with its parameters."""
    calls: list[tuple[str, dict]] = []
    client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url)
    client.meta.events.register("before-parameter-build.dynamodb",
                                lambda params, model, **_: calls.append((model.name, dict(params))))
    return client, calls


def permissions_needed(calls: list[tuple[str, dict]], table_arn: str) -> set[tuple[str, str]]:
    """The (IAM action, resource) pairs that authorize these calls on the deployed table."""
    needed = set()
    for operation, params in calls:
        if operation == "TransactWriteItems":
            needed |= {(TRANSACT_ACTIONS[kind], table_arn) for item in params["TransactItems"] for kind in item}
        elif "IndexName" in params:
            needed.add((f"dynamodb:{operation}", f"{table_arn}/index/{params['IndexName']}"))
        else:
            needed.add((f"dynamodb:{operation}", table_arn))
    return needed


def test_role_policy_allows_every_call_the_handler_makes(template, config, conversation, stream_record):
    # GIVEN a recording client, a conversation, and new messages for it and for a group without rows
    client, calls = recording_client(config)
    convo = conversation()
    sk = ddb.now_iso()
    items = [{"pk": ddb.MESSAGE_PREFIX + group, "sk": sk, "message_uuid": "m", "message": "policy probe",
              "user_uuid": convo["b"]["uuid"], "user_display_name": "Bob", "user_handle": "bob"}
             for group in (convo["group"], str(uuid.uuid4()))]
    # WHEN the handler processes them through that client
    handler = stream_runner.load_handler_module()
    result = handler.process_batch({"Records": [stream_record("INSERT", item, str(n))
                                                for n, item in enumerate(items, 1)]},
                                   ddb.MessagesTable(client, config.ddb_message_table))
    assert result == {"batchItemFailures": []}
    # THEN the deployed role would allow each of those calls on the deployed table
    table_arn = Resolver(template).get_att("MessagesTable", "Arn")
    needed = permissions_needed(calls, table_arn)
    assert ("dynamodb:Query", f"{table_arn}/index/{ddb.GROUP_INDEX}") in needed
    assert {"dynamodb:PutItem", "dynamodb:DeleteItem"} <= {action for action, _ in needed}
    policy = role_policy(template)
    assert [n for n in sorted(needed) if not allows(policy, *n)] == []


def api_policy(template: dict) -> dict:
    return Resolver(template)(template["Resources"]["ApiTableAccessPolicy"]["Properties"]["PolicyDocument"])


def test_api_policy_in_the_template_and_in_aws_policies_agree_and_has_no_star(template):
    policy = api_policy(template)
    assert policy == policy_file("api-table-policy.json")
    for statement in policy["Statement"]:
        assert not any("*" in x for x in as_list(statement["Action"]) + as_list(statement["Resource"]))


def test_api_policy_allows_every_call_of_patterns_a_to_d(template, config):
    # GIVEN a recording client and two people
    client, calls = recording_client(config)
    table = config.ddb_message_table
    messages = ddb.MessagesTable(client, table)
    a, b = ({"uuid": str(uuid.uuid4()), "handle": f"h{n}", "display_name": f"P{n}"} for n in (1, 2))
    # WHEN the API's access patterns run through it, repeats and the health check included
    messages.ping()
    first = messages.create_message_group(sender=a, receiver=b, message="hi", idempotency_key="k1")
    messages.create_message_group(sender=a, receiver=b, message="hi", idempotency_key="k1")
    messages.create_message_group(sender=b, receiver=a, message="hi back")
    group = first["message_group_uuid"]
    messages.create_message(message_group_uuid=group, sender=a, message="d", idempotency_key="k2")
    messages.create_message(message_group_uuid=group, sender=a, message="d", idempotency_key="k2")
    assert messages.is_member(group, b["uuid"])
    messages.list_messages(group, limit=1)
    messages.list_message_groups(a["uuid"], limit=1)
    # ... and what the event stream does: publish (rows by group), tickets, replay
    messages.group_rows(group)
    messages.members(group)
    ticket = messages.issue_ticket(a, token_expires_at=2_000_000_000)
    assert messages.redeem_ticket(ticket["ticket"]) and messages.redeem_ticket(ticket["ticket"]) is None
    messages.rows_since(a["uuid"], "2020-01-01T00:00:00.000000+00:00", limit=10)
    messages.messages_since(group, "2020-01-01T00:00:00.000000+00:00", limit=10)
    # THEN the managed policy for the API's role allows each call
    needed = permissions_needed(calls, Resolver(template).get_att("MessagesTable", "Arn"))
    policy = api_policy(template)
    assert [n for n in sorted(needed) if not allows(policy, *n)] == []
    # AND the only items the API deletes are tickets, which is all the policy lets it delete
    deleted = [params["Key"]["pk"]["S"] for operation, params in calls if operation == "DeleteItem"]
    assert deleted and all(pk.startswith(ddb.TICKET_PREFIX) for pk in deleted)
    (statement,) = [s for s in policy["Statement"] if "dynamodb:DeleteItem" in as_list(s["Action"])]
    assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [ddb.TICKET_PREFIX + "*"]}}
