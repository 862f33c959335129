"""Multi-account requests: the team's granted accounts and OUs, checked at submit and dispatch.

The granted targets are resolved to member accounts through AWS Organizations.

A request names granted targets (account ids or OU ids) and Regions; what it resolved to at
submit (`location_accounts`) is part of the fingerprint, so an approver approves exactly those
accounts. At dispatch the grants are read again and the OUs resolved again: a target no longer
granted, or an OU that now covers other accounts than were approved, refuses the dispatch.
"""
from __future__ import annotations

import re

from django.conf import settings

from automations import aws
from automations.errors import DomainError, InvalidRequest, OutOfScope
from automations.models import Account, AutomationRequest, Team, TeamLocationGrant

# TargetLocationMaxConcurrency / TargetLocationMaxErrors (aws-api.md §2).
MAX_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
MAX_ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")

MAX_LOCATION_TARGETS = 50  # TargetLocation.Accounts takes 1-50 entries
MAX_REGIONS = 50


def granted_targets(team: Team, account: Account) -> list[TeamLocationGrant]:
    return list(TeamLocationGrant.objects.filter(team=team, account=account).order_by("target_id"))


def approval_steps(steps: list[dict]) -> list[str]:
    return [step.get("name", "") for step in steps or [] if step.get("action") == "aws:approve"]


def check_submit(*, team: Team, account: Account, runbook_version, targets: list[str], regions: list[str],
                 max_concurrency: str, max_errors: str, allowed_regions: list[str], resources: list[str],
                 identity_kind: str) -> dict[str, list[str]]:
    """Validate a multi-account choice; return {member account: [targets covering it]}.

    Raises InvalidRequest (bad input), OutOfScope (`location_not_granted`) or DomainError
    (`organizations_unavailable`) and changes nothing.
    """
    approvals = approval_steps(runbook_version.steps)
    if approvals:
        raise InvalidRequest(
            f"This runbook has aws:approve steps ({', '.join(approvals)}); AWS does not support aws:approve in "
            "multi-account and multi-Region runs. Run it in one account instead.", code="approve_not_multi_account")
    if identity_kind != "absent":
        # With an assumeRole the children would run as a role named for the central account; without
        # one each runs as the execution role in its own account (docs/multi-account.md).
        raise InvalidRequest("Multi-account runs are offered for runbooks without assumeRole only: each location "
                             "then runs as the execution role in its own account.", code="multi_account_identity")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets) \
            or not 1 <= len(targets) <= MAX_LOCATION_TARGETS or len(set(targets)) != len(targets):
        raise InvalidRequest("Choose 1 to 50 different accounts or OUs.", code="invalid",
                             errors={"location_targets": ["Choose 1 to 50 different accounts or OUs."]})
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions) \
            or not 1 <= len(regions) <= MAX_REGIONS or len(set(regions)) != len(regions):
        raise InvalidRequest("Choose 1 to 50 different Regions.", errors={"location_regions": ["Choose at least one Region."]})
    outside_regions = [r for r in regions if r not in allowed_regions]
    if outside_regions:
        raise OutOfScope(f"Regions not allowed for this runbook: {', '.join(outside_regions)}.",
                         errors={"location_regions": [f"{r} is not allowed." for r in outside_regions]})
    if max_concurrency and not MAX_CONCURRENCY.match(max_concurrency):
        raise InvalidRequest("Concurrency is a number (10) or a percentage (10%).",
                             errors={"location_max_concurrency": ["A number or a percentage, e.g. 4 or 25%."]})
    if max_errors and not MAX_ERRORS.match(max_errors):
        raise InvalidRequest("Error threshold is a number (0) or a percentage (10%).",
                             errors={"location_max_errors": ["A number or a percentage, e.g. 1 or 10%."]})
    if resources:
        # The team's tag scope is checked in the central account's inventory; a multi-account run
        # would act on other accounts' resources with the same ids unchecked. Not offered.
        raise InvalidRequest("A multi-account run cannot name resources; use a runbook that finds its targets "
                             "in each account.", code="multi_account_resources")
    granted = {grant.target_id for grant in granted_targets(team, account)}
    not_granted = [t for t in targets if t not in granted]
    if not_granted:
        raise OutOfScope(f"Not granted to your team: {', '.join(not_granted)}.", code="location_not_granted",
                         errors={"location_targets": [f"{t} is not granted to your team." for t in not_granted]})
    return resolve_sources(account=account, targets=targets)


def resolve(*, account: Account, targets: list[str]) -> list[str]:
    """The member accounts the targets cover now, through AWS Organizations (sorted, unique)."""
    return sorted(resolve_sources(account=account, targets=targets))


def resolve_sources(*, account: Account, targets: list[str]) -> dict[str, list[str]]:
    """{member account: [targets covering it]} through AWS Organizations; refuses an empty result."""
    try:
        covered = aws.member_accounts(target_ids=targets, role_arn=account.dispatch_role_arn,
                                      region=settings.DELEGATE_ORGANIZATIONS_REGION)
    except aws.PermanentAwsError as error:
        raise OutOfScope(f"AWS Organizations does not know one of these targets ({error.code}).",
                         code="location_not_granted", errors={"location_targets": [error.message or error.code]}) from error
    except aws.AwsError as error:
        raise DomainError("AWS Organizations could not be read; try again shortly.",
                          code="organizations_unavailable") from error
    sources: dict[str, list[str]] = {}
    for target, found in covered.items():
        for member in found:
            sources.setdefault(member, []).append(target)
    if not sources:
        raise OutOfScope("The chosen OUs hold no active accounts.", code="location_not_granted",
                         errors={"location_targets": ["No active accounts in these OUs."]})
    return dict(sorted(sources.items()))


def dispatch_refusal(request: AutomationRequest) -> str | None:
    """At dispatch: the grants still hold and the OUs still cover exactly the approved accounts.
    Raises aws.AwsError when Organizations cannot be read (the caller puts the request back)."""
    if not request.is_multi_account:
        return None
    granted = {grant.target_id for grant in granted_targets(request.team, request.account)}
    lost = [t for t in request.location_targets if t not in granted]
    if lost:
        return f"No longer granted to the team: {', '.join(lost)}."
    covered = aws.member_accounts(target_ids=list(request.location_targets), role_arn=request.account.dispatch_role_arn,
                                  region=settings.DELEGATE_ORGANIZATIONS_REGION)
    now = sorted({a for found in covered.values() for a in found})
    if now != sorted(request.location_accounts):
        added = sorted(set(now) - set(request.location_accounts))
        removed = sorted(set(request.location_accounts) - set(now))
        return ("The organization changed since approval: the chosen OUs now cover "
                + (f"also {', '.join(added)}" if added else "")
                + ("; " if added and removed else "")
                + (f"no longer {', '.join(removed)}" if removed else "") + ".")
    return None


def grant_coverage(*, account: Account, target_id: str) -> list[str]:
    """The member accounts a grant would cover now (the admin form shows and checks it);
    raises OutOfScope when Organizations does not know the target."""
    return resolve(account=account, targets=[target_id])
