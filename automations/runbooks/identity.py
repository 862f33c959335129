"""Who a run acts as and which roles it names: the server-owned values of a request.

The document's `assumeRole` decides the identity (runbooks.identity_of): a parameter reference
is filled with the account's automation role, whatever the parameter is called; a literal role
or no assumeRole at all means AWS runs the steps as that role or as the caller (Delegate's
dispatch session), so such a runbook is offered only when an admin allowed it, and pages say so.
Other role-like parameters are handed-off roles (an admin's value per runbook parameter) or the
subject of the change (a choice from the team's allowlist). aws:approve Approvers are filled with
the principal Delegate signals as. See docs/runbooks-and-forms.md.
"""
from __future__ import annotations

import copy

from automations.models import Account, RoleParameter, Runbook, RunbookVersion, Team, TeamRole
from automations.runbooks.documents import RoleKind, UnsupportedRunbook, identity_of, load_document


def version_identity(version: RunbookVersion) -> dict:
    """The stored identity, or parsed from the content for versions synced before it was kept."""
    if version.identity:
        return version.identity
    try:
        return identity_of(load_document(version.content, version.document_format))
    except UnsupportedRunbook:
        return {"kind": "absent"}


def _overrides(runbook: Runbook) -> dict[str, RoleParameter]:
    cached = getattr(runbook, "_role_parameters_cache", None)
    if cached is None:
        cached = {row.parameter: row for row in RoleParameter.objects.filter(runbook=runbook)}
        runbook._role_parameters_cache = cached
    return cached


def remember_overrides(runbook: Runbook, rows) -> None:
    """Hand over role overrides fetched in bulk (the catalog prefetches them for every card)."""
    runbook._role_parameters_cache = {row.parameter: row for row in rows}


def wants_arn(name: str, spec: dict) -> bool:
    """Does this parameter take an ARN (else a bare name)?"""
    kind = str(spec.get("type", ""))
    return kind.endswith("::Arn") or kind.endswith("::Arn>") or name.lower().endswith("arn")


def team_role_choices(team: Team, account: Account, name: str, spec: dict) -> list[tuple[str, str]]:
    """(wire value, label) for each role the team's admins allow for this parameter."""
    rows = TeamRole.objects.filter(team=team, account=account, parameter__in=("", name)).order_by("arn")
    choices = []
    for row in rows:
        value = row.arn if wants_arn(name, spec) else row.name
        label = f"{row.name} ({row.arn})" + (f" — {row.description}" if row.description else "")
        if value not in {c[0] for c in choices}:
            choices.append((value, label))
    return choices


def effective_schema(version: RunbookVersion, *, team: Team | None) -> dict[str, dict]:
    """The version's schema with the admin's kind overrides applied and, for roles that are the
    subject of the change, the team's allowlist as the only allowed values (a copy; never saved)."""
    schema = copy.deepcopy(version.parameters)
    runbook = version.runbook
    overrides = _overrides(runbook)
    identity = version_identity(version)
    for name, spec in schema.items():
        override = overrides.get(name)
        if override is not None and override.kind and not (
            identity.get("kind") == "parameter" and identity.get("parameter") == name
        ):  # the assumeRole parameter is always the automation role: no override moves it
            spec["role_kind"] = override.kind
        spec["server_owned"] = spec.get("role_kind", "") in RoleKind.SERVER_OWNED
        if spec.get("role_kind") == RoleKind.SUBJECT:
            choices = team_role_choices(team, runbook.account, name, spec) if team is not None else []
            spec["role_choices"] = [[value, label] for value, label in choices]
            spec["allowedValues"] = [value for value, _ in choices]
    return schema


def setup_problems(version: RunbookVersion, schema: dict[str, dict]) -> list[str]:
    """Why this runbook cannot be requested yet, naming what an administrator must set up.

    Shown in the catalog as "needs setup" instead of a failure at submit.
    """
    runbook = version.runbook
    problems = []
    identity = version_identity(version)
    if identity.get("kind") == "parameter" and identity.get("parameter") not in schema:
        problems.append(f"assumeRole refers to {identity['parameter']}, which the runbook does not declare")
    if identity.get("kind") in ("literal", "absent") and not runbook.allow_unmanaged_identity:
        problems.append(
            f"assumeRole is {identity.get('role')!r}" if identity.get("kind") == "literal" else "assumeRole is absent")
        problems[-1] += ": it would not run as the account's automation role; an administrator must allow this runbook"
    overrides = _overrides(runbook)
    for name, spec in schema.items():
        kind = spec.get("role_kind", "")
        if kind == RoleKind.HANDOFF and spec.get("required") and not getattr(overrides.get(name), "value", ""):
            problems.append(f"{name}: no role configured for this runbook parameter")
        if kind == RoleKind.SUBJECT and spec.get("required") and not spec.get("allowedValues"):
            problems.append(f"{name}: no role in your team's allowlist")
    return problems


def server_values(version: RunbookVersion, schema: dict[str, dict], account: Account) -> dict[str, list[str]]:
    """The values Delegate fills in for every server-owned parameter (never the requester)."""
    overrides = _overrides(version.runbook)
    values: dict[str, list[str]] = {}
    for name, spec in schema.items():
        kind = spec.get("role_kind", "")
        if kind == RoleKind.AUTOMATION:
            values[name] = [account.automation_role_arn]
        elif kind == RoleKind.HANDOFF and getattr(overrides.get(name), "value", ""):
            values[name] = [overrides[name].value]
        elif kind == RoleKind.APPROVERS:
            # AWS accepts a signal only from a listed principal: the one Delegate signals as.
            values[name] = [account.dispatch_role_arn]
        elif kind == RoleKind.MIN_APPROVALS:
            values[name] = ["1"]  # Delegate counts its own N distinct approvers, then signals once
    return values


def run_as_for(version: RunbookVersion, account: Account) -> str:
    """The role AWS will run the steps as (what every page and the API name)."""
    identity = version_identity(version)
    if identity.get("kind") == "parameter":
        return account.automation_role_arn
    if identity.get("kind") == "literal":
        return identity.get("role", "")
    return account.dispatch_role_arn  # no assumeRole: the caller, i.e. Delegate's dispatch session


def runs_as_dispatch_session(version: RunbookVersion) -> bool:
    return version_identity(version).get("kind") == "absent"


def identity_refusal(request) -> str | None:
    """At dispatch: do the request's identity values still say what the account and document say?"""
    version, account = request.runbook_version, request.account
    identity = version_identity(version)
    if request.run_as != run_as_for(version, account):
        return "The identity the request names is not the one this document runs as."
    if identity.get("kind") == "parameter":
        if request.parameters.get(identity["parameter"]) != [account.automation_role_arn]:
            return f"{identity['parameter']} is not the account's configured automation role."
    elif not request.runbook.allow_unmanaged_identity:
        return "This runbook does not run as the automation role and is not allowed by an administrator."
    return None
