"""The request form, generated from a runbook version's stored parameter schema.

Fields only shape the input; the service validates it (automations.validation), so the form
and the API accept and refuse exactly the same things. Role parameters never get a field.
"""
from __future__ import annotations

from django import forms

from automations.models import RunbookVersion

PARAM_PREFIX = "param_"


def field_for(name: str, spec: dict) -> forms.Field:
    """One form field for one stored parameter definition."""
    kind = spec["type"]
    default = spec.get("default")
    common = {
        "label": name,
        "help_text": str(spec.get("description", ""))[:1000],
        "required": bool(spec.get("required")),
    }
    if spec.get("allowedValues"):
        choices = [(str(value), str(value)) for value in spec["allowedValues"]]
        if kind == "StringList" or kind.startswith("List<"):
            return forms.MultipleChoiceField(choices=choices, initial=default, widget=forms.CheckboxSelectMultiple,
                                             **common)
        if not common["required"]:
            choices = [("", "— default —")] + choices
        return forms.ChoiceField(choices=choices, initial=default, **common)
    if kind == "Boolean":
        return forms.ChoiceField(choices=[("", "— default —"), ("true", "true"), ("false", "false")],
                                 initial=str(default).lower() if default is not None else "", **common)
    if kind == "Integer":
        return forms.CharField(initial=default, widget=forms.NumberInput(attrs={"step": 1}), **common)
    if kind == "StringList" or kind.startswith("List<"):
        initial = "\n".join(str(v) for v in default) if isinstance(default, list) else default
        return forms.CharField(initial=initial, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "One value per line"}),
                               **common)
    if kind in ("StringMap", "MapList"):
        import json

        initial = json.dumps(default) if default not in (None, "") else ""
        return forms.CharField(initial=initial, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "JSON"}), **common)
    widget = forms.Textarea(attrs={"rows": 4}) if spec.get("displayType") == "textarea" else forms.TextInput
    return forms.CharField(initial=default, widget=widget, max_length=512, strip=False, **common)


class AutomationRequestForm(forms.Form):
    """Version, parameters, rate control, alarm and justification for one runbook."""

    version = forms.CharField(initial="default", widget=forms.HiddenInput)
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=4000,
                                    help_text="Why this run is needed; approvers see it.")
    use_rate_control = forms.BooleanField(required=False, label="Run against targets with rate control")
    target_parameter_name = forms.ChoiceField(required=False, label="Target parameter")
    target_key = forms.ChoiceField(required=False, choices=[("ParameterValues", "Resource ids"),
                                                            ("tag", "Instances with tag")], label="Targets by")
    target_values = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                    help_text="Resource ids, or tag values, one per line.")
    target_tag_key = forms.CharField(required=False, max_length=128, label="Tag key")
    max_concurrency = forms.CharField(required=False, max_length=7, initial="1")
    max_errors = forms.CharField(required=False, max_length=7, initial="0")
    alarm_name = forms.CharField(required=False, max_length=255, label="CloudWatch alarm (optional)")

    def __init__(self, *args, runbook_version: RunbookVersion, **kwargs):
        super().__init__(*args, **kwargs)
        self.runbook_version = runbook_version
        self.parameter_names = []
        for name, spec in runbook_version.parameters.items():
            if spec.get("server_owned"):
                continue
            self.fields[PARAM_PREFIX + name] = field_for(name, spec)
            self.parameter_names.append(name)
        self.fields["target_parameter_name"].choices = [("", "—")] + [(n, n) for n in self.parameter_names]

    def parameter_fields(self):
        return [self[PARAM_PREFIX + name] for name in self.parameter_names]

    def service_arguments(self) -> dict:
        """Cleaned input in the service's shape; blank optional values are left to their defaults."""
        data = self.cleaned_data
        parameters = {}
        for name in self.parameter_names:
            value = data.get(PARAM_PREFIX + name)
            if value in (None, "", []):
                continue
            parameters[name] = value
        arguments = {"version": data.get("version") or "default", "parameters": parameters,
                     "justification": data.get("justification", ""), "alarm_name": data.get("alarm_name", "")}
        if data.get("use_rate_control"):
            values = [v.strip() for v in (data.get("target_values") or "").splitlines() if v.strip()]
            key = "ParameterValues" if data.get("target_key") != "tag" else f"tag:{data.get('target_tag_key', '')}"
            arguments.update(target_parameter_name=data.get("target_parameter_name", ""),
                             targets=[{"Key": key, "Values": values}],
                             max_concurrency=data.get("max_concurrency", ""), max_errors=data.get("max_errors", ""))
        return arguments

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        """Show the service's per-field messages next to the right inputs."""
        for name, messages in errors.items():
            field = PARAM_PREFIX + name if PARAM_PREFIX + name in self.fields else (name if name in self.fields else None)
            for message in messages if isinstance(messages, list) else [messages]:
                if field:
                    self.add_error(field, str(message))
                else:
                    self.add_error(None, f"{name}: {message}")


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))
