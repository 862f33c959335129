"""SSM document APIs of the sandbox, driven over HTTP with boto3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

pytestmark = []

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "runbooks"
PACKAGED = Path(__file__).resolve().parents[2] / "sandbox" / "documents" / "amazon"


def fixture_runbooks() -> dict[str, dict]:
    """Document name -> parsed content, from the packaged copies of the fixtures."""
    found = {}
    for path in sorted(PACKAGED.glob("aws-*.*")):
        text = path.read_text()
        found[path.stem.replace("aws-", "AWS-", 1)] = (
            json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        )
    return found


def list_all(ssm, **kwargs) -> list[dict]:
    return [
        d
        for page in ssm.get_paginator("list_documents").paginate(**kwargs)
        for d in page["DocumentIdentifiers"]
    ]


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_packaged_runbooks_are_the_fixtures():
    if FIXTURES.exists():  # ../shared is there in the dev tree and CI; the sandbox never reads it
        for path in FIXTURES.glob("aws-*.*"):
            if "mainSteps" not in path.read_text():
                # AWS's parameter sidecar files (aws-CreateManaged*Instance*) are not runbooks.
                assert not (PACKAGED / path.name).exists()
                continue
            assert (PACKAGED / path.name).read_text() == path.read_text()
    assert len(fixture_runbooks()) == 19


def test_every_fixture_runbook_is_listed_as_amazon_owned(ssm):
    listed = {d["Name"]: d for d in list_all(ssm, Filters=[{"Key": "Owner", "Values": ["Amazon"]}])}
    assert set(fixture_runbooks()) <= set(listed)
    restart = listed["AWS-RestartEC2Instance"]
    assert restart["Owner"] == "Amazon"
    assert restart["DocumentType"] == "Automation"
    assert restart["SchemaVersion"] == "0.3"
    assert listed["AWS-EnableS3BucketKeys"]["DocumentFormat"] == "YAML"


@pytest.mark.parametrize("fmt", ["JSON", "YAML"])
def test_every_fixture_runbook_is_fetched_in_both_formats(ssm, fmt):
    for name, content in fixture_runbooks().items():
        document = ssm.get_document(Name=name, DocumentFormat=fmt)
        assert document["DocumentFormat"] == fmt
        assert document["DocumentVersion"] == "1"
        parsed = json.loads(document["Content"]) if fmt == "JSON" else yaml.safe_load(document["Content"])
        assert parsed == content, name


def test_describe_document_reports_parameters_and_versions(ssm):
    document = ssm.describe_document(Name="AWS-StopEC2InstanceWithApproval")["Document"]
    parameters = {p["Name"]: p for p in document["Parameters"]}
    assert parameters["InstanceId"]["Type"] == "StringList"
    assert "DefaultValue" not in parameters["InstanceId"]  # required
    assert parameters["AutomationAssumeRole"]["DefaultValue"] == ""
    assert document["LatestVersion"] == document["DefaultVersion"] == "1"
    assert document["HashType"] == "Sha256" and len(document["Hash"]) == 64
    own = {p["Name"]: p for p in ssm.describe_document(Name="Delegate-RotateLogs")["Document"]["Parameters"]}
    assert own["RetentionDays"] == {
        "Name": "RetentionDays",
        "Type": "Integer",
        "DefaultValue": "14",
        "Description": "(Optional) How many days of rotated logs to keep.",
    }
    assert own["Compress"]["DefaultValue"] == "true"
    assert own["InstanceIds"]["Type"] == "List<AWS::EC2::Instance::Id>"


def test_owner_filters(ssm, sandbox):
    account = sandbox.state.account_id
    mine = list_all(ssm, Filters=[{"Key": "Owner", "Values": ["Self"]}])
    assert {d["Name"] for d in mine} == {
        "Delegate-RotateLogs",
        "Delegate-PatchWithApproval",
        "Delegate-RestartService",
        "Delegate-LabelFleet",
        "Delegate-StopWindow",  # a ChangeCalendar document
    }
    assert {d["Owner"] for d in mine} == {account}
    runbooks = list_all(ssm, Filters=[{"Key": "Owner", "Values": ["Self"]}, {"Key": "DocumentType", "Values": ["Automation"]}])
    assert "Delegate-StopWindow" not in {d["Name"] for d in runbooks}
    shared = list_all(ssm, Filters=[{"Key": "Owner", "Values": ["Private"]}])
    assert [d["Name"] for d in shared] == [
        "arn:aws:ssm:eu-west-1:210987654321:document/Ops-CollectDiagnostics"
    ]
    assert shared[0]["Owner"] == "210987654321"
    assert list_all(ssm, Filters=[{"Key": "Owner", "Values": ["Public"]}]) == []
    everything = list_all(ssm)
    assert len(everything) == 19 + 3 + 5 + 1  # fixtures, AWS child documents, own (one a calendar), shared
    with pytest.raises(ClientError) as excinfo:
        ssm.list_documents(Filters=[{"Key": "Owner", "Values": ["All"]}])
    assert error_code(excinfo) == "ValidationException"


def test_other_list_filters(ssm):
    by_prefix = list_all(ssm, Filters=[{"Key": "Name", "Values": ["AWS-Stop"]}])
    assert [d["Name"] for d in by_prefix] == ["AWS-StopEC2Instance", "AWS-StopEC2InstanceWithApproval"]
    by_tag = list_all(ssm, Filters=[{"Key": "tag:Team", "Values": ["data"]}])
    assert [d["Name"] for d in by_tag] == ["Delegate-RestartService"]
    automation = list_all(
        ssm, Filters=[{"Key": "DocumentType", "Values": ["Automation"]}, {"Key": "Owner", "Values": ["Self"]}]
    )
    assert len(automation) == 4
    with pytest.raises(ClientError) as excinfo:
        ssm.list_documents(Filters=[{"Key": "Colour", "Values": ["blue"]}])
    assert error_code(excinfo) == "InvalidFilterKey"


def test_list_documents_pagination(ssm):
    first = ssm.list_documents(MaxResults=5)
    assert len(first["DocumentIdentifiers"]) == 5 and first["NextToken"]
    names = [d["Name"] for d in first["DocumentIdentifiers"]]
    token = first["NextToken"]
    while token:
        page = ssm.list_documents(MaxResults=5, NextToken=token)
        names += [d["Name"] for d in page["DocumentIdentifiers"]]
        token = page.get("NextToken")
    assert len(names) == len(set(names)) == 28  # 19 fixtures, 3 AWS child documents, 5 own (one a calendar), 1 shared
    with pytest.raises(ClientError) as excinfo:
        ssm.list_documents(MaxResults=51)
    assert error_code(excinfo) == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        ssm.list_documents(NextToken="not-a-token")
    assert error_code(excinfo) == "InvalidNextToken"


def test_list_document_versions_and_default_version(ssm):
    versions = ssm.list_document_versions(Name="Delegate-RestartService")["DocumentVersions"]
    assert [(v["DocumentVersion"], v["IsDefaultVersion"]) for v in versions] == [
        ("1", False),
        ("2", True),
        ("3", False),
    ]
    paged = ssm.list_document_versions(Name="Delegate-RestartService", MaxResults=2)
    assert len(paged["DocumentVersions"]) == 2 and paged["NextToken"]
    described = ssm.describe_document(Name="Delegate-RestartService")["Document"]
    assert (described["DocumentVersion"], described["DefaultVersion"], described["LatestVersion"]) == (
        "2",
        "2",
        "3",
    )
    latest = ssm.get_document(Name="Delegate-RestartService", DocumentVersion="$LATEST")
    assert latest["DocumentVersion"] == "3" and "BackupInstanceId" in latest["Content"]
    with pytest.raises(ClientError) as excinfo:
        ssm.get_document(Name="Delegate-RestartService", DocumentVersion="9")
    assert error_code(excinfo) == "InvalidDocumentVersion"
    with pytest.raises(ClientError) as excinfo:
        ssm.describe_document(Name="No-Such-Document")
    assert error_code(excinfo) == "InvalidDocument"
    with pytest.raises(ClientError) as excinfo:
        ssm.list_document_versions(Name="No-Such-Document")
    assert error_code(excinfo) == "InvalidDocument"


def test_shared_document_is_addressed_by_arn(ssm):
    arn = "arn:aws:ssm:eu-west-1:210987654321:document/Ops-CollectDiagnostics"
    assert ssm.describe_document(Name=arn)["Document"]["Owner"] == "210987654321"
    assert "aws:executeScript" in ssm.get_document(Name=arn)["Content"]
    with pytest.raises(ClientError) as excinfo:
        ssm.describe_document(Name="Ops-CollectDiagnostics")
    assert error_code(excinfo) == "InvalidDocument"
    # An AWS-owned document may be written as an ARN with an empty account, too.
    assert ssm.describe_document(Name="arn:aws:ssm:eu-west-1::document/AWS-RestartEC2Instance")["Document"]


def test_create_update_and_default_version(ssm):
    content = {
        "schemaVersion": "0.3",
        "parameters": {"Message": {"type": "String", "default": "hi"}},
        "mainSteps": [{"name": "wait", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}],
    }
    created = ssm.create_document(
        Name="Team-Hello",
        DocumentType="Automation",
        Content=json.dumps(content),
        Tags=[{"Key": "Team", "Value": "platform"}],
    )["DocumentDescription"]
    assert (created["Owner"], created["DocumentVersion"], created["Status"]) == (
        "123456789012",
        "1",
        "Active",
    )
    content["description"] = "second"
    updated = ssm.update_document(
        Name="Team-Hello", Content=yaml.safe_dump(content), DocumentFormat="YAML", DocumentVersion="$LATEST"
    )["DocumentDescription"]
    assert (updated["DocumentVersion"], updated["DefaultVersion"], updated["LatestVersion"]) == (
        "2",
        "1",
        "2",
    )
    assert (
        json.loads(ssm.get_document(Name="Team-Hello", DocumentVersion="2", DocumentFormat="JSON")["Content"])
        == content
    )
    with pytest.raises(ClientError) as excinfo:
        ssm.update_document(Name="Team-Hello", Content=yaml.safe_dump(content), DocumentFormat="YAML")
    assert error_code(excinfo) == "DuplicateDocumentContent"
    default = ssm.update_document_default_version(Name="Team-Hello", DocumentVersion="2")["Description"]
    assert default == {"Name": "Team-Hello", "DefaultVersion": "2"}
    with pytest.raises(ClientError) as excinfo:
        ssm.create_document(Name="Team-Hello", DocumentType="Automation", Content=json.dumps(content))
    assert error_code(excinfo) == "DocumentAlreadyExists"
    ssm.delete_document(Name="Team-Hello")
    with pytest.raises(ClientError):
        ssm.describe_document(Name="Team-Hello")


@pytest.mark.parametrize("name", ["AWS-Mine", "aws-mine", "Amazon-Thing", "amzn-x", "AWSSupport-Mine"])
def test_create_document_refuses_reserved_prefixes(ssm, name):
    content = {
        "schemaVersion": "0.3",
        "mainSteps": [{"name": "s", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}],
    }
    with pytest.raises(ClientError) as excinfo:
        ssm.create_document(Name=name, DocumentType="Automation", Content=json.dumps(content))
    assert error_code(excinfo) == "ValidationException"


def test_create_document_checks_content(ssm):
    with pytest.raises(ClientError) as excinfo:
        ssm.create_document(Name="Broken", DocumentType="Automation", Content="{not json")
    assert error_code(excinfo) == "InvalidDocumentContent"
    with pytest.raises(ClientError) as excinfo:
        ssm.create_document(
            Name="Old",
            DocumentType="Automation",
            Content=json.dumps({"schemaVersion": "0.2", "mainSteps": []}),
        )
    assert error_code(excinfo) == "InvalidDocumentSchemaVersion"
    with pytest.raises(ClientError) as excinfo:
        ssm.update_document(Name="AWS-RestartEC2Instance", Content="{}")
    assert error_code(excinfo) == "InvalidDocumentOperation"


def test_documents_are_per_region(client):
    us = client("ssm", region="us-east-1")
    eu = client("ssm", region="eu-west-1")
    content = {
        "schemaVersion": "0.3",
        "mainSteps": [{"name": "s", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}],
    }
    us.create_document(Name="Only-In-Us", DocumentType="Automation", Content=json.dumps(content))
    assert us.describe_document(Name="Only-In-Us")
    with pytest.raises(ClientError):
        eu.describe_document(Name="Only-In-Us")
    # Every region gets the seeded documents, even one the sandbox has not seen before.
    assert client("ssm", region="ap-southeast-2").describe_document(Name="AWS-RestartEC2Instance")


def test_unimplemented_operation_is_an_aws_error_not_a_500(ssm):
    with pytest.raises(ClientError) as excinfo:
        ssm.describe_instance_information()
    assert error_code(excinfo) == "InvalidAction"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
