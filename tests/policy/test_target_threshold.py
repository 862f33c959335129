"""The one approval-count rule (policy.required_approvals) with the targets threshold: a request whose
targets cover more than N resources needs M approvers; a count Delegate cannot know asks for M too.

Plain calls over unsaved requests (the rule reads only what submit recorded on them); no AWS.
"""
import pytest

from automations import policy
from automations.models import AutomationRequest
from tests import factories as f

pytestmark = pytest.mark.django_db


def _preview(**counts) -> dict:
    return {"status": "Success", "figures": {
        "steps": {"Mutating": 1, "NonMutating": 0, "Undetermined": 0}, "regions": ["eu-west-1"], "total_accounts": 1,
        "targets": [{"type": kind.replace("_", "::"), "count": n} for kind, n in counts.items()]}}


def _request(*, resources=(), preview=None, accounts=()) -> AutomationRequest:
    return AutomationRequest(resources=list(resources), execution_preview=preview or {},
                             location_accounts=list(accounts), location_targets=["ou-x"] if accounts else [])


def _policy(**values):
    return f.TeamRunbookFactory(**{"approvals_required": 1, "multi_target_threshold": 10, "multi_target_approvals": 2,
                                   **values})


def ids(n: int) -> list[str]:
    return [f"i-{index:017x}" for index in range(n)]


def test_more_targets_than_the_threshold_need_the_higher_count_and_say_why():
    required = policy.required_approvals(_policy(), _request(resources=ids(12), preview=_preview(AWS_EC2_Instance=12)))
    assert required == 2
    assert required.reasons == ("12 targets is above this policy's 10: 2 approvers.",)


def test_at_the_threshold_the_policys_own_count_applies():
    required = policy.required_approvals(_policy(), _request(resources=ids(10), preview=_preview(AWS_EC2_Instance=10)))
    assert required == 1 and required.reasons == ()


def test_no_threshold_no_rule():
    rule = f.TeamRunbookFactory(approvals_required=1, multi_target_threshold=0, multi_target_approvals=3)
    assert policy.required_approvals(rule, _request(resources=ids(40))) == 1


def test_the_larger_of_aws_preview_and_the_ids_delegate_resolved_counts():
    # AWS's preview counts every target type (instances and the volumes a parameter names).
    required = policy.required_approvals(
        _policy(), _request(resources=ids(4), preview=_preview(AWS_EC2_Instance=4, AWS_EC2_Volume=8)))
    assert required == 2
    assert required.reasons == ("12 targets is above this policy's 10: 2 approvers.",)


def test_without_a_preview_the_resolved_ids_of_a_single_account_request_count():
    assert policy.required_approvals(_policy(), _request(resources=ids(11), preview={"status": "Unavailable"})) == 2
    assert policy.required_approvals(_policy(), _request(resources=ids(3), preview={"status": "Failed"})) == 1


def test_an_unknowable_count_asks_for_the_higher_count_and_says_so():
    # A multi-account run names no resources (each child finds its own) and AWS gave no figures.
    required = policy.required_approvals(_policy(), _request(accounts=["111111111111"], preview={"status": "Unavailable"}))
    assert required == 2
    assert required.reasons == ("The number of targets is not known before the run (AWS's execution preview "
                                "counted none and the request names none), so this policy's rule above 10 "
                                "targets applies: 2 approvers.",)
    # Neither is a preview of zero targets with no resources named a count of zero.
    assert policy.required_approvals(_policy(), _request(preview=_preview())) == 2


def test_accounts_and_targets_rules_together_take_the_larger_and_give_both_reasons():
    rule = _policy(multi_account_threshold=2, multi_account_approvals=3)
    required = policy.required_approvals(rule, _request(accounts=["1", "2", "3"], preview=_preview(AWS_EC2_Instance=24)))
    assert required == 3
    assert required.reasons == ("3 accounts is above this policy's 2: 3 approvers.",
                                "24 targets is above this policy's 10: 2 approvers.")


def test_the_higher_count_never_lowers_the_policys_own():
    rule = _policy(approvals_required=3)
    assert policy.required_approvals(rule, _request(resources=ids(12), preview=_preview(AWS_EC2_Instance=12))) == 3


def test_target_count_reports_what_was_counted():
    assert policy.target_count(_request(resources=ids(2), preview=_preview(AWS_EC2_Instance=5))) == 5
    assert policy.target_count(_request(resources=ids(2))) == 2
    assert policy.target_count(_request(accounts=["1"], preview=_preview(AWS_EC2_Instance=7))) == 7
    assert policy.target_count(_request(accounts=["1"], preview={"status": "Unavailable"})) is None
