"""automations.runbooks.validation: the one validator behind the form and the API.

Property tests (Hypothesis) cover the fixture runbooks' real patterns and schemas; the ReDoS
tests time a catastrophic-backtracking pattern against both engines.
"""

import glob
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from automations.runbooks import validation
from automations.errors import InvalidRequest, ServerOwnedParameter
from automations.runbooks import UnsupportedRunbook, load_document, parse_parameters
from automations.runbooks.validation import (
    MAX_CONCURRENCY,
    MAX_ERRORS,
    clamp_repetitions,
    matches_pattern,
    validate_alarm_name,
    validate_parameters,
    validate_target_values,
    validate_value,
)

ROOT = Path(__file__).resolve().parents[2]
# The shared fixtures live next to the main checkout (../shared); a git worktree sits deeper.
SHARED_FIXTURES = next((parent / "shared" / "fixtures" / "runbooks" for parent in ROOT.parents
                        if (parent / "shared" / "fixtures" / "runbooks").is_dir()),
                       ROOT.parent / "shared" / "fixtures" / "runbooks")
FIXTURE_FILES = (
    sorted(
        [p for p in glob.glob(str(SHARED_FIXTURES / "*.*")) if not p.endswith(".md")]
        or glob.glob(str(ROOT / "sandbox/documents/amazon/*.*"))
    )
    # .ics files are ChangeCalendar documents (iCalendar), not runbooks.
    + sorted(p for p in glob.glob(str(ROOT / "sandbox/documents/own/*.*")) if not p.endswith(".ics"))
    + sorted(glob.glob(str(ROOT / "sandbox/documents/shared/*.*")))
)


def _document(path: str) -> dict:
    text = Path(path).read_text()
    return load_document(text, "JSON" if path.endswith(".json") else "YAML")


def _is_runbook(path: str) -> bool:
    try:
        _document(path)
    except UnsupportedRunbook:
        return False
    return True


# Three of the shared fixtures (aws-CreateManaged*Instance*) are AWS's parameter sidecar files,
# not runbooks: no schemaVersion, no mainSteps. They must be refused plainly, never offered.
NOT_RUNBOOK_FILES = [p for p in FIXTURE_FILES if not _is_runbook(p)]
FIXTURE_FILES = [p for p in FIXTURE_FILES if p not in NOT_RUNBOOK_FILES]
SCHEMAS = {Path(p).name: parse_parameters(_document(p)) for p in FIXTURE_FILES}
# Every allowedPattern in the fixture runbooks, with the parameter's maxChars (or SSM's 512).
FIXTURE_PATTERNS = sorted(
    {
        (spec["allowedPattern"], int(spec.get("maxChars", 512)))
        for schema in SCHEMAS.values()
        for spec in schema.values()
        if "allowedPattern" in spec
    }
)
# Patterns AWS runbooks commonly use besides the fixtures'.
COMMON_PATTERNS = [
    (r"^i-[a-z0-9]{8,17}$", 512),
    (r"^arn:aws[a-z0-9-]*:sns:[a-z0-9-]+:\d{12}:[\w-]+$", 512),
    (r"^[a-zA-Z0-9_\-.]{3,128}$", 512),
    (
        r"^(([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])\.){3}([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])$",
        512,
    ),
]
PATTERNS = FIXTURE_PATTERNS + COMMON_PATTERNS
HYPOTHESIS = settings(
    max_examples=60,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def test_the_fixture_runbooks_are_all_here():
    assert len(FIXTURE_FILES) >= 13 + 3
    shared = [p for p in FIXTURE_FILES + NOT_RUNBOOK_FILES if str(SHARED_FIXTURES) in p]
    assert not shared or len(shared) == len(glob.glob(str(SHARED_FIXTURES / "*.*"))) - 1  # all but README


@pytest.mark.parametrize("path", NOT_RUNBOOK_FILES, ids=[Path(p).name for p in NOT_RUNBOOK_FILES])
def test_a_file_that_is_not_a_runbook_is_refused_plainly(path):
    with pytest.raises(UnsupportedRunbook, match="schemaVersion 0.3"):
        _document(path)
    assert FIXTURE_PATTERNS, "the fixtures carry allowedPatterns (KmsKeyId, InstanceIds, LogGroup)"


#
# Patterns: generated matches are accepted, everything else is refused cleanly
#


@pytest.mark.parametrize(("pattern", "max_chars"), PATTERNS, ids=[p[:30] for p, _ in PATTERNS])
@HYPOTHESIS
@given(data=st.data())
def test_values_generated_from_the_pattern_are_accepted(pattern, max_chars, data):
    # ASCII semantics: RE2 (like Java) reads \d and \w as ASCII; Python's unicode \d is wider.
    value = data.draw(st.from_regex(re.compile(pattern, re.ASCII), fullmatch=True))
    # Control characters and over-long values are refused on purpose, whatever the pattern says.
    assume(len(value) <= min(max_chars, validation.MAX_VALUE_CHARS) and not _CONTROL.search(value))
    spec = {"type": "String", "required": False, "allowedPattern": pattern, "maxChars": max_chars}
    assert matches_pattern(pattern, value)
    # An empty value is "not given" (SSM refuses empty strings); the default applies.
    assert validate_value("P", spec, value) == (([value], []) if value else (None, []))


@pytest.mark.parametrize(("pattern", "max_chars"), PATTERNS, ids=[p[:30] for p, _ in PATTERNS])
@HYPOTHESIS
@given(value=st.text(max_size=80) | st.text(alphabet="ai-0123456789abcdef:/.mrkl", max_size=40))
def test_re2_agrees_with_python_re_on_the_fixture_patterns(pattern, max_chars, value):
    """Differential: RE2 (clamped counts included) and Python's re accept the same values."""
    expected = re.fullmatch(pattern, value, re.ASCII) is not None
    assert matches_pattern(pattern, value) is expected


@HYPOTHESIS
@given(
    name=st.sampled_from(sorted(SCHEMAS)),
    raw=st.dictionaries(
        st.text(max_size=20)
        | st.sampled_from(
            [
                "InstanceId",
                "InstanceIds",
                "AutomationAssumeRole",
                "Labels",
                "Schedule",
                "RetentionDays",
                "Compress",
                "Paths",
                "KmsKeyId",
            ]
        ),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=True)
        | st.text(max_size=600)
        | st.lists(st.text(max_size=30) | st.integers(), max_size=60)
        | st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=4),
        max_size=6,
    ),
)
def test_arbitrary_input_is_accepted_or_refused_with_our_error_only(name, raw):
    schema = SCHEMAS[name]
    try:
        wire = validate_parameters(schema, raw)
    except InvalidRequest as error:  # ServerOwnedParameter is one too
        assert error.errors and all(isinstance(m, list) and m for m in error.errors.values())
        return
    # Accepted: SSM's wire shape, within SSM's limits, no role, nothing unknown.
    for key, values in wire.items():
        assert key in schema and not schema[key]["server_owned"]
        assert isinstance(values, list) and 1 <= len(values) <= 50
        assert all(isinstance(v, str) and 1 <= len(v) <= 512 for v in values)


@HYPOTHESIS
@given(st.text(max_size=600))
def test_any_text_for_any_fixture_parameter_never_raises_anything_else(text):
    for schema in SCHEMAS.values():
        for name, spec in schema.items():
            value, errors = validate_value(name, spec, text)
            assert (value is None) or (not errors and all(isinstance(v, str) for v in value))


#
# ReDoS: length first, then a linear engine or a hard timeout
#


class TestCatastrophicPatterns:
    # Wall-clock claims (RE2 answers in microseconds, Python's re takes exponential time, the
    # fallback stops at its timeout) are measured by bench/validation.py; these tests check which
    # path answered, which does not depend on how busy the machine is.

    def test_nested_quantifier_is_answered_by_re2_not_by_a_timeout(self):
        spec = {"type": "String", "required": True, "allowedPattern": "^(a+)+$"}
        assert validation.pattern_engine("^(a+)+$") == "re2"
        # 2**500 paths for a backtracking engine: only a linear engine can say "no" rather than
        # "not in time" (the fallback's answer) or hang (Python's re; pytest-timeout stops that).
        value, errors = validate_value("P", spec, "a" * 500 + "!")
        assert value is None and errors[0].startswith("Does not have the form this parameter needs")
        assert validate_value("P", spec, "a" * 500) == (["a" * 500], [])

    def test_pattern_re2_cannot_compile_runs_with_a_hard_timeout(self):
        pattern = r"^(?=a)(a|aa)+$"  # lookahead: not RE2; exponential on a failing input
        assert validation.pattern_engine(pattern) == "regex"
        spec = {"type": "String", "required": True, "allowedPattern": pattern}
        value, errors = validate_value("P", spec, "a" * 60 + "b")
        assert value is None and "in time" in errors[0]  # stopped by the timeout, not run to the end
        assert validate_value("P", spec, "aaaa") == (["aaaa"], [])

    def test_a_whole_request_shares_one_time_budget(self, monkeypatch):
        """40 slow matches, each stopped at FALLBACK_MATCH_SECONDS: once the request's budget is
        spent, the rest are refused without running (counted, not timed)."""
        pattern = r"^(?=a)(a|aa)+$"
        schema = {
            f"P{i}": {"type": "StringList", "required": True, "allowedPattern": pattern} for i in range(4)
        }
        raw = {name: ["a" * 60 + "b"] * 10 for name in schema}  # 40 slow matches
        engine, compiled = validation.compiled_pattern(pattern)
        ran = []

        class Counting:
            def fullmatch(self, value, timeout=None):
                ran.append(timeout)
                return compiled.fullmatch(value, timeout=timeout)

        monkeypatch.setattr(validation, "compiled_pattern", lambda p: (engine, Counting()))
        with pytest.raises(InvalidRequest) as refused:
            validate_parameters(schema, raw)
        most = math.ceil(validation.FALLBACK_BUDGET_SECONDS / validation.FALLBACK_MATCH_SECONDS) + 1
        assert 1 <= len(ran) <= most, f"{len(ran)} matches ran on a budget for {most}"
        assert all(0 < timeout <= validation.FALLBACK_MATCH_SECONDS for timeout in ran)
        assert len(refused.value.errors) == 4  # every parameter refused, none let through

    def test_a_huge_value_is_refused_before_any_regex_runs(self, monkeypatch):
        monkeypatch.setattr(validation, "compiled_pattern", lambda pattern: pytest.fail("regex ran"))
        spec = {"type": "String", "required": True, "allowedPattern": "^(a+)+$"}
        value, errors = validate_value("P", spec, "a" * 1_000_000)
        assert value is None and errors == ["Too long: at most 512 characters."]

    def test_clamping_counts_keeps_meaning_within_512_characters(self):
        assert clamp_repetitions(r"^[a-z]{1,2048}$") == r"^[a-z]{1,513}$"
        assert clamp_repetitions(r"[{1,2000}]\{2000}x{7}") == r"[{1,2000}]\{2000}x{7}"
        assert matches_pattern(r"^[a-z]{1,2048}$", "a" * 512)
        assert not matches_pattern(r"^[a-z]{600}$", "a" * 512)

    def test_an_invalid_pattern_is_a_clean_refusal(self):
        spec = {"type": "String", "required": True, "allowedPattern": "(unclosed"}
        value, errors = validate_value("P", spec, "x")
        assert value is None and "cannot be checked safely" in errors[0]


#
# Types and constraints, in plain words
#


def _v(spec, raw):
    return validate_value("P", {"required": False, **spec}, raw)


class TestTypes:
    def test_string_bounds_values_and_pattern(self):
        spec = {"type": "String", "minChars": 3, "maxChars": 5, "allowedPattern": "^[a-z]+$"}
        assert _v(spec, "abcd") == (["abcd"], [])
        assert _v(spec, "ab")[1] == ["Too short: at least 3 characters."]
        assert "Too long: at most 5 characters." in _v(spec, "abcdefg")[1]
        assert _v(spec, "ABC")[1] == ["Enter one or more characters from a–z."]  # words, not the regex
        assert _v({"type": "String", "allowedValues": ["a", "b"]}, "c")[1] == ["Choose one of: a, b."]
        assert _v({"type": "String"}, "two\nlines")[1] == ["Remove control characters and line breaks."]
        assert _v({"type": "String", "displayType": "textarea"}, "two\nlines") == (["two\nlines"], [])
        assert _v({"type": "String"}, ["x", "y"])[1] == ["Enter exactly one value."]
        assert _v({"type": "String"}, {"a": 1})[1] == ["Enter text, not a list or an object."]

    def test_required_and_optional(self):
        assert validate_value("P", {"type": "String", "required": True}, "") == (
            None,
            ["This parameter is required."],
        )
        assert validate_value("P", {"type": "String", "required": False}, None) == (None, [])

    def test_integer_with_allowed_values_as_rotate_logs_declares_it(self):
        spec = SCHEMAS["Delegate-RotateLogs.yaml"]["RetentionDays"]
        assert validate_value("RetentionDays", spec, "30") == (["30"], [])
        assert validate_value("RetentionDays", spec, 14) == (["14"], [])
        assert validate_value("RetentionDays", spec, "15")[1] == ["Choose one of: 7, 14, 30, 90."]
        assert validate_value("RetentionDays", spec, "3.5")[1] == ["Enter a whole number, e.g. 14."]
        assert validate_value("RetentionDays", spec, True)[1] == ["Enter a whole number, e.g. 14."]

    def test_boolean(self):
        assert _v({"type": "Boolean"}, True) == (["true"], [])
        assert _v({"type": "Boolean"}, "FALSE") == (["false"], [])
        assert _v({"type": "Boolean"}, "yes")[1] == ["Choose true or false."]

    def test_string_list_items_bounds_and_duplicates(self):
        spec = SCHEMAS["Delegate-PatchWithApproval.yaml"]["InstanceIds"]  # 1-5 items, pattern ^i-…$
        ok = ["i-0123456789abcdef0", "i-0123456789abcdef1"]
        assert validate_value("InstanceIds", spec, ok) == (ok, [])
        assert validate_value("InstanceIds", spec, "\n".join(ok)) == (ok, [])  # the form's one-per-line
        assert validate_value("InstanceIds", spec, [f"i-{n:017x}" for n in range(6)])[1] == [
            "Give at most 5 values."
        ]
        _, errors = validate_value("InstanceIds", spec, ["i-0123456789abcdef0", "web-1"])
        assert errors[0] == "'web-1': Enter “i-”, then 8 to 17 characters from 0–9 or a–f."
        assert validate_value("InstanceIds", spec, ok[:1] * 2)[1] == ["Each value only once, please."]
        assert validate_value("InstanceIds", spec, ["x"] * 51)[1] == ["Too many values: at most 50."]

    def test_aws_resource_types_check_their_shape(self):
        assert _v({"type": "AWS::EC2::Instance::Id"}, "i-0123456789abcdef0") == (["i-0123456789abcdef0"], [])
        assert _v({"type": "AWS::EC2::Instance::Id"}, "vol-0123456789abcdef0")[1] == [
            "Enter an instance id like i-0123456789abcdef0."
        ]
        assert _v({"type": "List<AWS::EC2::Instance::Id>"}, ["i-01234567"]) == (["i-01234567"], [])
        assert _v({"type": "AWS::S3::Bucket::Name"}, "platform-logs") == (["platform-logs"], [])
        assert _v({"type": "AWS::S3::Bucket::Name"}, "Bad_Bucket")[1][0].startswith("Enter a bucket name")
        assert _v({"type": "AWS::S3::Bucket::Name"}, "a..b")[1][0].startswith("Enter a bucket name")
        assert _v({"type": "AWS::SQS::Queue::Name"}, "anything-goes") == (["anything-goes"], [])

    def test_string_map_and_map_list(self):
        labels = SCHEMAS["Delegate-RotateLogs.yaml"]["Labels"]
        schedule = SCHEMAS["Delegate-RotateLogs.yaml"]["Schedule"]  # maxItems 7
        assert validate_value("Labels", labels, {"b": "2", "a": "1"}) == (['{"a":"1","b":"2"}'], [])
        assert validate_value("Labels", labels, '{"env": "prod"}') == (['{"env":"prod"}'], [])
        assert validate_value("Labels", labels, {"n": 1})[1][0].startswith(
            "Enter one Key=value per line, or a JSON object of text values"
        )
        assert validate_value("Labels", labels, "{nope")[1][0].startswith("Enter one Key=value per line")
        assert validate_value("Labels", labels, "env=prod") == (['{"env":"prod"}'], [])
        assert validate_value("Schedule", schedule, [{"Day": "Mon"}]) == (['[{"Day":"Mon"}]'], [])
        assert validate_value("Schedule", schedule, json.dumps([{"Day": "Mon"}] * 8))[1] == [
            "Give at most 7 entries."
        ]
        assert validate_value("Schedule", schedule, '{"Day": "Mon"}')[1][0].startswith(
            "Enter a JSON list of objects"
        )
        assert validate_value("Schedule", schedule, "x" * 600)[1] == [
            "Too long: at most 512 characters of JSON."
        ]


class TestValidateParameters:
    def test_role_values_are_refused_naming_them(self):
        schema = SCHEMAS["aws-CopySnapshot.json"]
        with pytest.raises(ServerOwnedParameter) as error:
            validate_parameters(
                schema,
                {
                    "SnapshotId": "snap-01234567",
                    "LambdaAssumeRole": "arn:aws:iam::1:role/x",
                    "AutomationAssumeRole": "",
                },
            )
        assert set(error.value.errors) == {"AutomationAssumeRole", "LambdaAssumeRole"}
        assert error.value.code == "server_owned_parameter"

    def test_unknown_and_invalid_fields_are_all_reported_at_once(self):
        with pytest.raises(InvalidRequest) as error:
            validate_parameters(SCHEMAS["Delegate-RotateLogs.yaml"], {"Nope": "x", "RetentionDays": "8"})
        assert error.value.errors == {
            "Nope": ["This runbook version has no such parameter."],
            "InstanceIds": ["This parameter is required."],
            "CollectorInstanceId": ["This parameter is required."],
            "RetentionDays": ["Choose one of: 7, 14, 30, 90."],
        }

    def test_optional_values_left_out_keep_the_runbook_defaults(self):
        wire = validate_parameters(
            SCHEMAS["Delegate-RotateLogs.yaml"],
            {
                "InstanceIds": ["i-0123456789abcdef0"],
                "CollectorInstanceId": "i-0123456789abcdef1",
                "Notes": "",
            },
        )
        assert wire == {
            "InstanceIds": ["i-0123456789abcdef0"],
            "CollectorInstanceId": ["i-0123456789abcdef1"],
        }

    def test_rate_control_target_parameter_is_left_to_the_targets(self):
        schema = SCHEMAS["aws-RestartEC2Instance.json"]
        assert validate_parameters(schema, {}, target_parameter="InstanceId") == {}
        with pytest.raises(InvalidRequest) as error:
            validate_parameters(schema, {"InstanceId": ["i-01234567"]}, target_parameter="InstanceId")
        assert error.value.errors["InstanceId"][0].startswith("Leave this empty")

    def test_target_values_are_checked_one_by_one_against_the_parameter(self):
        spec = SCHEMAS["Delegate-PatchWithApproval.yaml"]["InstanceIds"]
        assert validate_target_values(spec, ["i-0123456789abcdef0"]) == []
        assert validate_target_values(spec, ["web-1"])[0] == (
            "'web-1': Enter “i-”, then 8 to 17 characters from 0–9 or a–f."
        )

    def test_not_an_object(self):
        with pytest.raises(InvalidRequest) as error:
            validate_parameters({}, ["x"])
        assert "parameters" in error.value.errors


class TestRateControlAndAlarm:
    @pytest.mark.parametrize("value", ["1", "10", "250", "1%", "10%", "99%", "100%"])
    def test_max_concurrency_accepts_what_aws_accepts(self, value):
        assert MAX_CONCURRENCY.match(value)

    @pytest.mark.parametrize("value", ["0", "0%", "101%", "1000%", "-1", "1.5", "10 %", "", "01"])
    def test_max_concurrency_refuses_what_aws_refuses(self, value):
        assert not MAX_CONCURRENCY.match(value)

    @pytest.mark.parametrize("value", ["0", "3", "0%", "9%", "50%", "100%"])
    def test_max_errors_accepts_what_aws_accepts(self, value):
        assert MAX_ERRORS.match(value)

    @pytest.mark.parametrize("value", ["-1", "101%", "00", "1.5", "x"])
    def test_max_errors_refuses_what_aws_refuses(self, value):
        assert not MAX_ERRORS.match(value)

    @HYPOTHESIS
    @given(st.from_regex(r"\A([1-9][0-9]{0,5}|[1-9][0-9]%|[1-9]%|100%)\Z"))
    def test_generated_concurrency_values_fit_the_seven_characters_aws_allows(self, value):
        assert MAX_CONCURRENCY.match(value) and len(value) <= 7

    def test_alarm_names(self):
        assert validate_alarm_name("cpu-high") == []
        assert validate_alarm_name("   ") and validate_alarm_name("x" * 256) and validate_alarm_name("a\nb")
