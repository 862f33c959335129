"""Server-side validation of runbook parameters against a version's stored schema.

The web form and the API both end here, so they accept and refuse exactly the same input with
the same words. Output is SSM's wire shape: {name: [str, ...]}.

allowedPattern is hostile input to a backtracking engine (ReDoS, reliability-security.md §2.5):
1. the value's length is bounded first (512 characters, SSM's own limit per value);
2. the pattern runs on RE2, which is linear in the input;
3. a pattern RE2 cannot compile (lookaround, backreferences, possessive quantifiers: Java
   syntax AWS accepts) runs on the `regex` engine with a hard timeout per match and a budget
   per request, and a timeout is a clean refusal, never a hung web process.
Patterns are applied as a full match, like Java's Matcher.matches(); where AWS would search
instead this is stricter, never looser ("at least as strict": reliability-security.md §2.5).
"""

from __future__ import annotations

import functools
import json
import re
import time

import re2
import regex

from automations.errors import InvalidRequest, ServerOwnedParameter
from automations.runbooks import pattern_words

MAX_VALUE_CHARS = 512  # SSM accepts at most 512 characters per value
MAX_LIST_ITEMS = 50  # and at most 50 values per parameter
MAX_PARAMETERS = 200  # and 1-200 parameters
# The fallback engine's limits: one match, and all fallback matches of one request together.
FALLBACK_MATCH_SECONDS = 0.05
FALLBACK_BUDGET_SECONDS = 0.25
_INTEGER = re.compile(r"^-?[0-9]{1,18}$")
# StartAutomationExecution's own patterns (aws-api.md §2).
MAX_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
MAX_ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")
# AlarmConfiguration.Alarms[].Name: 1-255 characters, not only whitespace.
ALARM_NAME = re.compile(r"^(?!\s*$)[^\x00-\x1f\x7f]{1,255}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Shapes of the AWS resource types (the element type of List<…>); other AWS:: types are text.
RESOURCE_FORMATS = {
    "AWS::EC2::Instance::Id": (
        re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$"),
        "an instance id like i-0123456789abcdef0",
    ),
    "AWS::EC2::Volume::Id": (
        re.compile(r"^vol-[0-9a-f]{8}([0-9a-f]{9})?$"),
        "a volume id like vol-0123456789abcdef0",
    ),
    "AWS::EC2::Snapshot::Id": (
        re.compile(r"^snap-[0-9a-f]{8}([0-9a-f]{9})?$"),
        "a snapshot id like snap-0123456789abcdef0",
    ),
    "AWS::EC2::Image::Id": (
        re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$"),
        "an image id like ami-0123456789abcdef0",
    ),
    "AWS::EC2::SecurityGroup::Id": (
        re.compile(r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$"),
        "a security group id like sg-…",
    ),
    "AWS::EC2::Subnet::Id": (re.compile(r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$"), "a subnet id like subnet-…"),
    "AWS::EC2::VPC::Id": (re.compile(r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$"), "a VPC id like vpc-…"),
    "AWS::S3::Bucket::Name": (
        re.compile(r"^(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
        "a bucket name: 3-63 lowercase letters, digits, dots and hyphens",
    ),
    "AWS::RDS::DBInstance::Id": (
        re.compile(r"^[a-zA-Z][a-zA-Z0-9]*(-[a-zA-Z0-9]+)*$"),
        "a DB instance identifier",
    ),
    "AWS::IAM::Role::Arn": (
        re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$"),
        "an IAM role ARN",
    ),
}


# Resource kinds a requester can name, the exact AWS syntax of each (after trimming), and how
# the portal says it. A parameter has a kind by its AWS:: type or, for plain String/StringList
# parameters, by its name (resource_kind); every kind is scope-checked against the team.
RESOURCE_KINDS = {
    "instance": (re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$"), "an instance id like i-0123456789abcdef0"),
    "volume": (re.compile(r"^vol-[0-9a-f]{8}([0-9a-f]{9})?$"), "a volume id like vol-0123456789abcdef0"),
    "snapshot": (re.compile(r"^snap-[0-9a-f]{8}([0-9a-f]{9})?$"), "a snapshot id like snap-0123456789abcdef0"),
    "image": (re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$"), "an image id like ami-0123456789abcdef0"),
    "bucket": (re.compile(r"^(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
               "a bucket name: 3-63 lowercase letters, digits, dots and hyphens"),
    "db_instance": (re.compile(r"^(?=.{1,63}$)[a-zA-Z](?:-?[a-zA-Z0-9])*$"),
                    "a DB instance identifier: a letter, then letters, digits and single hyphens (at most 63)"),
    "queue": (re.compile(r"^https://sqs\.[a-z0-9-]+\.amazonaws\.com/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$"),
              "a queue URL like https://sqs.eu-west-1.amazonaws.com/123456789012/name"),
    "security_group": (re.compile(r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$"), "a security group id like sg-0123456789abcdef0"),
    "subnet": (re.compile(r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$"), "a subnet id like subnet-0123456789abcdef0"),
    "vpc": (re.compile(r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$"), "a VPC id like vpc-0123456789abcdef0"),
    "stack": (re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,127}|arn:aws[a-z-]*:cloudformation:[a-z0-9-]+:\d{12}:"
                         r"stack/[A-Za-z][A-Za-z0-9-]{0,127}/[0-9a-f-]{1,64})$"),
              "a stack name (a letter, then letters, digits and hyphens) or a stack ARN"),
}
# A parameter of an AWS:: type that names none of the kinds above (a Lambda function, a key
# pair…): Delegate cannot check it against the team's scope, so it is refused, never passed.
UNSUPPORTED_KIND = "unsupported"
_KIND_OF_TYPE = {
    "AWS::EC2::Instance::Id": "instance", "AWS::EC2::Volume::Id": "volume", "AWS::EC2::Snapshot::Id": "snapshot",
    "AWS::EC2::Image::Id": "image", "AWS::S3::Bucket::Name": "bucket", "AWS::RDS::DBInstance::Id": "db_instance",
    "AWS::SQS::Queue::Url": "queue", "AWS::EC2::SecurityGroup::Id": "security_group",
    "AWS::EC2::Subnet::Id": "subnet", "AWS::EC2::VPC::Id": "vpc", "AWS::CloudFormation::Stack::Name": "stack",
    "AWS::CloudFormation::Stack::Id": "stack",
}
_KIND_OF_NAME = (
    (re.compile(r"(DBInstanceIdentifier|DbInstanceId|DBInstanceId|RdsInstanceId)s?$"), "db_instance"),
    (re.compile(r"InstanceIds?$"), "instance"),
    (re.compile(r"VolumeIds?$"), "volume"),
    (re.compile(r"SnapshotIds?$"), "snapshot"),
    (re.compile(r"(ImageIds?|AmiIds?)$"), "image"),
    (re.compile(r"(BucketNames?|^S3Bucket|^Bucket)$"), "bucket"),
    (re.compile(r"QueueUrls?$"), "queue"),
    (re.compile(r"SecurityGroupIds?$"), "security_group"),
    (re.compile(r"SubnetIds?$"), "subnet"),
    (re.compile(r"VpcIds?$"), "vpc"),
    # An existing stack to act on. A bare "StackName" is left out: AWS runbooks use it for the
    # stack they create (AWS-CreateManagedInstance), which cannot be in anyone's scope yet.
    (re.compile(r"^Stack(Id|NameOrId|Arn)$"), "stack"),
)
_RDS_HINT = re.compile(r"\b(RDS|DB instance|database|Aurora)\b", re.IGNORECASE)


def resource_kind(name: str, spec: dict) -> str | None:
    """The resource kind a parameter names (instance, volume, …), or None for plain text.

    An AWS:: type decides (one Delegate cannot scope-check is UNSUPPORTED_KIND); otherwise the
    name does, except that an "InstanceId" whose description speaks of RDS is a DB instance
    (AWS-RebootRdsInstance).
    """
    kind = str(spec.get("type", ""))
    inner = _element_type(kind)
    if inner in _KIND_OF_TYPE:
        return _KIND_OF_TYPE[inner]
    if inner.startswith("AWS::") and not inner.startswith("AWS::IAM::"):  # IAM types are roles (role_kind)
        return UNSUPPORTED_KIND
    if inner != "String" or spec.get("role_kind"):
        return None
    for pattern, hinted in _KIND_OF_NAME:
        if pattern.search(name):
            if hinted == "instance" and _RDS_HINT.search(str(spec.get("description", ""))):
                return "db_instance"
            return hinted
    return None


class PatternUnsupported(ValueError):
    """A pattern that neither RE2 nor the fallback engine can compile."""


class _Deadline:
    """The fallback engine's time budget for one validate_parameters call."""

    def __init__(self, seconds: float = FALLBACK_BUDGET_SECONDS):
        self.until = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.until - time.monotonic()


_COUNT = re.compile(r"\{(\d+)(,(\d*))?\}")


def clamp_repetitions(pattern: str, limit: int = MAX_VALUE_CHARS + 1) -> str:
    """Counted repetitions above `limit` lowered to it, outside character classes and escapes.

    RE2 refuses counts above 1000, and AWS patterns use them (AWS-EnableS3BucketKeys has
    `{1,2048}`). Values never exceed MAX_VALUE_CHARS, so X{m,n} with n > limit matches exactly
    the same values as X{m',n'} with both clamped: beyond `limit` iterations only empty
    matches remain, and those can be added or dropped freely.
    """
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            out.append(char)
            i += 1
            for prefix in ("^", "]"):  # "[]..." and "[^]..." start with a literal ']'
                if pattern.startswith(prefix, i):
                    out.append(prefix)
                    i += 1
            continue
        elif char == "{":
            match = _COUNT.match(pattern, i)
            if match:
                low, comma, high = match.group(1), match.group(2), match.group(3)
                low = str(min(int(low), limit))
                high = "" if not comma else ("," + (str(min(int(high), limit)) if high else ""))
                out.append("{" + low + high + "}")
                i = match.end()
                continue
        out.append(char)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=512)
def compiled_pattern(pattern: str):
    """(engine name, compiled pattern): RE2 when it can, else `regex` (matched with a timeout)."""
    if not isinstance(pattern, str) or len(pattern) > 2048:
        raise PatternUnsupported("patterns are text of at most 2048 characters")
    options = re2.Options()
    options.max_mem = 8 << 20  # bound RE2's own memory for huge patterns
    options.log_errors = False  # a pattern RE2 refuses is expected; we fall back, not log to stderr
    for candidate in (pattern, clamp_repetitions(pattern)):
        try:
            return "re2", re2.compile(candidate, options)
        except Exception:  # noqa: BLE001 - re2 raises its own error type; we only need "not RE2"
            continue
    try:
        return "regex", regex.compile(pattern, regex.VERSION0)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise PatternUnsupported(str(exc)[:200]) from None


def pattern_engine(pattern: str) -> str:
    return compiled_pattern(pattern)[0]


def matches_pattern(pattern: str, value: str, *, deadline: _Deadline | None = None) -> bool:
    """Whether the whole value matches; TimeoutError when the fallback engine ran out of time."""
    if len(value) > MAX_VALUE_CHARS:  # length first: nothing long ever reaches an engine
        return False
    engine, compiled = compiled_pattern(pattern)
    if engine == "re2":
        return compiled.fullmatch(value) is not None
    budget = min(FALLBACK_MATCH_SECONDS, deadline.remaining() if deadline else FALLBACK_MATCH_SECONDS)
    if budget <= 0:
        raise TimeoutError("validation time budget used up")
    return compiled.fullmatch(value, timeout=budget) is not None


def pattern_refusal(pattern: str) -> str:
    """A value that misses allowedPattern, in words: the regex is for those who ask (form, API schema)."""
    words = pattern_words.describe(pattern)
    if words:
        return f"Enter {words}."
    return "Does not have the form this parameter needs; its description says what it takes."


def _element_type(kind: str) -> str:
    if kind.startswith("List<") and kind.endswith(">"):
        return kind[5:-1]
    return "String" if kind == "StringList" else kind


def _is_list(kind: str) -> bool:
    return kind == "StringList" or (kind.startswith("List<") and kind.endswith(">"))


def _as_list(value) -> list:
    """A list parameter's items. Text holds one value per line (the form's textarea)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return [value]


def _check_text(spec: dict, value, errors: list[str], deadline: _Deadline) -> str | None:
    """One text value (a String, or one item of a list): type, length, control characters, constraints."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.append("Enter text, not a list or an object.")
        return None
    text = str(value)
    kind = spec.get("resource_kind")
    if kind in RESOURCE_KINDS:
        # A resource is named in exactly AWS's syntax (trimmed first), before any scope check:
        # "I-0ABC", " i-0abc,i-0def" or a bucket name with a path would slip past the checks.
        text = text.strip()
        if not RESOURCE_KINDS[kind][0].match(text):
            errors.append(f"Enter {RESOURCE_KINDS[kind][1]}.")
            return None
    if len(text) > MAX_VALUE_CHARS:
        errors.append(f"Too long: at most {MAX_VALUE_CHARS} characters.")
        return None
    if _CONTROL.search(text) or (spec.get("displayType") != "textarea" and ("\n" in text or "\r" in text)):
        errors.append("Remove control characters and line breaks.")
        return None
    if "minChars" in spec and len(text) < int(spec["minChars"]):
        errors.append(f"Too short: at least {spec['minChars']} characters.")
    if "maxChars" in spec and len(text) > int(spec["maxChars"]):
        errors.append(f"Too long: at most {spec['maxChars']} characters.")
    if spec.get("role_kind") == "subject" and text not in (spec.get("allowedValues") or []):
        # A role the change acts on comes from the team's allowlist only (never typed free).
        errors.append("Choose one of the roles your team's administrators allow"
                      + (": " + ", ".join(spec["allowedValues"]) if spec.get("allowedValues") else " (none yet).")
                      + ("." if spec.get("allowedValues") else ""))
    elif spec.get("allowedValues") and text not in spec["allowedValues"]:
        errors.append("Choose one of: " + ", ".join(spec["allowedValues"]) + ".")
    if spec.get("allowedPattern") is not None:
        try:
            if not matches_pattern(spec["allowedPattern"], text, deadline=deadline):
                errors.append(pattern_refusal(spec["allowedPattern"]))
        except TimeoutError:
            errors.append(
                "This value could not be checked against the runbook's pattern in time; try a shorter value."
            )
        except PatternUnsupported:
            errors.append(
                "This runbook's pattern for this parameter cannot be checked safely; ask an administrator."
            )
    shape = RESOURCE_FORMATS.get(_element_type(spec["type"]))
    if shape and text and not shape[0].match(text):
        errors.append(f"Enter {shape[1]}.")
    return text


def _single(raw) -> tuple[object, list[str]]:
    if isinstance(raw, list):
        if len(raw) != 1:
            return None, ["Enter exactly one value."]
        return raw[0], []
    return raw, []


def validate_value(
    name: str, spec: dict, raw, *, deadline: _Deadline | None = None
) -> tuple[list[str] | None, list[str]]:
    """One parameter: (wire value, or None when omitted so SSM uses the default; error messages)."""
    deadline = deadline or _Deadline()
    kind = spec["type"]
    if raw is None or raw == "" or raw == [] or raw == {}:
        return None, (["This parameter is required."] if spec.get("required") else [])
    if kind == "Boolean":
        value, errors = _single(raw)
        text = str(value).lower() if isinstance(value, (bool, str)) else None
        if errors or text not in ("true", "false"):
            return None, errors or ["Choose true or false."]
        return [text], []
    if kind == "Integer":
        value, errors = _single(raw)
        text = str(value).strip() if not isinstance(value, bool) and isinstance(value, (int, str)) else ""
        if errors or not _INTEGER.match(text):
            return None, errors or ["Enter a whole number, e.g. 14."]
        text = str(int(text))
        errors = []
        _check_text({**spec, "type": "String", "displayType": None}, text, errors, deadline)
        return ([text] if not errors else None), errors
    if kind in ("StringMap", "MapList"):
        return _validate_json(kind, spec, raw)
    if _is_list(kind):
        return _validate_list(spec, raw, deadline)
    value, errors = _single(raw)
    if errors:
        return None, errors
    text = _check_text(spec, value, errors, deadline)
    if not errors and text == "" and spec.get("required"):
        errors.append("This parameter is required.")
    return ([text] if text and not errors else None), errors


def _validate_list(spec: dict, raw, deadline: _Deadline) -> tuple[list[str] | None, list[str]]:
    items = _as_list(raw)
    if len(items) > MAX_LIST_ITEMS:
        return None, [f"Too many values: at most {MAX_LIST_ITEMS}."]
    errors: list[str] = []
    if "minItems" in spec and len(items) < int(spec["minItems"]):
        errors.append(f"Give at least {spec['minItems']} value{'s' if int(spec['minItems']) != 1 else ''}.")
    if "maxItems" in spec and len(items) > int(spec["maxItems"]):
        errors.append(f"Give at most {spec['maxItems']} value{'s' if int(spec['maxItems']) != 1 else ''}.")
    cleaned: list[str] = []
    for item in items:
        item_errors: list[str] = []
        text = _check_text(spec, item, item_errors, deadline)
        if item_errors:
            errors.extend(f"{str(item)[:60]!r}: {message}" for message in item_errors)
        elif text:
            cleaned.append(text)
    if len(set(cleaned)) != len(cleaned):
        errors.append("Each value only once, please.")
    if not cleaned and not errors and spec.get("required"):
        errors.append("This parameter is required.")
    return (cleaned if cleaned and not errors else None), errors


_MAP_HINT = 'Enter one Key=value per line, or a JSON object of text values, e.g. {"Environment": "prod"}.'


def _map_from_lines(text: str) -> tuple[dict | None, list[str]]:
    """'Key=value' per line (split at the first '='; blank lines ignored) as a StringMap."""
    mapping: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, equals, item = line.partition("=")
        if not equals or not key.strip():
            return None, [_MAP_HINT]
        if key.strip() in mapping:
            return None, [f"Each key only once: {key.strip()}."]
        mapping[key.strip()] = item.strip()
    return mapping, []


def _validate_json(kind: str, spec: dict, raw) -> tuple[list[str] | None, list[str]]:
    value = raw
    if isinstance(raw, list) and kind == "StringMap" and len(raw) == 1 and isinstance(raw[0], str):
        value = raw[0]  # the wire shape, e.g. a re-run's stored parameters
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            return None, [f"Too long: at most {MAX_VALUE_CHARS} characters of JSON."]
        if kind == "StringMap" and not value.lstrip().startswith("{"):
            # Key=value lines, as people type a map (the form's box says so); JSON still works.
            value, errors = _map_from_lines(value)
            if errors:
                return None, errors
        else:
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                return None, [_MAP_HINT if kind == "StringMap" else "Enter valid JSON."]
    if kind == "StringMap":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return None, [_MAP_HINT]
    else:
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            try:
                value = json.loads(value[0]) if len(value[0]) <= MAX_VALUE_CHARS else None
            except (ValueError, RecursionError):
                value = None
        if not (isinstance(value, list) and all(isinstance(item, dict) for item in value)):
            return None, ['Enter a JSON list of objects, e.g. [{"Day": "Sunday", "Hour": "03"}].']
        errors = []
        if "minItems" in spec and len(value) < int(spec["minItems"]):
            errors.append(f"Give at least {spec['minItems']} entries.")
        if "maxItems" in spec and len(value) > int(spec["maxItems"]):
            errors.append(f"Give at most {spec['maxItems']} entries.")
        if errors:
            return None, errors
    if not value and spec.get("required"):
        return None, ["This parameter is required."]
    # One JSON string, keys sorted: the same bytes every time (the fingerprint covers it).
    encoded = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    if len(encoded) > MAX_VALUE_CHARS:
        return None, [f"Too long: at most {MAX_VALUE_CHARS} characters of JSON."]
    return [encoded], []


def validate_parameters(
    schema: dict[str, dict], raw: dict, *, target_parameter: str = ""
) -> dict[str, list[str]]:
    """All parameters of one version: SSM wire values, or InvalidRequest with per-field errors.

    Server-owned parameters (roles) must not appear at all; the service fills them in. With rate
    control, `target_parameter` is filled per target by SSM, so it must be left empty here.
    """
    if not isinstance(raw, dict):
        raise InvalidRequest(
            "Parameters must be an object of name → value.",
            errors={"parameters": ["Expected an object of name → value."]},
        )
    if len(raw) > MAX_PARAMETERS:
        raise InvalidRequest(
            f"At most {MAX_PARAMETERS} parameters.", errors={"parameters": ["Too many parameters."]}
        )
    owned = sorted(
        name for name in raw if isinstance(name, str) and name in schema and schema[name].get("server_owned")
    )
    if owned:
        raise ServerOwnedParameter(
            f"{', '.join(owned)} {'is' if len(owned) == 1 else 'are'} set by Delegate, not by requesters.",
            errors={
                name: ["This value is chosen by Delegate's administrators and cannot be set."]
                for name in owned
            },
        )
    unsupported = sorted(name for name in raw if isinstance(name, str) and name in schema
                         and raw[name] not in (None, "", [], {}) and resource_kind(name, schema[name]) == UNSUPPORTED_KIND)
    if unsupported:
        # Fail closed: a resource Delegate cannot check against the team's scope is never sent.
        raise InvalidRequest(
            "Delegate cannot check this kind of resource against your team's scope, so it cannot be named here.",
            code="resource_type_unsupported",
            errors={name: [f"Delegate cannot check a {schema[name]['type']} against your team's scope; "
                           "ask an administrator to change the runbook or leave this empty."] for name in unsupported})
    unknown = sorted(str(name)[:60] for name in raw if name not in schema)
    errors: dict[str, list[str]] = {name: ["This runbook version has no such parameter."] for name in unknown}
    deadline = _Deadline()
    wire: dict[str, list[str]] = {}
    for name, spec in schema.items():
        if spec.get("server_owned"):
            continue
        if name == target_parameter:
            if raw.get(name) not in (None, "", [], {}):
                errors[name] = ["Leave this empty: with rate control the targets fill it in, one per run."]
            continue
        value, messages = validate_value(name, with_resource_kind(name, spec), raw.get(name), deadline=deadline)
        if messages:
            errors[name] = messages
        elif value is not None:
            wire[name] = value
    if errors:
        raise InvalidRequest("Some parameters are not valid.", errors=errors)
    return wire


def with_resource_kind(name: str, spec: dict) -> dict:
    """The spec with its resource kind filled in (what _check_text checks the syntax of)."""
    return {**spec, "resource_kind": resource_kind(name, spec)} if "resource_kind" not in spec else spec


def validate_target_values(spec: dict, values: list, name: str = "target") -> list[str]:
    """Rate-control target values go into the target parameter one at a time: check each as one value."""
    single = {
        **with_resource_kind(name, spec),
        "type": _element_type(spec["type"]) if _is_list(spec["type"]) else spec["type"],
        "required": True,
    }
    single.pop("minItems", None)
    single.pop("maxItems", None)
    if single.get("resource_kind") == UNSUPPORTED_KIND:
        return [f"Delegate cannot check a {spec['type']} against your team's scope; these targets cannot be named."]
    deadline = _Deadline()
    errors: list[str] = []
    for value in values:
        _, messages = validate_value("target", single, value, deadline=deadline)
        errors.extend(f"{str(value)[:60]!r}: {message}" for message in messages)
    return errors


def validate_alarm_name(name: str) -> list[str]:
    if name and not ALARM_NAME.match(name):
        return ["An alarm name is 1-255 printable characters, not only spaces."]
    return []
