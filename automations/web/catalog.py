"""The catalog, the generated request form with its preview step, and the resource pickers.

Views fetch through selectors (a runbook not offered to the user's teams is a 404) and hand
every value to services.request_submit, which validates it exactly as it does for the API.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch, Q, prefetch_related_objects
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from automations import policy, selectors, services
from automations.runbooks import identity as run_identity
from automations.runbooks import markdown
from automations.runbooks.start_body import start_body_for, start_body_text
from automations.audit import ClientInfo
from automations.errors import DomainError
from automations.web.forms import (
    PARAM_PREFIX,
    AutomationRequestForm,
    ListParameterField,
    PickerField,
    field_for,
    picker_state,
)
from automations.models import AutomationRequest, RunbookVersion, TeamRunbook
from automations.services.locations import approval_steps
from automations.services.requests import resolve_version, ticket_hint
from automations.web import location_form

# "self" is what SSM calls documents of the account the portal reads, not documents this person owns.
TABS = (("all", "All"), ("self", "Our account's"), ("private", "Shared with us"), ("amazon", "Owned by Amazon"))
_VERSION_CHOICE = re.compile(r"^(default|latest|[1-9][0-9]{0,5})$")


#
# Catalog
#


@login_required
@require_GET
def catalog(request):
    """Runbooks the user's teams may request, console-like: owner tabs, category, text search.

    One compact entry per document (account and name): the regions and teams that offer it are
    a choice on the entry, not one card each.
    """
    offered = selectors.runbook_policies_for(request.user)
    tab = request.GET.get("tab", "all")
    tab = tab if tab in dict(TABS) else "all"
    category = request.GET.get("category", "")[:128]
    query = request.GET.get("q", "").strip()[:100]
    categories = sorted({c for c in offered.values_list("runbook__category", flat=True) if c})
    policies = offered
    if tab != "all":
        policies = policies.filter(runbook__owner_kind=tab)
    if category:
        policies = policies.filter(runbook__category=category)
    if query:
        policies = policies.filter(
            Q(runbook__name__icontains=query)
            | Q(runbook__display_name__icontains=query)
            | Q(runbook__description__icontains=query)
            | Q(runbook__category__icontains=query)
        )
    groups: dict[tuple, list[TeamRunbook]] = {}
    for team_policy in policies.order_by("runbook__name", "runbook__account__name", "runbook__region", "team__name"):
        groups.setdefault((team_policy.runbook.account_id, team_policy.runbook.name), []).append(team_policy)
    page = Paginator(list(groups.values()), 25).get_page(request.GET.get("page"))
    on_page = [team_policy for group in page for team_policy in group]
    prefetch_related_objects(on_page, Prefetch(
        "runbook__versions",
        to_attr="version_rows",
        queryset=RunbookVersion.objects.only(
            "id", "runbook_id", "version", "problems", "parameters", "identity").order_by("-id"),
    ), Prefetch("runbook__role_parameters", to_attr="role_parameter_rows"))  # needs-setup: one query, not one a card
    rows = [_catalog_entry(group) for group in page]
    context = {
        "rows": rows,
        "page": page,
        "tab": tab,
        "tabs": TABS,
        "category": category,
        "categories": categories,
        "query": query,
    }
    template = "automations/_catalog_results.html" if request.htmx else "automations/catalog.html"
    return render(request, template, context)


def _catalog_entry(group: list[TeamRunbook]) -> dict:
    """One document's entry: its first region's runbook stands for it; every region and team is a choice."""
    runbook = group[0].runbook
    regions: dict[int, str] = {}
    for team_policy in group:
        regions.setdefault(team_policy.runbook.pk, team_policy.runbook.region)
    teams = sorted({team_policy.team.name for team_policy in group})
    needs_setup = sorted({problem for team_policy in group for problem in _needs_setup(team_policy)})
    return {
        "runbook": runbook,
        "regions": sorted(regions.items(), key=lambda item: item[1]),
        "teams": teams,
        "needs_setup": needs_setup,
        "approvals": sorted({team_policy.approvals_required for team_policy in group}),
        "excerpt": markdown.excerpt(runbook.description),
    }


@login_required
@require_GET
def request_choose(request):
    """The catalog entry's Request button: the region (runbook id) and team chosen there."""
    runbook_pk, team = request.GET.get("runbook", ""), request.GET.get("team", "")[:150]
    if not runbook_pk.isdigit():
        raise Http404
    team_policy = _policy_for(request.user, int(runbook_pk), team or None)
    return redirect(request_url(team_policy))


def request_url(team_policy: TeamRunbook, **params) -> str:
    """The request page of a team's runbook: the runbook's own id, the team as a query parameter."""
    from urllib.parse import urlencode

    query = urlencode({"team": team_policy.team.name, **params})
    return f"{reverse('automations:request_new', args=[team_policy.runbook_id])}?{query}"


def _needs_setup(team_policy: TeamRunbook) -> list[str]:
    """What an administrator must set up before the version a request resolves to can be requested."""
    runbook = team_policy.runbook
    wanted = {TeamRunbook.VersionChoice.PINNED: team_policy.pinned_version,
              TeamRunbook.VersionChoice.LATEST: runbook.latest_version}.get(team_policy.version_choice,
                                                                           runbook.default_version)
    version = next((v for v in getattr(runbook, "version_rows", []) if v.version == wanted), None)
    if version is None or version.problems:
        return []
    version.runbook = runbook
    if hasattr(runbook, "role_parameter_rows"):  # prefetched by the catalog view
        run_identity.remember_overrides(runbook, runbook.role_parameter_rows)
    return run_identity.setup_problems(version, run_identity.effective_schema(version, team=team_policy.team))


#
# The request form
#


def _policy_for(user, runbook_pk: int, team: str | None = None) -> TeamRunbook:
    """The policy under which `user` requests runbook `runbook_pk`: the team asked for, else the first
    of their teams (by name) that offers it; a runbook or team not offered to them is a 404."""
    offered = selectors.runbook_policies_for(user).filter(runbook_id=runbook_pk)
    if team:
        offered = offered.filter(team__name=team)
    team_policy = offered.order_by("team__name").first()
    if team_policy is None:
        raise Http404
    return team_policy


def _teams_offering(user, runbook_pk: int) -> list[str]:
    return sorted(set(selectors.runbook_policies_for(user).filter(runbook_id=runbook_pk)
                      .values_list("team__name", flat=True)))


def _version_choice(raw: str | None) -> str:
    choice = (raw or "default").strip()
    return choice if _VERSION_CHOICE.match(choice) else "default"



def _versions_offered(team_policy: TeamRunbook) -> list[dict]:
    runbook = team_policy.runbook
    rows = runbook.versions.only("id", "version", "problems").order_by("-id")
    if team_policy.version_choice == TeamRunbook.VersionChoice.PINNED:
        rows = rows.filter(version=team_policy.pinned_version)
    return [
        {
            "number": v.version,
            "default": v.version == runbook.default_version,
            "latest": v.version == runbook.latest_version,
        }
        for v in rows
        if not v.problems
    ]


def _initial_from(original: AutomationRequest, runbook_version: RunbookVersion) -> dict:
    """A re-run starts from the original request's values (roles excluded: the server sets them)."""
    initial: dict = {"justification": original.justification, "alarm_name": original.alarm_name,
                     "ticket_reference": original.ticket_reference}
    for name, values in original.parameters.items():
        spec = runbook_version.parameters.get(name)
        if spec is None or spec.get("server_owned"):
            continue
        field = field_for(name, spec)
        if isinstance(field, PickerField) or getattr(field, "multiple", False):
            initial[PARAM_PREFIX + name] = list(values)
        elif isinstance(field, ListParameterField):
            initial[PARAM_PREFIX + name] = "\n".join(values)
        else:
            initial[PARAM_PREFIX + name] = values[0] if values else ""
    if original.target_parameter_name:
        initial.update(
            mode="rate_control",
            target_parameter_name=original.target_parameter_name,
            target_key="ids",
            target_values="\n".join(v for t in original.targets for v in t.get("Values", [])),
            max_concurrency=original.max_concurrency,
            max_errors=original.max_errors,
        )
    return initial


@login_required
def request_new(request, pk: int):
    """The generated form. POST `preview` shows exactly what will be sent; `submit` then sends it.

    `pk` is the runbook's id, as in the API; `team` (query or form) picks the team to request for."""
    team = (request.POST.get("team") if request.method == "POST" else None) or request.GET.get("team")
    team_policy = _policy_for(request.user, pk, (team or "")[:150] or None)
    runbook = team_policy.runbook
    choice = _version_choice(
        request.POST.get("version") if request.method == "POST" else request.GET.get("version")
    )
    if team_policy.version_choice == TeamRunbook.VersionChoice.LATEST and choice == "default":
        choice = "latest"  # the policy makes "default" mean the latest version; say so
    context = {
        "policy": team_policy,
        "runbook": runbook,
        "teams": _teams_offering(request.user, pk),
        # The same document in the team's other regions: each is its own runbook (id, versions).
        "regions": list(selectors.runbook_policies_for(request.user).filter(
            team=team_policy.team, runbook__account=runbook.account, runbook__name=runbook.name)
            .order_by("runbook__region").values_list("runbook_id", "runbook__region")),
        "versions": _versions_offered(team_policy),
        # Said before anyone asks: a CLOSED change calendar makes an approved request wait.
        "change_calendars": policy.calendars_for(team_policy.team, runbook),
        "version_choice": choice,
        "preview": None,
        "rerun_of": None,
        "amending": None,
    }
    try:
        runbook_version = resolve_version(runbook, team_policy, choice)
    except DomainError as error:
        context.update(version=None, version_error=error.detail)
        return render(
            request,
            "automations/request_new.html",
            context,
            status=404 if not runbook.versions.exists() else 400,
        )
    initial = {"version": choice}
    rerun_pk = request.POST.get("rerun_of") or request.GET.get("rerun")
    if rerun_pk and str(rerun_pk).isdigit():
        context["rerun_of"] = get_object_or_404(selectors.requests_visible_to(request.user), pk=rerun_pk)
        initial.update(_initial_from(context["rerun_of"], runbook_version))
    undo_pk = request.GET.get("undo")
    if undo_pk and str(undo_pk).isdigit():
        # Undoing a failed or cancelled run: the same targets (parameters of the same name) to start from.
        context["undoing"] = get_object_or_404(selectors.requests_visible_to(request.user), pk=undo_pk)
        initial.update({key: value for key, value in _initial_from(context["undoing"], runbook_version).items()
                        if key.startswith(PARAM_PREFIX)})
    amend_pk = request.POST.get("amend") or request.GET.get("amend")
    if amend_pk and str(amend_pk).isdigit():
        context["amending"] = get_object_or_404(selectors.requests_visible_to(request.user), pk=amend_pk,
                                                team=team_policy.team, runbook=runbook)
        initial.update(_initial_from(context["amending"], runbook_version))
    # The form follows the schema as it applies to this team: admin kind overrides, and the team's
    # allowlist as the choices of roles the change acts on (in memory only; never saved).
    runbook_version.parameters = run_identity.effective_schema(runbook_version, team=team_policy.team)
    context["needs_setup"] = run_identity.setup_problems(runbook_version, runbook_version.parameters)
    context["runs_as"] = run_identity.run_as_for(runbook_version, runbook.account)
    context["runs_as_dispatch_session"] = run_identity.runs_as_dispatch_session(runbook_version)
    form = AutomationRequestForm(
        request.POST or None,
        runbook_version=runbook_version,
        initial=initial,
        resources=selectors.inventory_for_pickers(team_policy),
        justification_required=team_policy.justification_required,
        ticket_hint=ticket_hint(team_policy) if team_policy.ticket_pattern else "",
        ticket_pattern=team_policy.ticket_pattern,
    )
    grants = selectors.location_grants_for(team_policy) if not context["needs_setup"] else []
    context["execution_role_name"] = settings.DELEGATE_EXECUTION_ROLE_NAME
    if grants and not approval_steps(runbook_version.steps) \
            and run_identity.version_identity(runbook_version).get("kind") == "absent":
        location_form.add_location_fields(
            form, grants=grants, regions=list(team_policy.allowed_regions) or list(runbook.account.regions or []))
        if request.method == "POST":
            form.full_clean()  # the fields were added after binding
    context.update(
        version=runbook_version, form=form, description=markdown.render(runbook_version.description)
    )
    if request.method == "POST" and form.is_valid():
        arguments = {**form.service_arguments(), **location_form.location_arguments(form)}
        common = {
            "actor": request.user,
            "team": team_policy.team,
            "runbook_id": runbook.pk,
            "client": ClientInfo.from_request(request),
            **arguments,
        }
        try:
            if "submit" in request.POST and context["amending"] is not None:
                amended = services.request_amend(
                    request=context["amending"], expected_fingerprint=form.cleaned_data.get("previewed") or None,
                    **{key: value for key, value in common.items() if key not in ("team", "runbook_id")})
                messages.success(request, f"Request #{amended.pk} amended and sent to the approvers again; "
                                          "earlier approvals were cleared.")
                return redirect(amended)
            if "submit" in request.POST:
                # A submit after a preview must be exactly what the preview showed.
                created = services.request_submit(
                    rerun_of=context["rerun_of"],
                    expected_fingerprint=form.cleaned_data.get("previewed") or None,
                    check_overlap=request.POST.get("confirm_overlap") != "on",
                    **common,
                )
                messages.success(request, f"Request #{created.pk} submitted.")
                return redirect(created)
            context["preview"] = services.request_submit(preview=True, **common)
        except DomainError as error:
            # A refusal for an overlap or a changed preview carries what would be sent now (built once,
            # by the same validation): the requester checks it and submits again.
            context["preview"] = getattr(error, "preview", None)
            if error.code == "overlapping_request":
                context["overlap_refused"] = True  # the preview names them; a checkbox confirms
            else:
                form.add_service_errors(error.errors, parameters=arguments["parameters"])
                if error.errors:
                    context["error_summary"] = error.detail  # per-field messages sit next to their fields
                else:
                    form.add_error(None, error.detail)
        if context["preview"] is not None:
            preview = context["preview"]
            if context["amending"] is not None:  # the request being amended does not overlap itself
                preview.overlapping = [o for o in preview.overlapping if o.pk != context["amending"].pk]
            visible = set(selectors.requests_visible_to(request.user).filter(
                pk__in=[other.pk for other in preview.overlapping]).values_list("pk", flat=True))
            context["overlapping"] = [{"item": other, "visible": other.pk in visible} for other in preview.overlapping]
            context["start_call"] = start_body_text(start_body_for(preview))
    return render(request, "automations/request_new.html", context)


@login_required
@require_GET
def picker(request, pk: int, parameter: str):
    """htmx: a resource picker's options for a search, keeping the ids already checked."""
    team_policy = _policy_for(request.user, pk, request.GET.get("team", "")[:150] or None)
    try:
        runbook_version = resolve_version(
            team_policy.runbook, team_policy, _version_choice(request.GET.get("version"))
        )
    except DomainError:
        raise Http404 from None
    spec = runbook_version.parameters.get(parameter)
    if spec is None or spec.get("server_owned"):
        raise Http404
    field = field_for(parameter, spec)
    if not isinstance(field, PickerField):
        raise Http404
    selected = field.widget.value_from_datadict(request.GET, {}, PARAM_PREFIX + parameter)[:50]
    state = picker_state(field, selected, selectors.inventory_for_pickers(team_policy), request.GET.get("q", "")[:100])
    return render(
        request,
        "automations/_picker_options.html",
        {
            "name": PARAM_PREFIX + parameter,
            "multiple": field.picker.multiple,
            "state": state,
            "required": field.parameter_required,
            "label": parameter,
        },
    )
