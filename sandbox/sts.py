"""STS: AssumeRole and GetCallerIdentity, validated like AWS (aws-api.md §10).

The sandbox remembers every access key it issues, so later SSM calls made with that key are
attributed to the assumed-role session: ExecutedBy, SourceIdentity and session tags end up on
the automation execution the way CloudTrail would show them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
import time

from .errors import AwsError
from .protocol import iso
from .state import Caller, Request, State

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/((?:[\w+=,.@-]+/)*)([\w+=,.@-]+)$")
# AWS's \w is Java's ASCII one, so spell the class out instead of using Python's Unicode \w.
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_+=,.@-]*$")
_TAG_CHARS = re.compile(r"^[\w\s.:/=+\-@]*$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]*$")
CHAINED_SESSION_LIMIT = 3600  # role chaining caps sessions at one hour (aws-api.md §15 item 13)
API_MAX_DURATION = 43200


def _invalid(message: str) -> AwsError:
    return AwsError("ValidationError", message)


def _constraint(value, member: str, rule: str) -> AwsError:
    return _invalid(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    )


def identify(state: State, access_key_id: str | None) -> Caller:
    """The caller behind an access key: an assumed-role session we issued, or the plain sandbox user."""
    session = state.sessions.get(access_key_id or "")
    if session:
        return Caller(access_key_id, session["Arn"], session)
    return Caller(access_key_id or "", f"arn:aws:iam::{state.account_id}:user/sandbox")


def is_expired(caller: Caller) -> bool:
    return bool(caller.session) and caller.session["Expiration"] <= time.time()


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def assume_role(req: Request) -> dict:
    p = req.params
    role_arn = p.get("RoleArn")
    session_name = p.get("RoleSessionName")
    if not role_arn:
        raise _constraint(None, "roleArn", "Member must not be null")
    if not session_name:
        raise _constraint(None, "roleSessionName", "Member must not be null")
    if not 20 <= len(role_arn) <= 2048:
        raise _constraint(role_arn, "roleArn", "Member must have length between 20 and 2048")
    role = _ROLE_ARN.match(role_arn)
    if not role:
        raise _invalid(f"{role_arn} is invalid: a role ARN looks like arn:aws:iam::123456789012:role/Name")
    if not 2 <= len(session_name) <= 64:
        raise _constraint(session_name, "roleSessionName", "Member must have length between 2 and 64")
    if not _NAME_CHARS.match(session_name):
        raise _constraint(
            session_name, "roleSessionName", "Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )

    caller = req.caller
    chained = caller.session is not None
    duration = _duration(p.get("DurationSeconds"), role_arn, chained, req.state)
    source_identity = _source_identity(p.get("SourceIdentity"), caller)
    tags, transitive = _tags(p.get("Tags") or [], p.get("TransitiveTagKeys") or [], caller)
    _policies(p)
    external_id = p.get("ExternalId")
    if external_id is not None and not (2 <= len(external_id) <= 1224 and _EXTERNAL_ID.match(external_id)):
        raise _constraint(
            external_id,
            "externalId",
            "Member must satisfy regular expression pattern: "
            "[\\w+=,.@:\\/-]* and have length between 2 and 1224",
        )
    token_code = p.get("TokenCode")
    if token_code is not None and not re.fullmatch(r"\d{6}", token_code):
        raise _constraint(token_code, "tokenCode", "Member must satisfy regular expression pattern: [\\d]*")

    account, role_name = role.group(1), role.group(3)
    role_id = "AROA" + hashlib.sha1(role_arn.encode()).hexdigest()[:17].upper()
    access_key = "ASIA" + _random(string.ascii_uppercase + string.digits, 16)
    expiration = time.time() + duration
    session = {
        "AccessKeyId": access_key,
        "SecretAccessKey": _random(string.ascii_letters + string.digits + "+/", 40),
        "SessionToken": "FwoGZXIvYXdzE" + _random(string.ascii_letters + string.digits, 200),
        "Expiration": expiration,
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "SourceIdentity": source_identity,
        "Tags": tags,
        "TransitiveTagKeys": transitive,
        "Account": account,
        "AssumedRoleId": f"{role_id}:{session_name}",
        "Arn": f"arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}",
        "IssuedAt": time.time(),
    }
    req.state.sessions[access_key] = session
    result = {
        "Credentials": {
            "AccessKeyId": access_key,
            "SecretAccessKey": session["SecretAccessKey"],
            "SessionToken": session["SessionToken"],
            "Expiration": iso(expiration),
        },
        "AssumedRoleUser": {"AssumedRoleId": session["AssumedRoleId"], "Arn": session["Arn"]},
    }
    if tags or p.get("Policy") or p.get("PolicyArns"):
        # Percentage of the packed size limit used (deprecated field; AWS still sends it).
        result["PackedPolicySize"] = min(100, 2 + 3 * len(tags) + len(p.get("Policy") or "") // 20)
    if source_identity:
        result["SourceIdentity"] = source_identity
    return result


def _duration(raw, role_arn: str, chained: bool, state: State) -> int:
    if raw is None:
        return 3600
    try:
        duration = int(raw)
    except (TypeError, ValueError):
        raise _constraint(raw, "durationSeconds", "Member must be an integer") from None
    if not 900 <= duration <= API_MAX_DURATION:
        raise _constraint(
            duration,
            "durationSeconds",
            "Member must have value less than or equal to 43200 and greater than or equal to 900",
        )
    if chained and duration > CHAINED_SESSION_LIMIT:
        raise _invalid(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles "
            "assumed by role chaining."
        )
    if duration > int(state.role_max_session_duration.get(role_arn, API_MAX_DURATION)):
        raise _invalid("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
    return duration


def _source_identity(value: str | None, caller: Caller) -> str | None:
    inherited = caller.source_identity
    if value is None:
        return inherited  # it carries over through role chaining
    if not 2 <= len(value) <= 256:
        raise _constraint(value, "sourceIdentity", "Member must have length between 2 and 256")
    if not _NAME_CHARS.match(value):
        raise _constraint(
            value, "sourceIdentity", "Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )
    if value.lower().startswith("aws:"):
        raise _invalid("SourceIdentity cannot start with the reserved prefix 'aws:'")
    if inherited and inherited != value:
        raise AwsError(
            "AccessDenied",
            f"The source identity of a role-chained session cannot be changed (it is '{inherited}').",
            status=403,
        )
    return value


def _tags(tags: list, transitive: list, caller: Caller) -> tuple[list[dict], list[str]]:
    if len(tags) > 50:
        raise _constraint("[...]", "tags", "Member must have length less than or equal to 50")
    if len(transitive) > 50:
        raise _constraint("[...]", "transitiveTagKeys", "Member must have length less than or equal to 50")
    seen = set()
    clean = []
    for tag in tags:
        key, value = tag.get("Key"), tag.get("Value", "")
        if not key or len(key) > 128 or not _TAG_CHARS.match(key):
            raise _constraint(
                key,
                "tags.member.key",
                "Member must have length between 1 and 128 and satisfy "
                "regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+",
            )
        if len(value) > 256 or not _TAG_CHARS.match(value):
            raise _constraint(
                value,
                "tags.member.value",
                "Member must have length less than or equal to 256 "
                "and satisfy regular expression pattern: "
                "[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*",
            )
        if key.lower() in seen:
            raise _invalid("Duplicate tag keys found. Please note that Tag keys are case insensitive.")
        seen.add(key.lower())
        clean.append({"Key": key, "Value": value})
    # Transitive tags of a calling (chained) session carry over; setting one of them again fails.
    carried = {key.lower() for key in (caller.session or {}).get("TransitiveTagKeys", [])}
    inherited = [tag for tag in caller.session_tags if tag["Key"].lower() in carried]
    if any(tag["Key"].lower() in seen for tag in inherited):
        raise _invalid("A tag the calling session passes on transitively cannot be set again.")
    unknown = [key for key in transitive if key.lower() not in seen]
    if unknown:
        raise _invalid(f"Transitive tag key '{unknown[0]}' is not one of the session tags.")
    return inherited + clean, [tag["Key"] for tag in inherited] + list(transitive)


def _policies(p: dict) -> None:
    policy = p.get("Policy")
    if policy is not None:
        if len(policy) > 2048:
            raise AwsError(
                "PackedPolicyTooLarge", "The inline session policy is larger than 2048 characters."
            )
        try:
            json.loads(policy)
        except ValueError:
            raise AwsError("MalformedPolicyDocument", "The session policy is not valid JSON.") from None
    arns = p.get("PolicyArns") or []
    if len(arns) > 10:
        raise _constraint("[...]", "policyArns", "Member must have length less than or equal to 10")


def get_caller_identity(req: Request) -> dict:
    caller = req.caller
    if caller.session:
        return {
            "UserId": caller.session["AssumedRoleId"],
            "Account": caller.session["Account"],
            "Arn": caller.arn,
        }
    user_id = "AIDA" + hashlib.sha1(req.state.account_id.encode()).hexdigest()[:17].upper()
    return {"UserId": user_id, "Account": req.state.account_id, "Arn": caller.arn}


OPERATIONS = {"AssumeRole": assume_role, "GetCallerIdentity": get_caller_identity}
