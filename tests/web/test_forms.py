"""automations.web.forms: fields generated from stored schemas; they shape input, the service judges it."""

from pathlib import Path

import json
import pytest
import yaml
from django.http import QueryDict
from django.template.loader import render_to_string

from automations.runbooks import pickers
from automations.runbooks import markdown
from automations.web.forms import (
    AutomationRequestForm,
    ChoiceParameterField,
    ListParameterField,
    PickerField,
    TextParameterField,
    field_for,
    picker_state,
)
from automations.models import RunbookVersion
from tests.runbooks.test_validation import SCHEMAS

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "sandbox/documents/own"
ROTATE = SCHEMAS["Delegate-RotateLogs.yaml"]


def _form(schema, data=None, resources=None, **kwargs):
    version = RunbookVersion(version="1", parameters=schema)  # unsaved: forms read only the schema
    return AutomationRequestForm(
        QueryDict(data, mutable=True) if isinstance(data, str) else data,
        runbook_version=version,
        resources=resources,
        **kwargs,
    )


def _resources(items):
    def resources(kind, query):
        return [i for i in items if query.lower() in i["label"].lower()]

    return resources


WEB = [
    {
        "id": "i-0000000000000000a",
        "label": "web-1 (i-0000000000000000a)",
        "state": "running",
        "type": "t3.medium",
    },
    {
        "id": "i-0000000000000000b",
        "label": "web-2 (i-0000000000000000b)",
        "state": "running",
        "type": "t3.medium",
    },
    {
        "id": "i-0000000000000000c",
        "label": "api-1 (i-0000000000000000c)",
        "state": "stopped",
        "type": "m5.large",
    },
]


class TestFieldFor:
    @pytest.mark.parametrize(
        ("name", "kind"),
        [
            ("InstanceIds", PickerField),
            ("CollectorInstanceId", PickerField),
            ("LogGroup", TextParameterField),
            ("RetentionDays", ChoiceParameterField),
            ("Compress", ChoiceParameterField),
            ("Mode", ChoiceParameterField),
            ("Paths", ListParameterField),
            ("Labels", TextParameterField),
            ("Schedule", TextParameterField),
            ("Notes", TextParameterField),
        ],
    )
    def test_every_type_of_rotate_logs_gets_its_widget(self, name, kind):
        assert type(field_for(name, ROTATE[name])) is kind

    def test_fields_never_validate_themselves(self):
        form = _form(ROTATE, "param_RetentionDays=8&param_LogGroup=" + "x" * 900 + "&param_Compress=maybe")
        assert form.is_valid(), form.errors  # the service refuses these, with the API's words
        assert form.service_arguments()["parameters"] == {
            "RetentionDays": "8",
            "LogGroup": "x" * 900,
            "Compress": "maybe",
        }

    def test_optional_choices_offer_the_default(self):
        field = field_for("Mode", ROTATE["Mode"])
        assert field.widget.choices[0] == ("", "Default (rotate)")
        assert field_for("Compress", ROTATE["Compress"]).widget.choices[0] == ("", "Default (true)")

    def test_fields_follow_the_documents_order_even_without_stored_positions(self):
        content = Path(FIXTURE_DIR / "Delegate-RotateLogs.yaml").read_text()
        legacy = {name: {k: v for k, v in spec.items() if k != "position"} for name, spec in ROTATE.items()}
        version = RunbookVersion(
            version="1", parameters=dict(sorted(legacy.items())), content=content, document_format="YAML"
        )
        expected = [n for n in yaml.safe_load(content)["parameters"] if n != "AutomationAssumeRole"]
        assert AutomationRequestForm(runbook_version=version).parameter_names == expected

    def test_roles_get_no_field(self):
        form = _form(SCHEMAS["aws-CopySnapshot.json"])
        assert "param_LambdaAssumeRole" not in form.fields and "param_AutomationAssumeRole" not in form.fields
        assert form.parameter_names == ["SnapshotId", "SourceRegion", "Description"]


class TestPickers:
    @pytest.mark.parametrize(
        ("name", "spec", "expected"),
        [
            (
                "InstanceIds",
                {"type": "List<AWS::EC2::Instance::Id>"},
                pickers.Picker("instance", True, True),
            ),
            ("Target", {"type": "AWS::EC2::Volume::Id"}, pickers.Picker("volume", True, False)),
            ("InstanceId", {"type": "StringList"}, pickers.Picker("instance", False, True)),
            ("SnapshotId", {"type": "String"}, pickers.Picker("snapshot", False, False)),
            ("AmiId", {"type": "String"}, pickers.Picker("image", False, False)),
            ("InstanceId", {"type": "String", "description": "(Required) ID of the RDS instance"}, None),
            ("InstanceType", {"type": "String"}, None),
            ("BucketName", {"type": "AWS::S3::Bucket::Name"}, None),
            ("InstanceId", {"type": "String", "allowedValues": ["a"]}, None),
        ],
    )
    def test_which_parameters_get_a_picker(self, name, spec, expected):
        assert pickers.picker_for(name, spec) == expected

    def test_selection_is_kept_across_searches(self):
        field = field_for("InstanceIds", ROTATE["InstanceIds"])
        state = picker_state(field, ["i-0000000000000000c"], _resources(WEB), "web")
        assert [s["id"] for s in state["selected"]] == ["i-0000000000000000c"]
        assert [o["id"] for o in state["options"]] == ["i-0000000000000000a", "i-0000000000000000b"]
        assert not state["free_text"]  # a strict AWS:: type: the team's resources only

    def test_unknown_selection_is_marked_and_inventory_failure_falls_back_to_typing(self):
        field = field_for("InstanceIds", ROTATE["InstanceIds"])
        assert picker_state(field, ["i-0ffffffffffffffff"], _resources(WEB))["selected"][0]["unlisted"]

        def broken(kind, query):
            raise RuntimeError("EC2 unreachable")

        state = picker_state(field, [], broken)
        assert state["error"] and state["free_text"] and state["options"] == []

    def test_checked_boxes_and_typed_lines_merge(self):
        form = _form(
            SCHEMAS["aws-RestartEC2Instance.json"],
            "param_InstanceId=i-0000000000000000a&param_InstanceId__other=i-0000000000000000b%0Ai-01234567",
            resources=_resources(WEB),
        )
        assert form.is_valid()
        assert form.service_arguments()["parameters"]["InstanceId"] == [
            "i-0000000000000000a",
            "i-0000000000000000b",
            "i-01234567",
        ]
        state = form.fields["param_InstanceId"].state
        assert [s["id"] for s in state["selected"]] == ["i-0000000000000000a"]
        assert state["other"] == "i-0000000000000000b\ni-01234567"


class TestServiceArguments:
    def test_a_posted_role_or_unknown_parameter_reaches_the_service(self):
        form = _form(
            SCHEMAS["aws-CopySnapshot.json"],
            "param_SnapshotId=snap-01234567&param_LambdaAssumeRole=arn:x&param_Surprise=1",
        )
        assert form.is_valid()
        assert form.service_arguments()["parameters"] == {
            "SnapshotId": "snap-01234567",
            "LambdaAssumeRole": "arn:x",
            "Surprise": "1",
        }

    def test_rate_control_by_ids_uses_the_picked_target_parameter(self):
        form = _form(
            SCHEMAS["aws-RestartEC2Instance.json"],
            "param_InstanceId=i-0000000000000000a&param_InstanceId=i-0000000000000000b&mode=rate_control"
            "&target_parameter_name=InstanceId&target_key=ids&max_concurrency=%201&max_errors=0",
        )
        assert form.is_valid()
        arguments = form.service_arguments()
        assert arguments["parameters"] == {}
        assert arguments["targets"] == [
            {"Key": "ParameterValues", "Values": ["i-0000000000000000a", "i-0000000000000000b"]}
        ]
        assert (arguments["target_parameter_name"], arguments["max_concurrency"]) == ("InstanceId", "1")

    def test_rate_control_by_tag(self):
        form = _form(
            SCHEMAS["aws-RestartEC2Instance.json"],
            "mode=rate_control&target_parameter_name=InstanceId"
            "&target_key=tag&target_tag_key=Role&target_values=web%0Aapi",
        )
        assert form.is_valid()
        assert form.service_arguments()["targets"] == [{"Key": "tag:Role", "Values": ["web", "api"]}]

    def test_simple_mode_sends_no_targets(self):
        form = _form(SCHEMAS["aws-RestartEC2Instance.json"], "mode=simple&target_parameter_name=InstanceId")
        assert form.is_valid() and "targets" not in form.service_arguments()

    def test_only_parameters_that_take_one_resource_can_be_targets(self):
        form = _form(ROTATE)
        choices = [value for value, _ in form.fields["target_parameter_name"].choices]
        assert "InstanceIds" in choices and "Labels" not in choices and "Compress" not in choices

    def test_service_errors_land_next_to_their_fields(self):
        form = _form(
            SCHEMAS["aws-RestartEC2Instance.json"], "param_InstanceId=i-0000000000000000c&mode=simple"
        )
        assert form.is_valid()
        form.add_service_errors(
            {
                "InstanceId": ["This parameter is required."],
                "targets": ["Matches nothing."],
                "resources": ["i-0000000000000000c"],
                "version": ["Unknown version."],
            },
            parameters=form.service_arguments()["parameters"],
        )
        assert form.errors["param_InstanceId"] == [
            "This parameter is required.",
            "i-0000000000000000c is not in your team's scope (or does not exist here).",
        ]
        assert form.errors["target_values"] == ["Matches nothing."]
        assert form.non_field_errors() == ["version: Unknown version."]


class TestRendering:
    def test_fields_are_labelled_described_and_errors_announced(self, rf):
        form = _form(ROTATE, "param_LogGroup=Bad&mode=simple", resources=_resources(WEB))
        form.is_valid()
        form.add_service_errors({"LogGroup": ["Too short: at least 3 characters."]})
        html = "".join(
            render_to_string(
                "automations/_field.html",
                {"field": f, "policy": type("P", (), {"runbook_id": 1, "team": type("T", (), {"name": "platform"})()})(), "version_choice": "default"},
            )
            for f in form.parameter_fields()
        )
        assert '<label for="id_param_LogGroup">LogGroup' in html
        assert (
            'id="id_param_LogGroup_helptext"' in html
            and 'aria-describedby="id_param_LogGroup_helptext' in html
        )
        assert 'role="alert"' in html and "Too short: at least 3 characters." in html
        assert '<legend>InstanceIds <span aria-hidden="true">*</span>' in html  # a picker is a fieldset
        assert 'hx-get="/runbooks/1/pick/InstanceIds/?version=default&amp;team=platform"' in html
        assert "web-1 (i-0000000000000000a)" in html
        assert "<script" not in html and "style=" not in html  # the CSP forbids both inline


class TestMarkdown:
    def test_safe_rendering(self):
        html = str(
            markdown.render(
                "# T\n\n**b** <script>x()</script><img src=x onerror=y()>[l](javascript:z)"
                "[ok](https://example.com)"
            )
        )
        assert "<h3>T</h3>" in html and "<strong>b</strong>" in html
        assert (
            "<script" not in html
            and "onerror" not in html
            and "<img" not in html
            and "javascript:" not in html
        )
        assert '<a href="https://example.com" rel="noopener noreferrer nofollow">ok</a>' in html

    def test_excerpt_is_the_first_paragraph_as_text(self):
        source = (
            "### Document name - X\n\n## What does this do?\nIt **restarts** things &amp; more.\n\nSecond."
        )
        assert markdown.excerpt(source) == "It restarts things & more."
        assert markdown.excerpt("") == ""


class TestStringMapLines:
    """A StringMap is typed as Key=value lines (JSON still works), in the form and the API alike:
    the service reads both, so both accept and refuse the same text."""

    def test_key_value_lines_become_the_map_and_json_still_works(self):
        from automations.runbooks.validation import validate_value
        from automations.web.forms import field_for

        spec = {"type": "StringMap", "required": True}
        field = field_for("Tags", spec)
        text = field.to_python("Environment=prod\n Owner = team-a \n\n")
        assert validate_value("Tags", spec, text) == (['{"Environment":"prod","Owner":"team-a"}'], [])
        assert validate_value("Tags", spec, '{"A": "b"}') == (['{"A":"b"}'], [])
        assert validate_value("Tags", spec, "url=https://x/?a=b") == (['{"url":"https://x/?a=b"}'], [])
        assert validate_value("Tags", spec, "no equals sign")[1] == [
            'Enter one Key=value per line, or a JSON object of text values, e.g. {"Environment": "prod"}.']
        assert validate_value("Tags", spec, "A=1\nA=2")[1] == ["Each key only once: A."]


class TestMapEditors:
    """StringMap as key/value rows and MapList as entries of Key=value lines: plain inputs, no script,
    turned into the text the service judges (so the form and the API refuse alike)."""

    def _bound(self, data, spec):
        from django.http import QueryDict

        from automations.web.forms import field_for

        field = field_for("Tags", spec)
        query = QueryDict(mutable=True)
        for key, values in data.items():
            query.setlist(key, values)
        return field, field.to_python(field.widget.value_from_datadict(query, {}, "param_Tags"))

    def test_key_value_rows_become_the_map(self):
        from automations.runbooks.validation import validate_value

        spec = {"type": "StringMap"}
        _, text = self._bound({"param_Tags__key": ["Environment", " Owner ", "", ""],
                               "param_Tags__value": ["prod", "team-a", "", ""]}, spec)
        assert validate_value("Tags", spec, text) == (['{"Environment":"prod","Owner":"team-a"}'], [])
        _, text = self._bound({"param_Tags__key": ["a=b", "c"], "param_Tags__value": ["1", "2"]}, spec)
        assert validate_value("Tags", spec, text) == (['{"a=b":"1","c":"2"}'], [])  # "=" in a key survives
        _, text = self._bound({"param_Tags__key": ["A", "A"], "param_Tags__value": ["1", "2"]}, spec)
        assert validate_value("Tags", spec, text)[1] == ["Each key only once: A."]
        _, text = self._bound({"param_Tags__key": [""], "param_Tags__value": ["orphan"]}, spec)
        assert validate_value("Tags", spec, text)[0] is None  # a value without a key is refused, not dropped
        _, text = self._bound({"param_Tags": ["X=1"]}, spec)  # raw lines, as older pages and scripts post
        assert validate_value("Tags", spec, text) == (['{"X":"1"}'], [])

    def test_the_editor_shows_the_default_the_wire_value_and_spare_rows(self):
        from automations.web.map_editors import KeyValueWidget, MapListWidget

        html = KeyValueWidget().render("param_Tags", {"Environment": "prod"})
        assert html.count('name="param_Tags__key"') == 3 and 'value="Environment"' in html
        assert 'aria-label="Key 1 of Tags"' in html and 'aria-label="Value 1 of Tags"' in html
        wire = KeyValueWidget().render("param_Tags", ['{"A":"1","B":"2"}'])  # a re-run's stored value
        assert 'value="A"' in wire and 'value="B"' in wire and wire.count('__key"') == 4
        entries = MapListWidget().render("param_Schedule", [{"Day": "Sunday", "Hour": "03"}])
        assert "Day=Sunday\nHour=03</textarea>" in entries and entries.count("<textarea") == 2

    def test_map_list_entries_become_the_list(self):
        from automations.runbooks.validation import validate_value

        spec = {"type": "MapList", "maxItems": 7}
        _, text = self._bound({"param_Tags__entry": ["Day=Sunday\nHour=03", "", '{"Day": "Monday"}']}, spec)
        assert validate_value("Tags", spec, text) == (['[{"Day":"Sunday","Hour":"03"},{"Day":"Monday"}]'], [])
        _, text = self._bound({"param_Tags__entry": ["Day Sunday"]}, spec)
        assert validate_value("Tags", spec, text)[0] is None

    def test_the_rotate_logs_form_posts_rows_and_shows_them_again(self):
        from django.template.loader import render_to_string

        form = _form(ROTATE, "version=default&mode=simple&param_Labels__key=team&param_Labels__value=web"
                             "&param_Labels__key=&param_Labels__value=&param_Schedule__entry=Day%3DMonday%0AHour%3D04")
        assert form.is_valid(), form.errors
        parameters = form.service_arguments()["parameters"]
        assert parameters["Labels"] == "team=web"
        assert json.loads(parameters["Schedule"]) == [{"Day": "Monday", "Hour": "04"}]
        html = render_to_string("automations/_field.html", {"field": form["param_Labels"]})
        assert "<legend>Labels" in html and 'value="team"' in html and html.count("__key") == 3
        html = render_to_string("automations/_field.html", {"field": form["param_Schedule"]})
        assert "<legend>Schedule" in html and "Day=Monday\nHour=04</textarea>" in html
