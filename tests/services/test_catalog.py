"""Catalog sync against the sandbox, the catalog page, and every runbook through the browser form and the API.

Done means (issue 4): every fixture runbook (and the sandbox's own and shared documents) syncs,
renders, accepts a valid submission and rejects invalid ones with the right message, in the
browser and through the API.
"""

import html
import json
import re
import uuid
from pathlib import Path

import boto3
import pytest
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from automations import services
from automations.web.forms import PickerField, field_for
from automations.models import (
    AuditEvent,
    AutomationRequest,
    RoleParameter,
    Runbook,
    RunbookVersion,
    TeamResource,
    TeamRunbook,
)
from sandbox.inventory import seeded_id
from automations.runbooks.identity import effective_schema
from automations.services.catalog import VERSION_GONE
from automations.runbooks.start_body import start_body_for
from tests.runbooks.test_validation import FIXTURE_FILES

REGION = "eu-west-1"
SHARED_ARN = "arn:aws:ssm:eu-west-1:210987654321:document/Ops-CollectDiagnostics"
FIXTURE_NAMES = sorted(
    Path(p).name.rsplit(".", 1)[0].replace("aws-", "AWS-", 1)
    for p in FIXTURE_FILES
    if "/documents/own/" not in p and "/documents/shared/" not in p
)
OWN_NAMES = ["Delegate-LabelFleet", "Delegate-PatchWithApproval", "Delegate-RestartService", "Delegate-RotateLogs"]
EVERY_RUNBOOK = FIXTURE_NAMES + OWN_NAMES + [SHARED_ARN]


def _ssm(sb):
    return boto3.client(
        "ssm",
        region_name=REGION,
        endpoint_url=sb.url,
        aws_access_key_id="AKIDTESTTESTTEST0000",
        aws_secret_access_key="test",
    )


_SYNCED: dict = {}  # the first real sync's rows, replayed by later tests (TestSync covers the sync itself)
_RUNBOOK_FIELDS = (
    "name",
    "display_name",
    "owner",
    "owner_kind",
    "description",
    "category",
    "default_version",
    "latest_version",
    "available",
    "allow_unmanaged_identity",
)
_VERSION_FIELDS = (
    "version",
    "content",
    "document_format",
    "content_hash",
    "ssm_hash",
    "ssm_hash_type",
    "ssm_created",
    "revision",
    "identity",
    "description",
    "parameters",
    "steps",
    "problems",
)


@pytest.fixture
def synced(world, sb):
    """Everything the sandbox lists, with content, offered to platform."""
    if not _SYNCED:
        report = services.runbook_catalog_sync(only_offered=False)
        assert report.errors == []
        # The fleet runbook declares no assumeRole (multi-account runs): an admin allows it, as seed_demo does.
        Runbook.objects.filter(name="Delegate-LabelFleet").update(allow_unmanaged_identity=True)
        for runbook in Runbook.objects.filter(account=world.account, region=REGION, available=True):
            _SYNCED[runbook.name] = (
                {f: getattr(runbook, f) for f in _RUNBOOK_FIELDS},
                [
                    {f: getattr(v, f) for f in _VERSION_FIELDS}
                    for v in sorted(runbook.versions.all(), key=lambda v: int(v.version))
                ],
            )
    else:  # the same rows, without 40 calls to a sandbox shared with the whole test run
        for name, (fields, versions) in _SYNCED.items():
            runbook, _ = Runbook.objects.update_or_create(
                account=world.account, region=REGION, name=name, defaults=fields
            )
            for version in versions:
                RunbookVersion.objects.get_or_create(
                    runbook=runbook, version=version["version"], defaults=version
                )
    policies = {}
    for runbook in Runbook.objects.filter(account=world.account, region=REGION, available=True):
        policies[runbook.name] = TeamRunbook.objects.get_or_create(
            team=world.platform, runbook=runbook, defaults={"justification_required": False})[0]
        # The admin's setup: the bucket and DB instance platform may name (no tags read there),
        # and roles handed to Lambda/CloudFormation, per runbook parameter.
        for kind, identifier in (("bucket", NAMED_VALUES["BucketName"]), ("db_instance", "orders-db")):
            TeamResource.objects.get_or_create(team=world.platform, account=world.account, kind=kind,
                                               identifier=identifier, region=REGION)
        for version in runbook.versions.all():
            for parameter, spec in version.parameters.items():
                if spec.get("role_kind") == "handoff":
                    RoleParameter.objects.get_or_create(runbook=runbook, parameter=parameter, defaults={
                        "value": f"arn:aws:iam::{world.account.account_id}:role/DelegateLambda"})
    return policies


@pytest.fixture
def browser(client, world):
    client.force_login(world.alice)
    return client


@pytest.fixture
def api(world):
    client = APIClient()
    client.force_login(world.alice)
    return client


def ids(world):
    """Resources of platform's scope in the sandbox (and one of data's)."""
    return {
        "instance": world.web1,
        "instance2": world.web2,
        "other_team": world.etl1,
        "volume": seeded_id("vol", REGION, "platform/spare"),
        "snapshot": seeded_id("snap", REGION, "platform/backup"),
        "image": seeded_id("ami", REGION, "platform/golden"),
    }


def platform_stack() -> str:
    """A new CloudFormation stack tagged Team=platform in the sandbox (stacks are scope-checked by tag)."""
    import os

    cfn = boto3.client("cloudformation", region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                       aws_access_key_id="AKIDTESTTESTTEST0000", aws_secret_access_key="test")
    name = f"platform-stack-{uuid.uuid4().hex[:8]}"
    cfn.create_stack(StackName=name, Tags=[{"Key": "Team", "Value": "platform"}],
                     TemplateBody='{"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}')
    return name


# Values a requester would type for parameters whose meaning the schema alone does not give.
NAMED_VALUES = {
    "Device": "/dev/sdf",
    "InstanceType": "t3.large",
    "SourceRegion": "us-east-1",
    "BucketName": "platform-logs",
    "Approvers": ["arn:aws:iam::123456789012:user/bob"],
    "Description": "nightly",
    "SNSTopicArn": "arn:aws:sns:eu-west-1:123456789012:AutomationApprovals",
}


def valid_parameters(world, name: str, schema: dict) -> dict:
    """A valid value for every required parameter of one runbook version."""
    resources = ids(world)
    values = {}
    for parameter, spec in schema.items():
        if spec["server_owned"] or not spec["required"]:
            continue
        multiple = spec["type"] == "StringList" or spec["type"].startswith("List<")
        if parameter in NAMED_VALUES:
            value = NAMED_VALUES[parameter]
        elif parameter == "InstanceId" and "Rds" in name:
            value = "orders-db"  # an RDS instance identifier, not EC2
        elif parameter.endswith("VolumeId"):
            value = resources["volume"]
        elif parameter.endswith("SnapshotId"):
            value = resources["snapshot"]
        elif parameter.endswith(("AmiId", "ImageId")):
            value = resources["image"]
        elif parameter == "StackNameOrId":
            value = platform_stack()  # a stack the run may delete: a fresh one each time
        elif "Instance" in parameter or "Instance" in spec["type"]:
            value = (
                resources["instance2"]
                if parameter.startswith(("Collector", "Backup"))
                else resources["instance"]
            )
        else:
            value = "x"
        values[parameter] = ([value] if not isinstance(value, list) else value) if multiple else value
    return values


def form_data(runbook_version: RunbookVersion, values: dict, **extra) -> dict:
    """The same values as the browser posts them: checked boxes repeat, textareas hold lines."""
    data = {"version": extra.pop("version", "default"), "mode": "simple", **extra}
    for name, value in values.items():
        schema = runbook_version.parameters
        field = field_for(name, schema[name]) if name in schema else None
        if isinstance(field, PickerField) or getattr(field, "multiple", False):
            data[f"param_{name}"] = value if isinstance(value, list) else [value]
        elif isinstance(value, list):
            data[f"param_{name}"] = "\n".join(value)
        elif isinstance(value, dict):
            data[f"param_{name}"] = json.dumps(value)
        else:
            data[f"param_{name}"] = str(value)
    return data


def preview_then_submit(browser, policy, data):
    url = reverse("automations:request_new", args=[policy.runbook_id])
    response = browser.post(url, {**data, "preview": "1"})
    assert response.status_code == 200, _errors(response)
    preview = response.context["preview"]
    assert preview is not None and preview.pk is None
    response = browser.post(url, {**data, "submit": "1", "previewed": preview.fingerprint})
    assert response.status_code == 302, _errors(response)
    return preview, AutomationRequest.objects.get(pk=int(response.url.rstrip("/").rsplit("/", 1)[1]))


def _errors(response):
    form = response.context and response.context.get("form")
    return dict(form.errors) if form is not None else response.content[:500]


#
# Sync
#


class TestSync:
    def test_every_fixture_and_sandbox_document_syncs_with_its_schema(self, world, sb):
        report = services.runbook_catalog_sync(only_offered=False)
        assert report.errors == []
        runbooks = {r.name: r for r in Runbook.objects.filter(account=world.account, region=REGION)}
        assert set(EVERY_RUNBOOK) <= set(runbooks)
        assert len(FIXTURE_NAMES) == 19
        for name in EVERY_RUNBOOK:
            runbook = runbooks[name]
            assert runbook.available and runbook.default_version and runbook.latest_version, name
            assert runbook.category, name
            for version in runbook.versions.all():
                assert version.problems == [] and version.content_hash, (name, version.version)
                assert version.parameters and version.steps, (name, version.version)
        assert {runbooks[n].owner_kind for n in FIXTURE_NAMES} == {"amazon"}
        assert {runbooks[n].owner_kind for n in OWN_NAMES} == {"self"}
        assert runbooks[SHARED_ARN].owner_kind == "private" and runbooks[SHARED_ARN].owner == "210987654321"
        restart = runbooks["Delegate-RestartService"]
        assert sorted(restart.versions.values_list("version", flat=True)) == ["1", "2", "3"]
        assert (restart.default_version, restart.latest_version) == ("2", "3")
        assert "Restart the instances of a service (version 2" in restart.description
        assert runbooks["AWS-EnableS3BucketKeys"].category == "S3"
        event = AuditEvent.objects.filter(action="catalog.synced").latest("sequence")
        assert (
            event.details["new_versions"] == report.new_versions
            and event.details["fetched"] == report.fetched
        )

    def test_resync_fetches_only_what_changed_and_never_deletes(self, world, sb):
        ssm = _ssm(sb)
        name = f"Delegate-Temp-{uuid.uuid4().hex[:8]}"
        content = json.loads(
            Path("sandbox/documents/own/Delegate-RestartService.v1.json").read_text()
        )
        ssm.create_document(
            Name=name, DocumentType="Automation", DocumentFormat="JSON", Content=json.dumps(content)
        )
        try:
            services.runbook_catalog_sync(only_offered=False)
            gets = len(sb.calls.of("GetDocument"))
            again = services.runbook_catalog_sync(only_offered=False)
            assert again.fetched == 0 and again.new_versions == 0
            assert len(sb.calls.of("GetDocument")) == gets  # nothing new, nothing fetched

            content["description"] = "A second version."
            ssm.update_document(
                Name=name, DocumentVersion="$LATEST", DocumentFormat="JSON", Content=json.dumps(content)
            )
            report = services.runbook_catalog_sync(only_offered=False)
            fetched = sb.calls.of("GetDocument")[gets:]
            assert report.fetched == 1 and [
                (c["params"]["Name"], c["params"]["DocumentVersion"]) for c in fetched
            ] == [(name, "2")]
            runbook = Runbook.objects.get(account=world.account, region=REGION, name=name)
            assert (runbook.default_version, runbook.latest_version) == ("1", "2")

            ssm.update_document_default_version(Name=name, DocumentVersion="2")
            ssm.delete_document(Name=name, DocumentVersion="1")
            report = services.runbook_catalog_sync(only_offered=False)
            assert report.fetched == 0
            runbook.refresh_from_db()
            assert runbook.default_version == "2" and runbook.description == "A second version."
            assert VERSION_GONE in runbook.versions.get(version="1").problems  # kept, no longer offered
        finally:
            ssm.delete_document(Name=name)
        policy = TeamRunbook.objects.create(team=world.platform, runbook=runbook, justification_required=False)
        report = services.runbook_catalog_sync(only_offered=False)
        runbook.refresh_from_db()
        assert not runbook.available and report.unavailable == 1 and f"unavailable: {name}" in report.changes
        assert runbook.versions.count() == 2 and TeamRunbook.objects.filter(pk=policy.pk).exists()

    def test_by_default_content_is_fetched_only_for_offered_runbooks(self, world, sb):
        before = len(sb.calls.of("GetDocument"))
        services.runbook_catalog_sync()
        fetched = {c["params"]["Name"] for c in sb.calls.of("GetDocument")[before:]}
        assert fetched <= {"AWS-RestartEC2Instance"}  # the only offered one (v1 already known: none)
        assert not RunbookVersion.objects.filter(runbook__name="Delegate-RotateLogs").exists()
        assert Runbook.objects.filter(name="Delegate-RotateLogs", available=True).exists()

    def test_a_failed_listing_marks_nothing_unavailable(self, world, sb):
        services.runbook_catalog_sync(only_offered=False)
        sb.faults.error_next("ListDocuments", "AccessDeniedException", n=1)
        report = services.runbook_catalog_sync(only_offered=False)
        assert report.errors == [f"{world.account.account_id}/{REGION}: AccessDeniedException"]
        assert not Runbook.objects.filter(available=False).exists()

    def test_command_and_admin_button(self, world, sb, admin_client, capsys):
        call_command("sync_runbooks", "--all-content")
        assert "new versions" in capsys.readouterr().out
        assert RunbookVersion.objects.filter(runbook__name="Delegate-RotateLogs").exists()
        url = reverse("admin:automations_runbook_sync")
        assert admin_client.get(url).status_code == 403  # POST only
        response = admin_client.post(url)
        assert response.status_code == 302 and response.url == reverse("admin:automations_runbook_changelist")
        assert AuditEvent.objects.filter(action="catalog.synced", actor_name="admin").exists()
        assert b"Sync from SSM now" in admin_client.get(response.url).content


#
# The catalog page
#


class TestCatalogPage:
    def test_tabs_search_and_category(self, world, synced, browser):
        url = reverse("automations:catalog")
        page = browser.get(url)
        assert page.status_code == 200
        names = {row["runbook"].name for row in page.context["rows"]}
        assert len(names) == 25 or page.context["page"].paginator.count == len(synced)
        own = {row["runbook"].name for row in browser.get(url, {"tab": "self"}).context["rows"]}
        assert own == set(OWN_NAMES)
        shared = {row["runbook"].name for row in browser.get(url, {"tab": "private"}).context["rows"]}
        assert shared == {SHARED_ARN}
        found = {row["runbook"].name for row in browser.get(url, {"q": "rotate"}).context["rows"]}
        assert found == {"Delegate-RotateLogs"}
        s3 = {row["runbook"].name for row in browser.get(url, {"category": "S3"}).context["rows"]}
        assert s3 == {"AWS-EnableS3BucketKeys"}
        assert "S3" in page.context["categories"]

    def test_description_is_markdown_rendered_safely_and_versions_are_marked(self, world, synced, browser):
        Runbook.objects.filter(name="Delegate-RotateLogs").update(
            description="# Rotate\n\n<script>alert(1)</script>[x](javascript:alert(2)) **bold**"
        )
        # The catalog shows a plain excerpt; the runbook's page renders the whole description.
        catalog = browser.get(reverse("automations:catalog"), {"q": "Delegate-R"}).content.decode()
        assert "<script>alert" not in catalog and "javascript:" not in catalog
        rotate = synced["Delegate-RotateLogs"].runbook
        RunbookVersion.objects.filter(runbook=rotate).update(
            description="# Rotate\n\n<script>alert(1)</script>[x](javascript:alert(2)) **bold**")
        body = browser.get(reverse("automations:runbook_detail", args=[rotate.pk])).content.decode()
        assert "<strong>bold</strong>" in body and "<h3>Rotate</h3>" in body
        assert "<script>alert" not in body and "javascript:" not in body
        restart = synced["Delegate-RestartService"].runbook
        page = browser.get(reverse("automations:runbook_detail", args=[restart.pk])).content.decode()
        versions = page[page.index('id="versions-title"'):]
        assert re.findall(r"<li>v(\d+)( <span class=\"badge badge-(?:default|latest)\">)?", versions)[:3] == [
            ("3", ' <span class="badge badge-latest">'), ("2", ' <span class="badge badge-default">'), ("1", "")]

    def test_htmx_search_returns_the_results_only(self, world, synced, browser):
        response = browser.get(reverse("automations:catalog"), {"q": "snapshot"}, HTTP_HX_REQUEST="true")
        body = response.content.decode()
        assert "<html" not in body and "AWS-CreateSnapshot" in body

    def test_only_my_teams_runbooks_and_never_unavailable_ones(self, world, synced, client):
        client.force_login(world.dave)  # data may run only AWS-RestartEC2Instance
        rows = client.get(reverse("automations:catalog")).context["rows"]
        assert {row["runbook"].name for row in rows} == {"AWS-RestartEC2Instance"}
        Runbook.objects.filter(name="AWS-RestartEC2Instance").update(available=False)
        assert client.get(reverse("automations:catalog")).context["rows"] == []
        other = synced["Delegate-RotateLogs"]
        assert client.get(reverse("automations:request_new", args=[other.runbook_id])).status_code == 404


#
# Every runbook: renders, accepts a valid submission, refuses invalid ones (browser and API)
#


# AWS-CreateManagedInstance asks the user for `RoleName` (the role to create): a role that is the
# subject of the change, so the form shows it as a dropdown of the team's allowlist (issue 12).
@pytest.mark.parametrize("name", EVERY_RUNBOOK)
def test_every_runbook_renders_accepts_and_refuses_in_the_browser(name, world, synced, browser):
    policy = synced[name]
    version = policy.runbook.versions.get(version=policy.runbook.default_version)
    url = reverse("automations:request_new", args=[policy.runbook_id])
    page = browser.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    for parameter, spec in version.parameters.items():
        # A map's editor names its inputs param_<name>__key / __value / __entry (web/map_editors.py).
        shown = any(f'name="param_{parameter}{suffix}"' in body for suffix in ("", "__key", "__entry"))
        assert shown is (not spec["server_owned"]), parameter
    values = valid_parameters(world, name, version.parameters)
    preview, created = preview_then_submit(browser, policy, form_data(version, values))
    assert created.runbook_version == version and created.fingerprint == preview.fingerprint
    assert created.requester == world.alice and created.status == AutomationRequest.Status.SUBMITTED
    if "AutomationAssumeRole" in version.parameters:
        assert created.parameters["AutomationAssumeRole"] == [world.account.automation_role_arn]
    # Invalid: a required parameter left out, named next to its field, in plain words.
    required = next(
        p for p, spec in version.parameters.items() if spec["required"] and not spec["server_owned"]
    )
    response = browser.post(
        url, {**form_data(version, {k: v for k, v in values.items() if k != required}), "preview": "1"}
    )
    assert response.status_code == 200
    assert response.context["form"].errors[f"param_{required}"] == ["This parameter is required."]
    assert "This parameter is required." in response.content.decode()
    assert AutomationRequest.objects.count() == 1


@pytest.mark.parametrize("name", EVERY_RUNBOOK)
def test_every_runbook_accepts_and_refuses_through_the_api(name, world, synced, api):
    runbook = synced[name].runbook
    version = runbook.versions.get(version=runbook.default_version)
    schema = version.parameters
    values = valid_parameters(world, name, schema)
    detail = api.get(f"/api/v1/runbooks/{runbook.pk}/").json()
    # The schema as it applies to the caller's team (a subject role lists the team's allowed roles).
    assert detail["parameters"] == effective_schema(version, team=world.platform)
    assert detail["version"] == runbook.default_version and detail["needs_setup"] == []
    response = api.post("/api/v1/requests/", {"runbook": runbook.pk, "parameters": values}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["document_version"] == runbook.default_version
    response = api.post(
        "/api/v1/requests/", {"runbook": runbook.pk, "parameters": {**values, "Nope": "x"}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert response.json()["errors"]["Nope"] == ["This runbook version has no such parameter."]
    required = next(p for p, spec in schema.items() if spec["required"] and not spec["server_owned"])
    body = api.post(
        "/api/v1/requests/",
        {"runbook": runbook.pk, "parameters": {k: v for k, v in values.items() if k != required}},
        format="json",
    ).json()
    assert body["errors"] == {required: ["This parameter is required."]} and body["detail"]


class TestFormBehaviour:
    def test_ui_and_api_refuse_the_same_input_with_the_same_words(self, world, synced, browser, api):
        policy = synced["Delegate-RotateLogs"]
        version = policy.runbook.versions.get(version="1")
        bad = {
            "InstanceIds": [world.web1],
            "CollectorInstanceId": world.web2,
            "RetentionDays": "8",
            "LogGroup": "Bad Group",
            "Labels": {"n": "1"},
            "Schedule": "[1]",
        }
        via_api = api.post(
            "/api/v1/requests/", {"runbook": policy.runbook.pk, "parameters": bad}, format="json"
        ).json()["errors"]
        response = browser.post(
            reverse("automations:request_new", args=[policy.runbook_id]), {**form_data(version, bad), "preview": "1"}
        )
        via_form = {k.removeprefix("param_"): v for k, v in response.context["form"].errors.items()}
        assert via_api == via_form
        assert set(via_api) == {"RetentionDays", "LogGroup", "Schedule"}

    def test_fields_follow_the_documents_order_after_a_round_trip_through_the_database(
        self, world, synced, browser
    ):
        policy = synced["Delegate-RotateLogs"]
        form = browser.get(reverse("automations:request_new", args=[policy.runbook_id])).context["form"]
        assert form.parameter_names == [
            "InstanceIds",
            "CollectorInstanceId",
            "LogGroup",
            "RetentionDays",
            "Compress",
            "Mode",
            "Paths",
            "Labels",
            "Schedule",
            "Notes",
        ]

    def test_a_role_value_is_refused_and_audited_even_in_a_preview(self, world, synced, browser):
        policy = synced["AWS-CopySnapshot"]
        version = policy.runbook.versions.get()
        data = form_data(version, valid_parameters(world, "AWS-CopySnapshot", version.parameters))
        data["param_LambdaAssumeRole"] = "arn:aws:iam::123456789012:role/Admin"
        response = browser.post(
            reverse("automations:request_new", args=[policy.runbook_id]), {**data, "preview": "1"}
        )
        assert response.status_code == 200 and "chosen by Delegate" in response.content.decode()
        event = AuditEvent.objects.get(action="request.refused")
        assert event.details["code"] == "server_owned_parameter" and event.actor == world.alice
        assert "arn:aws:iam::123456789012:role/Admin" not in json.dumps(event.details)  # no value echoed

    def test_out_of_scope_resource_is_named_next_to_its_field(self, world, synced, browser):
        policy = synced["AWS-RestartEC2Instance"]
        version = policy.runbook.versions.get()
        response = browser.post(
            reverse("automations:request_new", args=[policy.runbook_id]),
            {**form_data(version, {"InstanceId": [world.etl1]}), "preview": "1"},
        )
        assert response.context["form"].errors["param_InstanceId"] == [
            f"{world.etl1} is not in your team's scope (or does not exist here)."
        ]

    def test_submit_is_refused_when_it_differs_from_the_preview_shown(self, world, synced, browser):
        policy = synced["AWS-RestartEC2Instance"]
        version = policy.runbook.versions.get()
        url = reverse("automations:request_new", args=[policy.runbook_id])
        shown = browser.post(url, {**form_data(version, {"InstanceId": [world.web1]}), "preview": "1"})
        changed = form_data(version, {"InstanceId": [world.web2]})
        response = browser.post(
            url, {**changed, "submit": "1", "previewed": shown.context["preview"].fingerprint}
        )
        assert response.status_code == 200 and not AutomationRequest.objects.exists()
        assert "changed since you previewed" in response.content.decode()
        assert response.context["preview"].parameters["InstanceId"] == [world.web2]  # the new preview
        # Without a preview the browser form is a hand-made POST, as the API is: it is judged as it stands.
        response = browser.post(url, {**changed, "submit": "1"})
        assert response.status_code == 302 and AutomationRequest.objects.get().parameters["InstanceId"] == [
            world.web2
        ]

    def test_version_choice_follows_that_versions_schema_and_resolves_at_submit(
        self, world, synced, browser, api
    ):
        policy = synced["Delegate-RestartService"]
        url = reverse("automations:request_new", args=[policy.runbook_id])
        fields = lambda response: set(response.context["form"].parameter_names)  # noqa: E731
        assert fields(browser.get(url)) == {"InstanceIds", "DrainSeconds"}  # default = 2
        assert fields(browser.get(url, {"version": "latest"})) == {
            "InstanceIds",
            "DrainSeconds",
            "BackupInstanceId",
        }
        assert fields(browser.get(url, {"version": "1"})) == {"InstanceIds"}
        latest = policy.runbook.versions.get(version="3")
        _, created = preview_then_submit(
            browser,
            policy,
            form_data(
                latest, {"InstanceIds": [world.web1], "BackupInstanceId": world.web2}, version="latest"
            ),
        )
        assert (created.runbook_version.version, created.version_choice) == ("3", "latest")
        assert browser.get(url, {"version": "9"}).status_code == 400
        policy.version_choice, policy.pinned_version = TeamRunbook.VersionChoice.PINNED, "1"
        policy.save()
        assert fields(browser.get(url)) == {"InstanceIds"}  # pinned to 1
        refused = browser.get(url, {"version": "latest"})
        assert refused.status_code == 400 and "may only run version 1" in refused.content.decode()
        response = api.post(
            "/api/v1/requests/",
            {"runbook": policy.runbook.pk, "version": "3", "parameters": {"InstanceIds": [world.web1]}},
            format="json",
        )
        assert response.status_code == 400 and response.json()["code"] == "version_not_offered"

    def test_a_latest_policy_makes_the_form_follow_the_latest_version(self, world, synced, browser):
        policy = synced["Delegate-RestartService"]
        policy.version_choice = TeamRunbook.VersionChoice.LATEST
        policy.save()
        page = browser.get(reverse("automations:request_new", args=[policy.runbook_id]))
        assert page.context["version"].version == "3" and page.context["version_choice"] == "latest"
        assert "?version=default" not in page.content.decode()

    def test_rate_control_preview_is_exactly_what_the_worker_sends(self, world, synced, browser, sb):
        policy = synced["AWS-RestartEC2Instance"]
        version = policy.runbook.versions.get()
        data = form_data(
            version,
            {"InstanceId": [world.web1, world.web2]},
            mode="rate_control",
            target_parameter_name="InstanceId",
            target_key="ids",
            max_concurrency="1",
            max_errors="0",
            alarm_name="platform-cpu-high",
        )
        preview, created = preview_then_submit(browser, policy, data)
        assert created.targets == [{"Key": "ParameterValues", "Values": [world.web1, world.web2]}]
        assert "InstanceId" not in created.parameters
        services.request_approve(request=created, actor=world.bob)
        services.request_dispatch(request_id=created.pk)
        sent = [
            c
            for c in sb.calls.of("StartAutomationExecution")
            if c["client_token"] == str(created.client_token)
        ]
        assert len(sent) == 1
        params = {k: v for k, v in sent[0]["params"].items() if k not in ("ClientToken", "Tags")}
        assert params == start_body_for(preview)

    @pytest.mark.parametrize("mode", ["simple", "rate_control"])
    def test_the_preview_page_shows_byte_for_byte_the_body_the_worker_sends(self, world, synced, browser, sb, mode):
        # One builder (automations.runbooks.start_body): the JSON text the preview prints is the
        # body the sandbox received for StartAutomationExecution, minus ClientToken and Tags
        # (fixed when the request is saved), to the byte, on SQLite and PostgreSQL alike.
        policy = synced["AWS-RestartEC2Instance"]
        version = policy.runbook.versions.get()
        extra = dict(mode="rate_control", target_parameter_name="InstanceId", target_key="ids",
                     max_concurrency="1", max_errors="0", alarm_name="platform-cpu-high") if mode == "rate_control" else {}
        data = form_data(version, {"InstanceId": [world.web1, world.web2]}, **extra)
        url = reverse("automations:request_new", args=[policy.runbook_id])
        page = browser.post(url, {**data, "preview": "1"})
        assert page.status_code == 200, _errors(page)
        shown = html.unescape(re.search(r'<pre class="call"><code>(.*?)</code></pre>', page.content.decode(), re.S)[1])
        _, created = preview_then_submit(browser, policy, data)
        services.request_approve(request=created, actor=world.bob)
        assert services.request_dispatch(request_id=created.pk) == "started"
        [sent] = [c for c in sb.calls.of("StartAutomationExecution") if c["client_token"] == str(created.client_token)]
        body = {k: v for k, v in sent["params"].items() if k not in ("ClientToken", "Tags")}
        assert shown == json.dumps(body, indent=2, ensure_ascii=False)
        assert json.loads(shown)["DocumentName"] == "AWS-RestartEC2Instance"

    def test_tag_targets_resolve_within_the_team_only(self, world, synced, browser):
        policy = synced["AWS-RestartEC2Instance"]
        version = policy.runbook.versions.get()
        base = dict(
            mode="rate_control",
            target_parameter_name="InstanceId",
            target_key="tag",
            target_tag_key="Name",
            max_concurrency="50%",
            max_errors="1",
        )
        url = reverse("automations:request_new", args=[policy.runbook_id])
        response = browser.post(
            url, {**form_data(version, {}, target_values="web-1\netl-1", **base), "preview": "1"}
        )
        assert response.context["preview"].targets == [{"Key": "ParameterValues", "Values": [world.web1]}]
        response = browser.post(
            url, {**form_data(version, {}, target_values="etl-1", **base), "preview": "1"}
        )
        assert response.context["form"].errors["target_values"] == ["Matches nothing."]
        response = browser.post(
            url,
            {
                **form_data(version, {}, target_values="web-1", **{**base, "max_concurrency": "0"}),
                "preview": "1",
            },
        )
        assert response.context["form"].errors["max_concurrency"]

    def test_picker_searches_the_teams_inventory_and_keeps_the_selection(
        self, world, synced, browser, client
    ):
        policy = synced["Delegate-RotateLogs"]
        url = reverse("automations:picker", args=[policy.runbook_id, "InstanceIds"])
        api1 = seeded_id("i", REGION, "api-1")
        response = browser.get(url, {"q": "web", "param_InstanceIds": [api1]})
        state = response.context["state"]
        assert [item["id"] for item in state["selected"]] == [api1]
        assert {item["id"] for item in state["options"]} == {world.web1, world.web2}
        everything = browser.get(url).context["state"]["options"]
        assert world.etl1 not in {item["id"] for item in everything} and world.bastion not in str(everything)
        assert (
            f'value="{world.web1}"'
            in browser.get(reverse("automations:request_new", args=[policy.runbook_id])).content.decode()
        )
        assert (
            browser.get(reverse("automations:picker", args=[policy.runbook_id, "AutomationAssumeRole"])).status_code
            == 404
        )
        assert browser.get(reverse("automations:picker", args=[policy.runbook_id, "LogGroup"])).status_code == 404
        client.force_login(world.dave)
        assert client.get(url).status_code == 404

    def test_rerun_starts_from_the_original_values(self, world, synced, browser):
        policy = synced["Delegate-RotateLogs"]
        version = policy.runbook.versions.get()
        _, original = preview_then_submit(
            browser,
            policy,
            form_data(
                version,
                {
                    "InstanceIds": [world.web1],
                    "CollectorInstanceId": world.web2,
                    "RetentionDays": "30",
                    "Paths": ["/var/log/a.log", "/var/log/b.log"],
                },
            ),
        )
        form = browser.get(
            reverse("automations:request_new", args=[policy.runbook_id]), {"rerun": original.pk}
        ).context["form"]
        assert form["param_RetentionDays"].value() == "30"
        assert form["param_Paths"].value() == "/var/log/a.log\n/var/log/b.log"
        assert [s["id"] for s in form.fields["param_InstanceIds"].state["selected"]] == [world.web1]
