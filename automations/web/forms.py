"""The request form, generated from a runbook version's stored parameter schema.

Fields only shape browser input (lines into lists, checkboxes into ids); they validate nothing.
automations.runbooks.validation, called by services.request_submit, judges every value, so the form and
the API accept and refuse exactly the same input with the same messages. Role parameters never
get a field, and a posted value for one is passed on so the service refuses and audits it.
"""

from __future__ import annotations

import datetime as dt

import json
from typing import Callable

from django import forms

from automations.models import RunbookVersion
from automations.runbooks import ordered_parameters, pickers
from automations.web.map_editors import KeyValueWidget, MapListWidget

PARAM_PREFIX = "param_"
OTHER_SUFFIX = "__other"  # free-text values beside a suggesting picker
MODE_SIMPLE, MODE_RATE = "simple", "rate_control"
TARGET_IDS, TARGET_TAG = "ids", "tag"
MAX_PICKED = 50  # SSM takes at most 50 values per parameter
# Resources provider: (kind, query) -> [{"id", "label", "state", "type"}]; raises aws.AwsError.
Resources = Callable[[str, str], list]


def _lines(value) -> list[str]:
    """Textarea text and repeated inputs as one list of non-empty, stripped lines."""
    items = value if isinstance(value, list) else [value]
    return [
        line.strip() for item in items if isinstance(item, str) for line in item.splitlines() if line.strip()
    ]


class ParameterField(forms.Field):
    """Carries one parameter's definition; passes the raw value on for the service to judge."""

    template_kind = "widget"

    def __init__(self, *, parameter: str, spec: dict, **kwargs):
        self.parameter, self.spec = parameter, spec
        self.parameter_required = bool(spec.get("required"))
        kwargs.setdefault("label", parameter)
        kwargs.setdefault("help_text", str(spec.get("description", ""))[:1000])
        super().__init__(required=False, **kwargs)

    def validate(self, value):  # the service validates; see the module docstring
        pass

    def run_validators(self, value):
        pass


class TextParameterField(ParameterField):
    def to_python(self, value):
        return (
            value.strip() if isinstance(value, str) and self.spec.get("displayType") != "textarea" else value
        )


class ListParameterField(ParameterField):
    """StringList without a picker: one value per line."""

    def to_python(self, value):
        return _lines(value)


class ChoiceParameterField(ParameterField):
    """allowedValues and Boolean: a select (checkboxes for a list); any posted value reaches the service."""

    def __init__(self, *, choices, multiple: bool = False, **kwargs):
        widget = forms.CheckboxSelectMultiple(choices=choices) if multiple else forms.Select(choices=choices)
        super().__init__(widget=widget, **kwargs)
        self.multiple = multiple

    def to_python(self, value):
        if self.multiple:
            return [v for v in (value or []) if isinstance(v, str)]
        return value


class PickerWidget(forms.Widget):
    """Checked ids (repeated inputs) plus free-text lines; rendered by _picker.html, not by Django."""

    def value_from_datadict(self, data, files, name):
        return _lines(data.getlist(name) if hasattr(data, "getlist") else data.get(name)) + _lines(
            data.get(name + OTHER_SUFFIX, "")
        )

    def value_omitted_from_data(self, data, files, name):
        return name not in data and name + OTHER_SUFFIX not in data


class PickerField(ParameterField):
    """A resource parameter: searchable choices from the team's inventory (runbooks.pickers.picker_for)."""

    template_kind = "picker"
    widget = PickerWidget

    def __init__(self, *, picker: pickers.Picker, **kwargs):
        super().__init__(**kwargs)
        self.picker = picker
        self.state: dict = {}

    def to_python(self, value):
        values = _lines(value)
        return values if self.picker.multiple else (values[0] if len(values) == 1 else values)


def field_for(name: str, spec: dict) -> ParameterField:
    """One form field for one stored parameter definition."""
    kind = spec["type"]
    default = spec.get("default")
    multiple = kind == "StringList" or kind.startswith("List<")
    common = {"parameter": name, "spec": spec}
    if spec.get("role_kind") == "subject":
        # A role the change acts on: a dropdown of the team's allowlist, never free text.
        choices = [(value, label) for value, label in spec.get("role_choices") or []]
        if not spec.get("required"):
            choices = [("", f"Default ({_text(default)})")] + choices
        return ChoiceParameterField(choices=choices, initial="" if not spec.get("required") else None, **common)
    picker = pickers.picker_for(name, spec)
    if picker:
        initial = (
            [str(v) for v in default] if isinstance(default, list) else ([str(default)] if default else [])
        )
        return PickerField(picker=picker, initial=initial, **common)
    if spec.get("allowedValues"):
        choices = [(value, value) for value in spec["allowedValues"]]
        if multiple:
            initial = [str(v) for v in default] if isinstance(default, list) else default
            return ChoiceParameterField(choices=choices, multiple=True, initial=initial, **common)
        if not spec.get("required"):
            choices = [("", f"Default ({_text(default)})")] + choices
        return ChoiceParameterField(
            choices=choices, initial="" if not spec.get("required") else None, **common
        )
    if kind == "Boolean":
        choices = [("true", "true"), ("false", "false")]
        if not spec.get("required"):
            choices = [("", f"Default ({_text(default)})")] + choices
        return ChoiceParameterField(choices=choices, **common)
    if kind == "Integer":
        return TextParameterField(
            initial=default, widget=forms.NumberInput(attrs={"step": 1, "inputmode": "numeric"}), **common
        )
    if multiple:
        initial = "\n".join(str(v) for v in default) if isinstance(default, list) else default
        return ListParameterField(
            initial=initial,
            widget=forms.Textarea(
                attrs={"rows": 3, "placeholder": "One value per line", "spellcheck": "false"}
            ),
            **common,
        )
    if kind in ("StringMap", "MapList"):
        # Key/value rows for a map, Key=value entries for a list of maps (web/map_editors.py);
        # the raw text they produce is judged by the service like the API's input.
        widget = KeyValueWidget() if kind == "StringMap" else MapListWidget()
        return TextParameterField(initial=default if default not in (None, "") else None, widget=widget, **common)
    if spec.get("displayType") == "textarea":
        return TextParameterField(initial=default, widget=forms.Textarea(attrs={"rows": 4}), **common)
    attrs = {"spellcheck": "false", "autocomplete": "off"} if kind.startswith("AWS::") else {}
    return TextParameterField(initial=default, widget=forms.TextInput(attrs=attrs), **common)


def _text(value) -> str:
    if value in (None, "", [], {}):
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)[:40]


def picker_state(
    field: PickerField, selected: list[str], resources: Resources | None, query: str = ""
) -> dict:
    """What _picker.html shows: the selected ids first (kept across searches), then matches."""
    options, error = [], ""
    if resources is not None:
        try:
            options = resources(field.picker.kind, query)
        except Exception:  # noqa: BLE001 - aws.AwsError or a cache error: show a plain-words fallback
            error = "Your team's inventory could not be loaded just now; type the ids instead."
    known = {option["id"]: option for option in options}
    chosen = [
        known.get(value) or {"id": value, "label": value, "state": "", "type": "", "unlisted": True}
        for value in selected
    ]
    rest = [option for option in options if option["id"] not in set(selected)]
    return {
        "selected": chosen,
        "options": rest,
        "error": error,
        "query": query,
        "kind_label": pickers.KIND_LABELS.get(field.picker.kind, "resources"),
        "free_text": not field.picker.strict or bool(error),
    }


class AutomationRequestForm(forms.Form):
    """Version, parameters, execution mode (simple or rate control), alarm and justification."""

    version = forms.CharField(initial="default", widget=forms.HiddenInput, required=False, max_length=8)
    previewed = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)
    mode = forms.ChoiceField(
        required=False,
        initial=MODE_SIMPLE,
        widget=forms.RadioSelect,
        label="Execution mode",
        choices=[
            (MODE_SIMPLE, "Simple: one run with the parameters above"),
            (MODE_RATE, "Rate control: one run per target, a few at a time"),
        ],
    )
    target_parameter_name = forms.ChoiceField(
        required=False, label="Target parameter", help_text="The parameter each run receives one target in."
    )
    target_key = forms.ChoiceField(
        required=False,
        initial=TARGET_IDS,
        widget=forms.RadioSelect,
        label="Targets",
        choices=[(TARGET_IDS, "Resource ids"), (TARGET_TAG, "Your team's instances with a tag")],
    )
    target_tag_key = forms.CharField(
        required=False, max_length=128, label="Tag key", widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    target_values = forms.CharField(
        required=False,
        label="Target values",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text="Resource ids, or tag values, one per line. For ids, leave empty to use what you picked "
        "in the target parameter above.",
    )
    max_concurrency = forms.CharField(
        required=False,
        max_length=16,
        initial="1",
        label="Concurrency",
        help_text="Targets at a time: a number (5) or a percentage (10%).",
    )
    max_errors = forms.CharField(
        required=False,
        max_length=16,
        initial="0",
        label="Error threshold",
        help_text="Stop after this many failed targets: a number (0 = the first) or a percentage.",
    )
    alarm_name = forms.CharField(
        required=False,
        max_length=300,
        label="CloudWatch alarm (optional)",
        help_text="The run stops if this alarm goes into ALARM.",
    )
    justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,  # the service applies the team's rule (required, ticket pattern) in its own words
        max_length=4000,
        help_text="Why this run is needed; approvers see it.",
    )
    # Shown only when the policy asks for one (TeamRunbook.ticket_pattern); the service judges it.
    ticket_reference = forms.CharField(
        required=False,
        max_length=100,
        label="Ticket reference",
    )
    run_at = forms.DateTimeField(
        required=False,
        label="Run at (UTC, optional)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Times are UTC. Empty: it starts as soon as it is approved. Otherwise it waits for this time "
                  "once approved; an approval stays valid for the hours the policy says, so schedule within them.",
    )

    def __init__(self, *args, runbook_version: RunbookVersion, resources: Resources | None = None,
                 justification_required: bool = False, ticket_hint: str = "", ticket_pattern: str = "",
                 **kwargs):
        super().__init__(*args, **kwargs)
        if ticket_pattern:  # the policy's ticket rule in words (the regex only under "Exact rule")
            field = self.fields["ticket_reference"]
            field.help_text = f"This runbook's policy asks for {ticket_hint or 'a ticket reference'}."
            field.parameter_required = True
            field.spec = {"type": "String", "allowedPattern": ticket_pattern}
        # Marked required (*) when the team's policy requires it; the service still judges the text.
        self.fields["justification"].parameter_required = justification_required
        self.use_required_attribute = False  # the service decides what is missing, with its own words
        self.runbook_version = runbook_version
        self.parameter_names: list[str] = []
        for name, spec in ordered_parameters(
            runbook_version.parameters,
            runbook_version.content or "",
            runbook_version.document_format or "JSON",
        ):
            if spec.get("server_owned"):
                continue
            self.fields[PARAM_PREFIX + name] = field_for(name, spec)
            self.parameter_names.append(name)
        targetable = [
            n
            for n in self.parameter_names
            if runbook_version.parameters[n]["type"] not in ("Boolean", "MapList", "StringMap")
        ]
        self.fields["target_parameter_name"].choices = [("", "—")] + [(n, n) for n in targetable]
        for name in self.parameter_names:
            key, field = PARAM_PREFIX + name, self.fields[PARAM_PREFIX + name]
            if not isinstance(field, PickerField):
                continue
            if self.is_bound:  # checked boxes stay in the list; typed values stay in their textarea
                selected = _lines(
                    self.data.getlist(key) if hasattr(self.data, "getlist") else self.data.get(key)
                )
                other = self.data.get(key + OTHER_SUFFIX, "")
            else:
                selected, other = _lines(self.initial.get(key, field.initial) or []), ""
            field.state = {**picker_state(field, selected[:MAX_PICKED], resources), "other": other}

    def parameter_fields(self):
        return [self[PARAM_PREFIX + name] for name in self.parameter_names]

    def rate_fields(self):
        return [
            self[name]
            for name in (
                "target_parameter_name",
                "target_key",
                "target_tag_key",
                "target_values",
                "max_concurrency",
                "max_errors",
            )
        ]

    def service_arguments(self) -> dict:
        """Cleaned input in the service's shape; blank optional values are left to their defaults."""
        data = self.cleaned_data
        parameters = {}
        for name in self.parameter_names:
            value = data.get(PARAM_PREFIX + name)
            if value not in (None, "", []):
                parameters[name] = value
        # A posted value for a parameter without a field (a role, or a name this version lacks)
        # goes to the service, which refuses it exactly as the API would, and audits roles.
        for key in self.data:
            name = key[len(PARAM_PREFIX) :]
            if (
                key.startswith(PARAM_PREFIX)
                and not key.endswith(OTHER_SUFFIX)
                and name not in self.parameter_names
            ):
                parameters[name[:60]] = self.data.get(key)
        arguments = {
            "version": data.get("version") or "default",
            "parameters": parameters,
            "justification": data.get("justification", ""),
            "ticket_reference": (data.get("ticket_reference") or "").strip(),
            "alarm_name": data.get("alarm_name", "").strip(),
            # The field is labelled UTC: a time typed without a zone is read as UTC, never the server's zone.
            "run_at": (data["run_at"].replace(tzinfo=dt.UTC) if data.get("run_at") and data["run_at"].tzinfo is None
                       else data.get("run_at")),
        }
        if data.get("mode") == MODE_RATE:
            target = data.get("target_parameter_name", "")
            values = _lines(data.get("target_values") or "")
            if data.get("target_key") == TARGET_TAG:
                key = "tag:" + data.get("target_tag_key", "").strip()
            else:
                key = "ParameterValues"
                if not values and target in parameters:
                    picked = parameters.pop(target)
                    values = picked if isinstance(picked, list) else _lines(picked)
            arguments.update(
                target_parameter_name=target,
                targets=[{"Key": key, "Values": values}],
                max_concurrency=data.get("max_concurrency", "").strip(),
                max_errors=data.get("max_errors", "").strip(),
            )
        return arguments

    def add_service_errors(self, errors: dict, *, parameters: dict | None = None) -> None:
        """Show the service's per-field messages next to the right inputs."""
        mapping = {"targets": "target_values", "parameters": None, "version": None, "team": None}
        for name, messages in errors.items():
            messages = messages if isinstance(messages, list) else [messages]
            if name == "resources":
                # Ids the service already reported on a field are not repeated; others are placed here.
                named = " ".join(str(m) for key, found in errors.items() if key != "resources"
                                 for m in (found if isinstance(found, list) else [found]))
                self._add_resource_errors([r for r in messages if str(r) not in named], parameters or {})
                continue
            field = PARAM_PREFIX + name if PARAM_PREFIX + name in self.fields else mapping.get(name, name)
            if field not in self.fields:
                field = None
            for message in messages:
                self.add_error(field, str(message) if field else f"{name}: {message}")

    def _add_resource_errors(self, ids: list, parameters: dict) -> None:
        """Out-of-scope ids are reported on the parameter (or the targets) that holds them."""
        for resource_id in ids:
            message = f"{resource_id} is not in your team's scope (or does not exist here)."
            holder = next(
                (
                    name
                    for name, value in parameters.items()
                    if resource_id in (value if isinstance(value, list) else _lines(value))
                ),
                None,
            )
            if holder and PARAM_PREFIX + holder in self.fields:
                self.add_error(PARAM_PREFIX + holder, message)
            elif self.data.get("mode") == MODE_RATE:
                self.add_error("target_values", message)
            else:
                self.add_error(None, message)


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))
