"""The admin form for a team's runbook policy: plain fields instead of raw JSON, validated here.

The model keeps its JSON columns (lists and a map); admins edit them as one entry per line,
and this form turns the lines back into exactly what the model stores, so a stored policy
opened and saved unchanged stays unchanged (tests/admin/test_policy_form.py round-trips them).
Every message says what to type, never only "invalid". The model's clean() still runs after
this form (ModelForm validates the instance), so the API-free rules live in one place there.
"""
from __future__ import annotations

import re2
from django import forms

from automations.models import TeamRunbook
from automations.models.policy import ACCOUNT_PATTERN, REGION_PATTERN, id_pattern_problem
from automations.runbooks.pattern_words import describe

MAX_HOURS = 24 * 90
MAX_TICKET_PATTERN_LENGTH = 200


def _lines(text: str) -> list[str]:
    """Non-empty lines, trimmed, in order, duplicates dropped (a duplicate changes no rule)."""
    return list(dict.fromkeys(line.strip() for line in (text or "").splitlines() if line.strip()))


class LinesField(forms.CharField):
    """A list of strings edited one per line; stored as a JSON list."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 40})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(strip=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value):
        if isinstance(value, list):
            return value
        return _lines(super().to_python(value))


class TagRulesField(forms.CharField):
    """{"Environment": ["staging", "dev"]} edited as lines "Environment = staging, dev".

    Tag keys may not contain "=" here (AWS allows it; the line could not say where the key ends)
    and values may not contain "," (AWS does not allow commas in tag values).
    """

    widget = forms.Textarea(attrs={"rows": 3, "cols": 40})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(strip=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{key} = {', '.join(values) if isinstance(values, list) else values}"
                             for key, values in value.items())
        return value

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        rules: dict[str, list[str]] = {}
        for number, line in enumerate((super().to_python(value) or "").splitlines(), start=1):
            if not line.strip():
                continue
            key, separator, values = line.partition("=")
            key = key.strip()
            allowed = list(dict.fromkeys(v.strip() for v in values.split(",") if v.strip()))
            if not separator or not key or not allowed:
                raise forms.ValidationError(
                    f"Line {number}: write a tag key, “=”, and the allowed values separated by commas, "
                    f"e.g. Environment = staging, dev.", code="tag_line")
            if len(key) > 128 or any(len(v) > 256 for v in allowed):
                raise forms.ValidationError(f"Line {number}: tag keys have at most 128 characters, values 256.",
                                            code="tag_length")
            if key in rules:
                raise forms.ValidationError(f"Line {number}: the tag {key} is already listed; put all its values "
                                            f"on one line.", code="tag_twice")
            rules[key] = allowed
        return rules


class TeamRunbookPolicyForm(forms.ModelForm):
    """TeamRunbook in the admin: scope lists as lines, counts and hours bounded, patterns compiled."""

    allowed_regions = LinesField(
        label="Allowed regions",
        help_text="One region per line, e.g. eu-west-1. Empty: the account's regions.")
    allowed_account_ids = LinesField(
        label="Allowed account ids",
        help_text="One 12-digit AWS account id per line. Empty: the team's accounts.")
    target_tags = TagRulesField(
        label="Tags every target must carry",
        help_text="One tag per line: the key, “=”, then the allowed values separated by commas, "
                  "e.g. Environment = staging, dev. Empty: no tag rule (the team's scope tag always applies).")
    target_id_patterns = LinesField(
        label="Target id patterns",
        help_text="One regular expression (RE2) per line, e.g. ^i-0abc; every target id must match one. "
                  "Empty: any id in the team's scope.")
    approvals_required = forms.IntegerField(
        min_value=0, max_value=10, initial=1, label="Approvals required",
        help_text="How many different people must approve. 0 approves automatically (the audit names this policy).")
    max_targets = forms.IntegerField(min_value=1, max_value=500, initial=50, label="Most targets per request")
    multi_account_threshold = forms.IntegerField(
        min_value=0, max_value=10000, initial=0, label="More approvers above this many accounts",
        help_text="A multi-account request covering more member accounts than this needs the approvers below. "
                  "0: no such rule.")
    multi_account_approvals = forms.IntegerField(
        min_value=0, max_value=10, initial=0, label="Approvers above the account threshold",
        help_text="More than “Approvals required”; 0 when there is no account threshold.")
    multi_target_threshold = forms.IntegerField(
        min_value=0, max_value=100000, initial=0, label="More approvers above this many targets",
        help_text="A request whose targets (the ids it names, tag targets resolved at submit, AWS's execution "
                  "preview counts) are more than this needs the approvers below; so does one whose count is not "
                  "known before the run. 0: no such rule.")
    multi_target_approvals = forms.IntegerField(
        min_value=0, max_value=10, initial=0, label="Approvers above the target threshold",
        help_text="More than “Approvals required”; 0 when there is no target threshold.")
    escalate_after_hours = forms.FloatField(
        required=False, min_value=0.05, max_value=MAX_HOURS, label="Escalate after (hours)",
        help_text="Escalate a request still pending after this long; the approval queue shows each "
                  "request's escalation time beforehand. Empty: never.")
    request_expiry_hours = forms.FloatField(
        required=False, min_value=0.05, max_value=MAX_HOURS, label="Request expires after (hours)",
        help_text="A request not approved within this time expires. Empty: the global default.")
    approval_validity_hours = forms.FloatField(
        required=False, min_value=0.05, max_value=MAX_HOURS, label="Approval valid for (hours)",
        help_text="An approval not dispatched within this time (from approval or the run-at time) expires. "
                  "Empty: the global default.")

    class Meta:
        model = TeamRunbook
        fields = "__all__"

    def clean_allowed_regions(self):
        regions = self.cleaned_data["allowed_regions"]
        wrong = [region for region in regions if not REGION_PATTERN.match(region)]
        if wrong:
            raise forms.ValidationError(f"Not a region name: {', '.join(wrong)}. Write one per line, e.g. eu-west-1.",
                                        code="region")
        return regions

    def clean_allowed_account_ids(self):
        accounts = self.cleaned_data["allowed_account_ids"]
        wrong = [account for account in accounts if not ACCOUNT_PATTERN.match(account)]
        if wrong:
            raise forms.ValidationError(f"Not a 12-digit account id: {', '.join(wrong)}.", code="account")
        return accounts

    def clean_target_id_patterns(self):
        patterns = self.cleaned_data["target_id_patterns"]
        for number, pattern in enumerate(patterns, start=1):
            problem = id_pattern_problem(pattern)
            if problem:
                raise forms.ValidationError(f"Line {number} ({pattern}): {problem}.", code="pattern")
        return patterns

    def clean_ticket_pattern(self):
        pattern = self.cleaned_data.get("ticket_pattern", "").strip()
        if not pattern:
            return ""
        if len(pattern) > MAX_TICKET_PATTERN_LENGTH:
            raise forms.ValidationError(f"At most {MAX_TICKET_PATTERN_LENGTH} characters.", code="pattern")
        try:
            re2.compile(pattern)
        except re2.error as error:
            raise forms.ValidationError(f"Not a valid regular expression (RE2): {error}.", code="pattern") from error
        return pattern

    def clean(self):
        cleaned = super().clean()
        pattern, hint = cleaned.get("ticket_pattern"), (cleaned.get("ticket_hint") or "").strip()
        if pattern and not hint and describe(pattern) is None:
            # Requesters never see the regex unless they ask: they need words for it.
            self.add_error("ticket_hint", forms.ValidationError(
                "Say in words what a ticket reference looks like (the pattern is too complex to describe "
                "automatically), e.g. “a change ticket like CHG0001234”.", code="hint"))
        for what in ("account", "target"):
            self._clean_threshold(cleaned, what)
        if cleaned.get("version_choice") == TeamRunbook.VersionChoice.PINNED and not cleaned.get("pinned_version"):
            self.add_error("pinned_version", forms.ValidationError("Name the version to pin.", code="pinned"))
        return cleaned

    def _clean_threshold(self, cleaned: dict, what: str) -> None:
        """A threshold rule must raise the count: both numbers, or neither (0 and 0)."""
        threshold, approvals = cleaned.get(f"multi_{what}_threshold"), cleaned.get(f"multi_{what}_approvals")
        base = cleaned.get("approvals_required")
        if threshold is None or approvals is None or base is None:
            return  # a field error is already shown
        if approvals and not threshold:
            self.add_error(f"multi_{what}_threshold", forms.ValidationError(
                f"Say above how many {what}s the {approvals} approvers are needed (or set the approvers to 0).",
                code="threshold"))
        elif threshold and approvals <= base:
            self.add_error(f"multi_{what}_approvals", forms.ValidationError(
                f"Give more than the {base} approval{'s' if base != 1 else ''} this policy always needs, or set the "
                f"threshold to 0: otherwise the rule changes nothing.", code="threshold"))
