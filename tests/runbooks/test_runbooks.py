"""automations.runbooks: parsing real runbook content (untrusted) into the stored parameter schema."""

import json

import pytest

from automations.runbooks import (
    UnsupportedRunbook,
    category_of,
    element_type,
    is_role_like,
    load_document,
    ordered_parameters,
    parse_parameters,
    pattern_problems,
    step_summary,
)
from tests.runbooks.test_validation import FIXTURE_FILES, SCHEMAS


def _doc(parameters: dict, **extra) -> dict:
    return {
        "schemaVersion": "0.3",
        "parameters": parameters,
        "mainSteps": [{"name": "s", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}],
        **extra,
    }


class TestFixtures:
    def test_every_fixture_runbook_parses_with_no_problems(self):
        assert len(SCHEMAS) == len(FIXTURE_FILES) >= 16
        for name, schema in SCHEMAS.items():
            assert pattern_problems(schema) == [], name
            for parameter, spec in schema.items():
                assert set(spec) >= {"type", "required", "server_owned", "description"}, (name, parameter)

    def test_automation_assume_role_is_server_owned_everywhere(self):
        for name, schema in SCHEMAS.items():
            if "AutomationAssumeRole" in schema:
                assert schema["AutomationAssumeRole"]["server_owned"], name

    def test_lambda_role_and_typed_roles_are_server_owned(self):
        assert SCHEMAS["aws-CopySnapshot.json"]["LambdaAssumeRole"]["server_owned"]
        assert SCHEMAS["aws-EnableS3BucketKeys.yml"]["AutomationAssumeRole"]["type"] == "AWS::IAM::Role::Arn"
        assert not SCHEMAS["aws-StopEC2InstanceWithApproval.json"]["SNSTopicArn"]["server_owned"]

    def test_required_means_no_default(self):
        restart = SCHEMAS["aws-RestartEC2Instance.json"]
        assert restart["InstanceId"] == {
            "type": "StringList",
            "description": restart["InstanceId"]["description"],
            "required": True,
            "role_kind": "",
            "server_owned": False,
            "position": 0,
        }
        assert SCHEMAS["aws-CopySnapshot.json"]["Description"]["required"] is False

    def test_rotate_logs_keeps_every_constraint_in_a_stable_shape(self):
        schema = SCHEMAS["Delegate-RotateLogs.yaml"]
        assert schema["InstanceIds"]["type"] == "List<AWS::EC2::Instance::Id>"
        assert (schema["InstanceIds"]["minItems"], schema["InstanceIds"]["maxItems"]) == (1, 10)
        assert schema["RetentionDays"]["allowedValues"] == ["7", "14", "30", "90"]
        assert schema["LogGroup"]["allowedPattern"] == "^[a-z][a-z0-9-]*$"
        assert (schema["LogGroup"]["minChars"], schema["LogGroup"]["maxChars"]) == (3, 31)
        assert schema["Notes"]["displayType"] == "textarea"
        assert schema["Compress"]["default"] is True
        assert json.loads(json.dumps(schema)) == schema  # stores in a JSONField unchanged
        assert [name for name, _ in ordered_parameters(schema)][:3] == [
            "AutomationAssumeRole",
            "InstanceIds",
            "CollectorInstanceId",
        ]


class TestUntrustedContent:
    def test_yaml_aliases_are_refused(self):
        bomb = "schemaVersion: '0.3'\na: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nmainSteps: []\n"
        with pytest.raises(UnsupportedRunbook, match="aliases"):
            load_document(bomb, "YAML")

    def test_oversized_and_malformed_content(self):
        with pytest.raises(UnsupportedRunbook):
            load_document("{" * 300_000, "JSON")
        with pytest.raises(UnsupportedRunbook, match="not valid JSON"):
            load_document("{nope", "JSON")
        with pytest.raises(UnsupportedRunbook, match="0.3"):
            load_document('{"schemaVersion": "2.2"}', "JSON")
        with pytest.raises(UnsupportedRunbook):
            load_document("[1, 2]", "JSON")

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({"type": "Float"}, "unsupported parameter type"),
            ({"type": "AWS::"}, "unsupported parameter type"),
            ({"type": "String", "minChars": "lots"}, "whole number"),
            ({"type": "String", "maxItems": -1}, "whole number"),
            ({"type": "String", "allowedValues": "a,b"}, "allowedValues"),
            ({"type": "String", "allowedValues": [{"a": 1}]}, "allowedValues"),
            ({"type": "String", "allowedPattern": ["^a$"]}, "allowedPattern"),
            ({"type": "String", "allowedPattern": "a" * 5000}, "allowedPattern"),
            ("String", "must be an object"),
        ],
    )
    def test_bad_definitions_are_refused_with_a_reason(self, spec, message):
        with pytest.raises(UnsupportedRunbook, match=message):
            parse_parameters(_doc({"P": spec}))

    def test_bad_parameter_names_are_refused(self):
        with pytest.raises(UnsupportedRunbook, match="parameter names"):
            parse_parameters(_doc({"x" * 51: {"type": "String"}}))
        with pytest.raises(UnsupportedRunbook, match="parameter names"):
            parse_parameters(_doc({"a b": {"type": "String"}}))

    def test_values_are_normalised_to_text(self):
        schema = parse_parameters(
            _doc({"P": {"type": "Boolean", "allowedValues": [True, False], "minChars": "2"}})
        )
        assert schema["P"]["allowedValues"] == ["true", "false"] and schema["P"]["minChars"] == 2

    def test_a_pattern_no_engine_can_compile_is_a_problem(self):
        schema = parse_parameters(_doc({"P": {"type": "String", "allowedPattern": "(unclosed"}}))
        assert pattern_problems(schema)[0].startswith("P: allowedPattern cannot be evaluated safely")

    def test_java_only_syntax_is_evaluated_not_refused(self):
        schema = parse_parameters(_doc({"P": {"type": "String", "allowedPattern": r"^(?!\s*$).+$"}}))
        assert pattern_problems(schema) == []


class TestRoles:
    @pytest.mark.parametrize(
        "name",
        [
            "AutomationAssumeRole",
            "LambdaAssumeRole",
            "ExecutionRole",
            "ServiceRoleArn",
            "RoleName",
            "IamInstanceProfileName",
            "InstanceProfile",
        ],
    )
    def test_role_like_names(self, name):
        assert is_role_like(name, {"type": "String"})

    @pytest.mark.parametrize(
        "kind", ["AWS::IAM::Role::Arn", "List<AWS::IAM::Role::Arn>", "AWS::IAM::Role::Name"]
    )
    def test_role_types(self, kind):
        assert is_role_like("Whatever", {"type": kind})

    @pytest.mark.parametrize("name", ["InstanceId", "SNSTopicArn", "Approvers", "Roles2"])
    def test_not_roles(self, name):
        assert not is_role_like(name, {"type": "String"})


def test_element_type_and_steps_and_category():
    assert element_type("List<AWS::EC2::Instance::Id>") == "AWS::EC2::Instance::Id"
    assert element_type("StringList") == "String"
    document = _doc(
        {}, mainSteps=[{"name": "a", "action": "aws:executeAwsApi", "inputs": {"Service": "s3"}}, "junk"]
    )
    assert step_summary(document) == [{"name": "a", "action": "aws:executeAwsApi", "service": "s3", "api": ""}]
    assert category_of(document) == "S3"
    assert category_of(document, {"Category": "Storage"}) == "Storage"
    assert category_of(document, name="AWS-RebootRdsInstance") == "RDS"
    assert category_of(_doc({}, mainSteps=[])) == "General"
    plumbing = _doc(
        {},
        mainSteps=[
            {"name": "c", "action": "aws:createStack", "inputs": {}},
            {"name": "d", "action": "aws:deleteStack", "inputs": {}},
            {"name": "e", "action": "aws:changeInstanceState", "inputs": {}},
        ],
    )
    assert category_of(plumbing) == "EC2"


class TestIdentityAndRoleKinds:
    """Issue 12: the identity comes from assumeRole; a role parameter's kind from where it is used."""

    @pytest.mark.parametrize(("assume_role", "expected"), [
        ("{{ AutomationAssumeRole }}", {"kind": "parameter", "parameter": "AutomationAssumeRole"}),
        ("{{automationAssumeRole}}", {"kind": "parameter", "parameter": "automationAssumeRole"}),
        ("  {{ MyRole }} ", {"kind": "parameter", "parameter": "MyRole"}),
        ("arn:aws:iam::123456789012:role/Fixed", {"kind": "literal", "role": "arn:aws:iam::123456789012:role/Fixed"}),
        ("arn:aws:iam::{{global:ACCOUNT_ID}}:role/X", {"kind": "literal", "role": "arn:aws:iam::{{global:ACCOUNT_ID}}:role/X"}),
        ("", {"kind": "absent"}),
        (None, {"kind": "absent"}),
    ])
    def test_identity_of(self, assume_role, expected):
        from automations.runbooks import identity_of

        document = {"schemaVersion": "0.3", "mainSteps": [{"name": "a", "action": "aws:sleep", "inputs": {}}]}
        if assume_role is not None:
            document["assumeRole"] = assume_role
        assert identity_of(document) == expected

    def test_kinds_follow_where_the_parameter_is_referenced(self):
        steps = [
            {"name": "approve", "action": "aws:approve",
             "inputs": {"Approvers": "{{ Approvers }}", "MinRequiredApprovals": "{{ Quorum }}"}},
            {"name": "stack", "action": "aws:createStack",
             "inputs": {"StackName": "s", "RoleARN": "{{ StackRole }}",
                        "Parameters": [{"ParameterKey": "LambdaRoleArn", "ParameterValue": "{{ FnRole }}"},
                                       {"ParameterKey": "RoleName", "ParameterValue": "{{ RoleName }}"}]}},
            {"name": "fn", "action": "aws:executeAwsApi",
             "inputs": {"Service": "lambda", "Api": "CreateFunction", "Role": "{{ ExecRole }}"}},
            {"name": "attach", "action": "aws:executeAwsApi",
             "inputs": {"Service": "iam", "Api": "AddRoleToInstanceProfile", "RoleName": "{{ TargetRole }}"}},
        ]
        names = ["runAs", "Approvers", "Quorum", "StackRole", "FnRole", "RoleName", "ExecRole", "TargetRole",
                 "ClusterRoleArn", "LambdaAssumeRole", "InstanceId"]
        document = _doc({name: {"type": "String"} for name in names}, mainSteps=steps, assumeRole="{{ runAs }}")
        kinds = {name: spec["role_kind"] for name, spec in parse_parameters(document).items()}
        assert kinds == {
            "runAs": "automation", "Approvers": "approvers", "Quorum": "min_approvals", "StackRole": "handoff",
            "FnRole": "handoff", "RoleName": "subject", "ExecRole": "handoff", "TargetRole": "subject",
            "ClusterRoleArn": "subject", "LambdaAssumeRole": "handoff", "InstanceId": "",
        }
        owned = {name for name, spec in parse_parameters(document).items() if spec["server_owned"]}
        assert owned == {"runAs", "Approvers", "Quorum", "StackRole", "FnRole", "ExecRole", "LambdaAssumeRole"}
