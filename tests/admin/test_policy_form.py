"""The admin edits a team's runbook policy as plain fields: lines in, the same JSON out, bad input refused."""
import pytest

from automations.admin.policy_form import TeamRunbookPolicyForm
from automations.models import AuditEvent, TeamRunbook
from tests.factories import TeamRunbookFactory

pytestmark = pytest.mark.django_db


def _post_data(policy: TeamRunbook, **changes) -> dict:
    """What the browser sends back for an unchanged form (each field's rendered value), plus changes."""
    form = TeamRunbookPolicyForm(instance=policy)
    data = {}
    for name, field in form.fields.items():
        value = field.prepare_value(form[name].value())
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    data.update(changes)
    return data


STORED = [
    dict(allowed_regions=["eu-west-1", "eu-central-1"], allowed_account_ids=["111111111111"],
         target_tags={"Environment": ["staging", "dev"], "aws:cloudformation:stack-name": ["web"]},
         target_id_patterns=["^i-0abc", "^i-0def[0-9]+$"], approvals_required=2, max_targets=7,
         request_expiry_hours=12.5, approval_validity_hours=4.0, ticket_pattern="^CHG[0-9]{7}$",
         justification_required=True, one_run_per_target=True),
    dict(approvals_required=1, multi_account_threshold=5, multi_account_approvals=2, multi_target_threshold=10,
         multi_target_approvals=3),
    dict(),  # the defaults: empty lists and map
]


@pytest.mark.parametrize("stored", STORED)
def test_a_stored_policy_loads_into_the_form_and_saves_back_unchanged(stored):
    policy = TeamRunbookFactory(**stored)
    before = TeamRunbook.objects.values().get(pk=policy.pk)
    form = TeamRunbookPolicyForm(data=_post_data(policy), instance=policy)
    assert form.is_valid(), form.errors
    form.save()
    assert TeamRunbook.objects.values().get(pk=policy.pk) == before


def test_lines_become_the_lists_and_map_the_rules_read():
    policy = TeamRunbookFactory()
    form = TeamRunbookPolicyForm(data=_post_data(
        policy, allowed_regions="eu-west-1\n\n eu-central-1 \neu-west-1", allowed_account_ids="123456789012",
        target_tags="Environment = staging, dev\nOwner=web", target_id_patterns="^i-0abc\n"), instance=policy)
    assert form.is_valid(), form.errors
    saved = form.save()
    assert saved.allowed_regions == ["eu-west-1", "eu-central-1"]
    assert saved.allowed_account_ids == ["123456789012"]
    assert saved.target_tags == {"Environment": ["staging", "dev"], "Owner": ["web"]}
    assert saved.target_id_patterns == ["^i-0abc"]


@pytest.mark.parametrize("field, value, words", [
    ("ticket_pattern", "^CHG[0-9{7}$", "Not a valid regular expression"),
    ("target_id_patterns", "^i-0abc\n(unclosed", "Line 2 ((unclosed)"),
    ("approvals_required", "-1", "greater than or equal to 0"),
    ("max_targets", "0", "greater than or equal to 1"),
    ("max_targets", "-5", "greater than or equal to 1"),
    ("escalate_after_hours", "-2", "greater than or equal to 0.05"),
    ("approval_validity_hours", "0", "greater than or equal to 0.05"),
    ("allowed_regions", "eu-west-1\nIreland", "Not a region name: Ireland"),
    ("allowed_account_ids", "12345", "Not a 12-digit account id: 12345"),
    ("target_tags", "Environment staging", "Line 1: write a tag key"),
    ("target_tags", "Env = a\nEnv = b", "already listed"),
])
def test_bad_input_is_refused_with_words_and_changes_nothing(field, value, words):
    policy = TeamRunbookFactory()
    before = TeamRunbook.objects.values().get(pk=policy.pk)
    form = TeamRunbookPolicyForm(data=_post_data(policy, **{field: value}), instance=policy)
    assert not form.is_valid()
    assert any(words in message for message in form.errors[field]), form.errors
    assert TeamRunbook.objects.values().get(pk=policy.pk) == before


def test_a_pattern_too_complex_to_put_in_words_needs_a_hint():
    policy = TeamRunbookFactory()
    form = TeamRunbookPolicyForm(data=_post_data(policy, ticket_pattern="^(?:CHG|INC)\\w+$", ticket_hint=""),
                                 instance=policy)
    assert not form.is_valid()
    assert "Say in words" in form.errors["ticket_hint"][0]


def test_the_admin_page_edits_the_policy_as_fields_and_audits_it(admin_client):
    policy = TeamRunbookFactory(allowed_regions=["eu-west-1"])
    url = f"/admin/automations/teamrunbook/{policy.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert '<textarea name="allowed_regions"' in page and "eu-west-1</textarea>" in page
    data = _post_data(policy, allowed_regions="eu-west-1\neu-central-1", target_tags="Environment = staging")
    data["team"], data["runbook"] = policy.team_id, policy.runbook_id
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    policy.refresh_from_db()
    assert policy.allowed_regions == ["eu-west-1", "eu-central-1"]
    assert policy.target_tags == {"Environment": ["staging"]}
    event = AuditEvent.objects.filter(action="config.changed").latest("sequence")
    assert event.details["after"]["allowed_regions"] == ["eu-west-1", "eu-central-1"]


def test_the_admin_refuses_a_broken_pattern_with_a_message(admin_client):
    policy = TeamRunbookFactory()
    url = f"/admin/automations/teamrunbook/{policy.pk}/change/"
    data = _post_data(policy, ticket_pattern="CHG[")
    data["team"], data["runbook"] = policy.team_id, policy.runbook_id
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "Not a valid regular expression" in response.content.decode()
    policy.refresh_from_db()
    assert policy.ticket_pattern == ""


def test_the_team_runbook_list_shows_the_region(admin_client):
    TeamRunbookFactory(runbook__region="eu-central-1")
    page = admin_client.get("/admin/automations/teamrunbook/").content.decode()
    assert "column-region" in page and "eu-central-1" in page


def test_the_admin_page_sets_more_approvers_above_n_targets_and_accounts(admin_client):
    policy = TeamRunbookFactory(approvals_required=1)
    url = f"/admin/automations/teamrunbook/{policy.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="multi_target_threshold"' in page and 'name="multi_account_threshold"' in page
    data = _post_data(policy, multi_target_threshold="10", multi_target_approvals="2",
                      multi_account_threshold="4", multi_account_approvals="3")
    data["team"], data["runbook"] = policy.team_id, policy.runbook_id
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    policy.refresh_from_db()
    assert (policy.multi_target_threshold, policy.multi_target_approvals) == (10, 2)
    assert (policy.multi_account_threshold, policy.multi_account_approvals) == (4, 3)
    event = AuditEvent.objects.filter(action="config.changed").latest("sequence")
    assert event.details["after"]["multi_target_threshold"] == 10


@pytest.mark.parametrize("changes, field, words", [
    ({"multi_target_threshold": "10", "multi_target_approvals": "0"}, "multi_target_approvals",
     "more than the 1 approval"),
    ({"multi_target_threshold": "10", "multi_target_approvals": "1"}, "multi_target_approvals",
     "more than the 1 approval"),
    ({"multi_target_threshold": "0", "multi_target_approvals": "2"}, "multi_target_threshold",
     "above how many targets"),
    ({"multi_account_threshold": "0", "multi_account_approvals": "2"}, "multi_account_threshold",
     "above how many accounts"),
    ({"multi_target_threshold": "10", "multi_target_approvals": "11"}, "multi_target_approvals",
     "less than or equal to 10"),
])
def test_a_threshold_rule_that_would_change_nothing_is_refused_with_words(changes, field, words):
    policy = TeamRunbookFactory(approvals_required=1)
    form = TeamRunbookPolicyForm(data=_post_data(policy, **changes), instance=policy)
    assert not form.is_valid()
    assert any(words in message for message in form.errors[field]), form.errors
