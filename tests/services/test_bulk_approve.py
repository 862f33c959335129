"""Bulk approval of identical low-risk requests: each approved, fingerprinted and audited on its own;
the selection refused whole when it is not one identical low-risk group; one refusal reported, never hidden.
Also the escalation reminder the queue shows before a request escalates."""
import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from automations import policy, services
from automations.errors import InvalidRequest
from automations.models import AuditEvent, AutomationRequest, TeamRunbook


@pytest.fixture
def low_risk(world):
    world.platform_policy.risk = TeamRunbook.Risk.LOW
    world.platform_policy.save()
    return world.platform_policy


def _fingerprints(*items):
    return {item.pk: item.fingerprint for item in items}


class TestIdentical:
    def test_only_the_targets_justification_and_requester_may_differ(self, world, submit, low_risk):
        one = submit(parameters={"InstanceId": [world.web1]}, justification="leak")
        two = submit(parameters={"InstanceId": [world.web2]}, justification="other reason", actor=world.frank)
        assert policy.bulk_key(one) is not None and policy.bulk_key(one) == policy.bulk_key(two)
        for change in ({"alarm_name": "cpu-high"}, {"run_at": timezone.now() + dt.timedelta(hours=3)},
                       {"region": "us-east-1"}, {"document_hash": "other"}, {"max_concurrency": "5"},
                       {"parameters": {**two.parameters, "AutomationAssumeRole": ["arn:aws:iam::1:role/x"]}}):
            changed = AutomationRequest.objects.get(pk=two.pk)
            for name, value in change.items():
                setattr(changed, name, value)
            assert policy.bulk_key(changed) != policy.bulk_key(one), change

    def test_standard_risk_or_a_decided_request_is_not_offered(self, world, submit, low_risk):
        item = submit()
        low_risk.risk = TeamRunbook.Risk.STANDARD
        low_risk.save()
        assert policy.bulk_key(AutomationRequest.objects.get(pk=item.pk)) is None
        low_risk.risk = TeamRunbook.Risk.LOW
        low_risk.save()
        approved = services.request_approve(request=AutomationRequest.objects.get(pk=item.pk), actor=world.bob)
        assert policy.bulk_key(approved) is None


class TestBulkApprove:
    def test_each_is_approved_and_audited_on_its_own(self, world, submit, low_risk):
        one = submit(parameters={"InstanceId": [world.web1]})
        two = submit(parameters={"InstanceId": [world.web2]})
        outcomes = services.requests_approve_bulk(requests=[one, two], actor=world.bob, comment="patch night",
                                                  expected_fingerprints=_fingerprints(one, two))
        assert [(o.request_id, o.ok, o.status) for o in outcomes] == [(one.pk, True, "approved"),
                                                                       (two.pk, True, "approved")]
        for item, other in ((one, two), (two, one)):
            added = AuditEvent.objects.get(request_id=item.pk, action="request.approval_added")
            assert added.details["fingerprint"] == item.fingerprint
            assert added.details["bulk_with"] == [other.pk] and added.details["comment"] == "patch night"
            assert AuditEvent.objects.filter(request_id=item.pk, action="request.approved").count() == 1

    def test_self_approval_is_refused_and_reported_while_the_rest_go_through(self, world, submit, low_risk):
        theirs = submit(parameters={"InstanceId": [world.web1]})
        own = submit(parameters={"InstanceId": [world.web2]}, actor=world.bob)
        outcomes = services.requests_approve_bulk(requests=[theirs, own], actor=world.bob,
                                                  expected_fingerprints=_fingerprints(theirs, own))
        assert outcomes[0].ok and outcomes[0].status == "approved"
        assert not outcomes[1].ok and outcomes[1].code and "own" in outcomes[1].detail
        assert AutomationRequest.objects.get(pk=own.pk).status == "submitted"
        assert not own.approvals.exists()

    def test_a_request_changed_since_it_was_shown_is_not_approved(self, world, submit, low_risk):
        one = submit(parameters={"InstanceId": [world.web1]})
        two = submit(parameters={"InstanceId": [world.web2]})
        seen = {**_fingerprints(one, two), two.pk: "0" * 64}
        outcomes = services.requests_approve_bulk(requests=[one, two], actor=world.bob, expected_fingerprints=seen)
        assert outcomes[0].ok and (outcomes[1].ok, outcomes[1].code) == (False, "changed_since_viewed")
        assert AutomationRequest.objects.get(pk=two.pk).status == "submitted"

    @pytest.mark.parametrize("make, code", [
        (lambda world, submit: [submit(parameters={"InstanceId": [world.web1]}),
                                submit(parameters={"InstanceId": [world.web2]}, alarm_name="cpu-high")],
         "bulk_not_identical"),
        (lambda world, submit: [submit()], "bulk_size"),
    ])
    def test_a_selection_that_is_not_one_identical_group_changes_nothing(self, world, submit, low_risk, make, code):
        items = make(world, submit)
        with pytest.raises(InvalidRequest) as refused:
            services.requests_approve_bulk(requests=items, actor=world.bob, expected_fingerprints=_fingerprints(*items))
        assert refused.value.code == code
        assert not AutomationRequest.objects.exclude(status="submitted").exists()
        assert AuditEvent.objects.get(action="approval.refused").details["code"] == code

    def test_standard_risk_requests_are_refused_together(self, world, submit):
        items = [submit(parameters={"InstanceId": [world.web1]}), submit(parameters={"InstanceId": [world.web2]})]
        with pytest.raises(InvalidRequest) as refused:
            services.requests_approve_bulk(requests=items, actor=world.bob, expected_fingerprints=_fingerprints(*items))
        assert refused.value.code == "bulk_not_low_risk"
        assert not AuditEvent.objects.filter(action="request.approval_added").exists()


class TestQueuePage:
    def test_identical_low_risk_requests_are_offered_together_and_each_reported(self, world, submit, low_risk,
                                                                                client):
        one = submit(parameters={"InstanceId": [world.web1]})
        two = submit(parameters={"InstanceId": [world.web2]})
        own = submit(parameters={"InstanceId": [world.web1]}, actor=world.bob)
        client.force_login(world.bob)
        page = client.get("/approvals/").content.decode()
        assert "Approve together:" in page and f'name="fingerprint_{one.pk}" value="{one.fingerprint}"' in page
        assert f'name="requests" value="{own.pk}"' not in page  # never offered their own
        response = client.post("/approvals/bulk/", {
            "requests": [one.pk, two.pk, own.pk, 999999], **{f"fingerprint_{i.pk}": i.fingerprint for i in (one, two, own)}},
            follow=True)
        said = [str(m) for m in response.context["messages"]]
        assert f"#{one.pk} approved." in said and f"#{two.pk} approved." in said
        assert "#999999: not found." in said
        assert any(m.startswith(f"#{own.pk} not approved:") for m in said)
        assert AutomationRequest.objects.get(pk=own.pk).status == "submitted"

    def test_hostile_ids_change_nothing(self, world, submit, low_risk, client):
        one = submit(parameters={"InstanceId": [world.web1]})
        client.force_login(world.bob)
        response = client.post("/approvals/bulk/", {"requests": [str(one.pk), "9" * 30, "x", "١٢"],
                                                    f"fingerprint_{one.pk}": one.fingerprint}, follow=True)
        assert response.status_code == 200
        said = [str(m) for m in response.context["messages"]]
        assert said == ["Nothing was approved: Select between 2 and 50 requests to approve together."]
        assert AutomationRequest.objects.get(pk=one.pk).status == "submitted"

    def test_another_teams_request_is_not_found_and_not_approved(self, world, submit, low_risk, client):
        one = submit(parameters={"InstanceId": [world.web1]})
        two = submit(parameters={"InstanceId": [world.web2]})
        theirs = submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})
        client.force_login(world.bob)
        response = client.post("/approvals/bulk/", {
            "requests": [one.pk, two.pk, theirs.pk], **{f"fingerprint_{i.pk}": i.fingerprint for i in (one, two, theirs)}},
            follow=True)
        said = [str(m) for m in response.context["messages"]]
        assert f"#{theirs.pk}: not found." in said and f"#{one.pk} approved." in said
        assert AutomationRequest.objects.get(pk=theirs.pk).status == "submitted"

    def test_standard_risk_rows_have_no_checkboxes(self, world, submit, client):
        submit(parameters={"InstanceId": [world.web1]})
        submit(parameters={"InstanceId": [world.web2]})
        client.force_login(world.bob)
        assert 'name="requests"' not in client.get("/approvals/").content.decode()

    def test_the_queue_shows_when_a_request_will_escalate(self, world, submit, client):
        group = Group.objects.create(name="platform-managers")
        world.platform_policy.escalation_group = group
        world.platform_policy.escalate_after_hours = 4
        world.platform_policy.save()
        item = submit()
        client.force_login(world.bob)
        page = client.get("/approvals/").content.decode()
        at = item.created_at + dt.timedelta(hours=4)
        assert f"escalates to platform-managers" in page and f"{at:%Y-%m-%d %H:%M} UTC" in page
        assert "reminder</span>" not in page  # four hours left: not yet due
        AutomationRequest.objects.filter(pk=item.pk).update(created_at=timezone.now() - dt.timedelta(hours=3.5))
        assert "reminder</span>" in client.get("/approvals/").content.decode()


class TestApi:
    def test_results_per_request_and_whole_refusals_with_codes(self, world, submit, low_risk):
        from rest_framework.test import APIClient

        one = submit(parameters={"InstanceId": [world.web1]})
        two = submit(parameters={"InstanceId": [world.web2]})
        own = submit(parameters={"InstanceId": [world.web1]}, actor=world.bob)
        api = APIClient()
        api.force_authenticate(world.bob)
        body = {"requests": [{"id": i.pk, "fingerprint": i.fingerprint} for i in (one, two, own)]
                + [{"id": 999999, "fingerprint": "0" * 64}], "comment": "ok"}
        response = api.post("/api/v1/requests/bulk-approve/", body, format="json")
        assert response.status_code == 200, response.json()
        results = {row["id"]: row for row in response.json()["results"]}
        assert results[one.pk]["ok"] and results[one.pk]["status"] == "approved" and results[two.pk]["ok"]
        assert not results[own.pk]["ok"] and results[own.pk]["code"]
        assert results[999999] == {"id": 999999, "ok": False, "status": "", "code": "not_found", "detail": "Not found."}
        alone = api.post("/api/v1/requests/bulk-approve/",
                         {"requests": [{"id": own.pk, "fingerprint": own.fingerprint}]}, format="json")
        assert alone.status_code == 400 and "requests" in alone.json()["errors"]
        unseen = api.post("/api/v1/requests/bulk-approve/", {"requests": [
            {"id": own.pk, "fingerprint": own.fingerprint}, {"id": 999999, "fingerprint": "0" * 64}]}, format="json")
        assert unseen.status_code == 400 and unseen.json()["code"] == "bulk_size"
        strict = api.post("/api/v1/requests/bulk-approve/", {"requests": [], "status": "approved"}, format="json")
        assert strict.status_code == 400


def test_the_queue_says_when_an_approval_is_recorded_but_more_are_needed(world, submit, low_risk, client):
    TeamRunbook.objects.filter(pk=low_risk.pk).update(approvals_required=2)
    one = submit(parameters={"InstanceId": [world.web1]})
    two = submit(parameters={"InstanceId": [world.web2]})
    client.force_login(world.bob)
    response = client.post("/approvals/bulk/", {"requests": [one.pk, two.pk],
                                                **{f"fingerprint_{i.pk}": i.fingerprint for i in (one, two)}},
                           follow=True)
    said = [str(m) for m in response.context["messages"]]
    assert said == [f"#{one.pk}: Approval recorded; more approvals are needed.",
                    f"#{two.pk}: Approval recorded; more approvals are needed."]
