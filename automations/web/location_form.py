"""The request form's multi-account part: the team's granted accounts and OUs, and the Regions.

Offered only for a runbook that can run across accounts (no aws:approve step, no assumeRole)
and a team with grants in the runbook's account; the service checks everything again.
"""
from __future__ import annotations

from django import forms

FIELDS = ("location_targets", "location_regions", "location_max_concurrency", "location_max_errors")


def add_location_fields(form: forms.Form, *, grants, regions: list[str]) -> None:
    form.fields["location_targets"] = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Accounts and OUs (multi-account run)",
        choices=[(g.target_id, f"{g.label} ({g.target_id})" if g.label else g.target_id) for g in grants],
        help_text="Leave empty for a run in this runbook's own account. An OU covers the accounts in it now.")
    form.fields["location_regions"] = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Regions",
        choices=[(region, region) for region in regions])
    form.fields["location_max_concurrency"] = forms.CharField(
        required=False, max_length=7, initial="1", label="Locations at a time",
        help_text="Accounts × Regions running at once: a number (4) or a percentage (25%).")
    form.fields["location_max_errors"] = forms.CharField(
        required=False, max_length=7, initial="0", label="Location error threshold",
        help_text="Stop starting locations after more than this many failed (0 = after the first).")
    form.location_field_names = list(FIELDS)
    form.location_fields = lambda: [form[name] for name in FIELDS]  # the template calls it


def location_arguments(form: forms.Form) -> dict:
    """The service's multi-account arguments; {} when none was chosen (a single-account run)."""
    if not getattr(form, "location_field_names", None):
        return {}
    data = form.cleaned_data
    targets = list(data.get("location_targets") or [])
    if not targets:
        return {}
    return {
        "location_targets": targets,
        "location_regions": list(data.get("location_regions") or []),
        "location_max_concurrency": (data.get("location_max_concurrency") or "").strip(),
        "location_max_errors": (data.get("location_max_errors") or "").strip(),
    }
