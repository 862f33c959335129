"""AWS calls made by runbook steps: boto3 against the sandbox itself, so they act on moto's state.

Steps run on the engine thread, which holds the state lock. Calls to moto go through boto3 to
the front door's `dispatch`, in this thread (local_calls.py: no socket round trip; the moto
path of the front door takes no state lock); calls to Delegate's own operations (the SSM
Automation and document APIs, STS AssumeRole) go straight to their handlers, which run under
that same (re-entrant) lock.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
import weakref

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError, UnknownServiceError

from . import local_calls
from .errors import AwsError
from .outcome import StepFailure

# The sandbox's own calls carry this access key, so the call log shows they came from a runbook step.
ENGINE_CREDENTIALS = {"aws_access_key_id": "AKIASANDBOXENGINE000", "aws_secret_access_key": "sandbox"}
_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=5, read_timeout=60)
_clients: dict[tuple, tuple] = {}  # (url, service, region) -> (client, weak ref to its sandbox)
_lock = threading.Lock()
_session: boto3.session.Session | None = None


def client(sandbox, service: str, region: str, access_key: str | None = None):
    """A cached boto3 client on the sandbox, answered in-process (one botocore session keeps the
    model cache warm). `access_key`: an STS session the sandbox issued (a multi-account child's
    execution role), so the call acts in that session's account."""
    global _session
    key = (sandbox.url, service, region, access_key)
    with _lock:
        cached = _clients.get(key)
        if cached is None or cached[1]() is not sandbox:  # a new sandbox may reuse a port
            if _session is None:
                _session = boto3.session.Session(**ENGINE_CREDENTIALS)
            keys = {"aws_access_key_id": access_key, "aws_secret_access_key": "sandbox"} if access_key else {}
            made = _session.client(service, endpoint_url=sandbox.url, region_name=region, config=_CONFIG, **keys)
            local_calls.attach(made, sandbox)
            cached = _clients[key] = (made, weakref.ref(sandbox))
        return cached[0]


def operation_name(api: str) -> str:
    """`describe_instances` or `DescribeInstances` -> `DescribeInstances` (runbooks use both)."""
    return "".join(part[:1].upper() + part[1:] for part in str(api).split("_"))


def plain(value):
    """A boto3 response as JSON-ready data: datetimes as ISO-8601 strings, streams read."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "read"):
        return value.read().decode("utf-8", "replace")
    return value


def call(ctx, service: str, api: str, params: dict) -> dict:
    """One AWS API call made by a step, as the execution's runner, against the sandbox."""
    from . import server  # the table of Delegate's own operations

    service = str(service).lower()
    operation = operation_name(api)
    sandbox = ctx.region.state.sandbox
    delegate = server.OPERATIONS.get(service, {}).get(operation)
    location = ctx.execution.get("_location")
    if delegate is not None and location:
        raise StepFailure(
            f"{service} {operation} from a multi-account child execution is not emulated by the Delegate "
            "sandbox (its SSM Automation and STS state is the central account's only)."
        )
    if delegate is not None:
        return _in_process(ctx, sandbox, delegate, service, operation, params)
    try:
        if location:  # as the execution role assumed in that account, in that Region
            aws = client(sandbox, service, location["Region"], ctx.execution.get("_access_key") or None)
        else:
            aws = client(sandbox, service, ctx.region.name)
    except UnknownServiceError:
        raise StepFailure(f"{service} is not an AWS service botocore knows, so the sandbox cannot call it.") from None
    model = aws.meta.service_model
    if operation not in model.operation_names:
        raise StepFailure(f"{service} has no API named {api} (botocore's {service} model has no {operation}).")
    method = getattr(aws, botocore.xform_name(operation))
    try:
        return plain(method(**params))
    except ParamValidationError as exc:
        raise StepFailure(f"Invalid input to {service} {operation}: {exc}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        if code in ("InvalidAction", "NotImplemented", "InternalFailure", "InternalServerError", "500", "501"):
            raise StepFailure(
                f"{service} {operation} is not emulated by the Delegate sandbox (moto answered {code}: "
                f"{message[:300]})."
            ) from None
        raise StepFailure(f"An error occurred ({code}) when calling the {operation} operation: {message}") from None
    except BotoCoreError as exc:
        raise StepFailure(f"{service} {operation} failed in the sandbox: {exc}") from None


def _in_process(ctx, sandbox, handler, service: str, operation: str, params: dict) -> dict:
    from . import executions
    from .state import Request

    state = ctx.region.state
    caller = executions.caller_of(ctx.execution)
    req = Request(state, ctx.region, service, operation, params, caller, str(uuid.uuid4()), faults=sandbox.faults)
    req.extra["sandbox"] = sandbox
    try:
        return plain(handler(req))
    except AwsError as exc:
        raise StepFailure(f"An error occurred ({exc.code}) when calling the {operation} operation: {exc.message}") from None
