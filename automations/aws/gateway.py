"""The AWS gateway: the only module that talks to AWS. boto3 only, no Django models.

Functions take plain values and return plain values, so services decide what a failure means
and tests can stub the clients (botocore Stubber) or point everything at the sandbox.
Endpoints come from AWS_ENDPOINT_URL_SSM / _STS / _EC2 (or AWS_ENDPOINT_URL), which botocore
reads itself, so the same code talks to AWS or the local sandbox.

Two kinds of session (docs/architecture.md; aws-api.md §11.1):
- every mutating call (start, stop, signal) gets a fresh AssumeRole whose RoleSessionName and
  SourceIdentity name the human who caused it; used once, never cached;
- read-only calls (status polling, catalog, inventory) share one cached, refreshing session
  per role and region, with a duration above botocore's 15-minute refresh window.
"""
from __future__ import annotations

import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

# Interactive and dispatch calls: a few quick attempts; the outbox handles longer waits.
# total_max_attempts counts attempts (max_attempts would count retries: aws-api.md §11.2).
MUTATING_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=5, read_timeout=20,
    user_agent_appid="delegate",
)
READ_CONFIG = Config(
    retries={"mode": "adaptive", "total_max_attempts": 6}, connect_timeout=5, read_timeout=20,
    user_agent_appid="delegate",
)
MUTATING_SESSION_SECONDS = 900
# Above botocore's 15-minute advisory refresh window, so a cached session does not re-assume per call.
READ_SESSION_SECONDS = 3600

# Retryable by putting the request back with a delay; anything else is permanent.
TRANSIENT_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "AutomationExecutionLimitExceededException", "InternalServerError", "ServiceUnavailable",
    "RequestTimeout", "PriorRequestNotComplete", "500", "502", "503", "504",
})


class AwsError(Exception):
    def __init__(self, code: str, message: str = "", *, aws_request_id: str = "", operation: str = ""):
        super().__init__(f"{code}: {message}" if message else code)
        self.code, self.message, self.aws_request_id = code, message, aws_request_id
        self.operation = operation  # the AWS operation that failed, e.g. "StartAutomationExecution"
        # Could AWS have acted although we saw a failure (a timeout or 5xx on some attempt)?
        # Set by the mutating calls; a retry with the same ClientToken is then the only safe move.
        self.maybe_accepted = False


class TransientAwsError(AwsError):
    """Throttled, over a quota, a 5xx or the network: try again later."""


class PermanentAwsError(AwsError):
    """Invalid parameters, missing document, access denied, ...: retrying will not help."""


@dataclass(frozen=True)
class AwsCall:
    """What an AWS call returned that the audit log needs to join to CloudTrail."""

    operation: str
    role_session_name: str = ""
    source_identity: str = ""
    aws_request_id: str = ""
    execution_id: str = ""
    assumed_role_arn: str = ""
    extra: dict = field(default_factory=dict)


_session_lock = threading.Lock()
_shared_session: botocore.session.Session | None = None

# Observers of every HTTP attempt (metrics) and the pacer called before each one goes on the
# wire (automations.aws.pacing). Installed once at start-up by automations.apps; the gateway itself
# knows nothing about Redis or Prometheus.
_response_observers: list = []
_pacer = None


def install_hooks(*, pacer=None, on_response=None) -> None:
    """pacer(service=, operation=, region=, role_arn=, attempt=) runs before every attempt;
    on_response(**botocore response-received kwargs) after it. Call before clients are made."""
    global _pacer
    if pacer is not None:
        _pacer = pacer
    if on_response is not None and on_response not in _response_observers:
        _response_observers.append(on_response)
        with _session_lock:
            sessions = [_shared_session] if _shared_session else []
        for session in sessions:
            session.register("response-received", on_response)


def _new_botocore_session() -> botocore.session.Session:
    session = botocore.session.get_session()
    for observer in _response_observers:
        session.register("response-received", observer)  # clients copy the session's handlers
    return session


def botocore_session() -> botocore.session.Session:
    """One process-wide botocore session: its loaded service models are the expensive part."""
    global _shared_session
    with _session_lock:
        if _shared_session is None:
            _shared_session = _new_botocore_session()
        return _shared_session


def custom_endpoint(service: str) -> str:
    """The endpoint botocore is told to use for `service` instead of AWS's own
    (AWS_ENDPOINT_URL_<SERVICE>, then AWS_ENDPOINT_URL), or "" when it talks to AWS.
    Pages use it to say that the AWS console does not know a sandbox's executions."""
    return (os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL") or "").strip()


def account_of(role_arn: str) -> str:
    """The account id in arn:aws:iam::ACCOUNT:role/NAME (pacing is per account and region)."""
    parts = role_arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def _paced(client, *, region: str, role_arn: str):
    """Run the pacer before every attempt of every call of this client, retries included."""
    service = client.meta.service_model.service_name

    def before_send(request, **kwargs):
        if _pacer is not None:
            operation = kwargs.get("event_name", "").rsplit(".", 1)[-1]
            attempt = (getattr(request, "context", None) or {}).get("retries", {}).get("attempt", 1)
            _pacer(service=service, operation=operation, region=region, role_arn=role_arn, attempt=attempt)

    client.meta.events.register("before-send", before_send)
    return client


def _attempt_log(client, operation: str) -> list[str]:
    """Classify each attempt of `operation` on this client: did AWS definitely not act on it?

    "refused": AWS answered 4xx (validated and refused: throttled, over quota, invalid), or the
    connection never opened. "unknown": a 5xx, a read timeout, a dropped connection: the request
    may have been carried out. botocore's retries hide all but the last attempt from the caller.
    """
    outcomes: list[str] = []

    def on_response(response_dict=None, exception=None, **kwargs):
        if exception is not None:
            outcomes.append("refused" if isinstance(exception, (EndpointConnectionError, ConnectTimeoutError))
                            or isinstance(exception, AwsError) else "unknown")
        elif response_dict is not None:
            outcomes.append("unknown" if response_dict.get("status_code", 0) >= 500 else
                            "refused" if response_dict.get("status_code", 0) >= 400 else "ok")

    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"response-received.{service_id}.{operation}", on_response)
    return outcomes


def reset_sessions() -> None:
    """Forget cached sessions (tests that change endpoints, and after fork)."""
    global _shared_session
    with _session_lock:
        _shared_session = None
        _sts_clients.clear()
    with _read_lock:
        _read_clients.clear()
        _read_sessions.clear()


def _client(service: str, region: str, *, credentials: dict | None = None, config: Config = MUTATING_CONFIG,
            role_arn: str = ""):
    kwargs = {"region_name": region, "config": config}
    if credentials:
        kwargs.update(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
    return _paced(botocore_session().create_client(service, **kwargs), region=region, role_arn=role_arn)


#
# Identity
#

_SOURCE_IDENTITY_UNSAFE = re.compile(r"[^A-Za-z0-9_=,.@-]")
_SESSION_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]")
_TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]")


def sts_source_identity(username: str) -> str:
    """A username mapped onto STS's SourceIdentity character set (the narrower SDK set, no '+')."""
    value = _SOURCE_IDENTITY_UNSAFE.sub("-", username)[:256]
    if value.lower().startswith("aws"):
        value = "u-" + value  # "aws:" is reserved; keep clear of it
    return value if len(value) >= 2 else (value + "--")[:2]


def role_session_name(*parts: str) -> str:
    """RoleSessionName: 2–64 characters of [\\w+=,.@-], naming the request and the human."""
    value = _SESSION_NAME_UNSAFE.sub("-", "-".join(p for p in parts if p))[:64]
    return value if len(value) >= 2 else (value + "--")[:2]


def session_tags(**tags: str) -> list[dict]:
    return [{"Key": key, "Value": _TAG_UNSAFE.sub("-", str(value))[:256]} for key, value in tags.items()]


@dataclass(frozen=True)
class AssumedSession:
    credentials: dict
    assumed_role_arn: str
    role_session_name: str
    source_identity: str
    aws_request_id: str


_sts_clients: dict[str, object] = {}


def _sts(region: str):
    """One STS client per region and process, on Delegate's own (base) credentials.

    Shared safely: it carries no requester. Who acts is in each AssumeRole call's RoleSessionName,
    SourceIdentity and tags, and the credentials it returns serve that one call only.
    """
    with _session_lock:
        client = _sts_clients.get(region)
    if client is None:
        client = _client("sts", region)
        with _session_lock:
            client = _sts_clients.setdefault(region, client)
    return client


def assume_role(*, region: str, role_arn: str, session_name: str, source_identity: str, tags: list[dict],
                duration: int = MUTATING_SESSION_SECONDS, sts_client=None) -> AssumedSession:
    """STS AssumeRole for one mutating call, naming the human in CloudTrail."""
    # https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
    sts = sts_client or _sts(region)
    response = _call(sts.assume_role, RoleArn=role_arn, RoleSessionName=session_name,
                     SourceIdentity=source_identity, Tags=tags, DurationSeconds=duration)
    return AssumedSession(
        credentials=response["Credentials"], assumed_role_arn=response["AssumedRoleUser"]["Arn"],
        role_session_name=session_name, source_identity=source_identity,
        aws_request_id=response.get("ResponseMetadata", {}).get("RequestId", ""),
    )


def _operation_name(method) -> str:
    client = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    mapping = getattr(getattr(client, "meta", None), "method_to_api_mapping", {}) or {}
    return mapping.get(name, name)


def _call(method, **kwargs):
    """Run one boto3 call and translate failures into Transient/Permanent errors."""
    operation = _operation_name(method)
    try:
        return method(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))[:500]
        request_id = exc.response.get("ResponseMetadata", {}).get("RequestId", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        transient = code in TRANSIENT_CODES or status >= 500
        raise (TransientAwsError if transient else PermanentAwsError)(
            code, message, aws_request_id=request_id, operation=operation) from exc
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise TransientAwsError(type(exc).__name__, str(exc)[:300], operation=operation) from exc
    except BotoCoreError as exc:
        # Other connection failures (reset, closed mid-response) are worth another try too.
        kind = TransientAwsError if "Connection" in type(exc).__name__ else PermanentAwsError
        raise kind(type(exc).__name__, str(exc)[:300], operation=operation) from exc


#
# Mutating calls: each under a fresh session naming its human
#

@dataclass(frozen=True)
class MutatingSession:
    """A fresh session naming its human and the SSM client on it, for one mutating call."""

    session: AssumedSession
    ssm: object
    timings_ms: dict = field(default_factory=dict)


def mutating_session(*, region: str, role_arn: str, session_name: str, source_identity: str, tags: list[dict],
                     sts_client=None, ssm_client=None) -> MutatingSession:
    """AssumeRole naming the human (RoleSessionName, SourceIdentity, tags) and the SSM client on it.

    Separate from the call so a dispatch can make it while its read checks are in flight; it is
    used for exactly one call and then dropped, like the one start_automation makes itself."""
    began = time.perf_counter()
    session = assume_role(region=region, role_arn=role_arn, session_name=session_name,
                          source_identity=source_identity, tags=tags, sts_client=sts_client)
    assumed = time.perf_counter()
    ssm = ssm_client or _client("ssm", region, credentials=session.credentials, role_arn=role_arn)
    return MutatingSession(session=session, ssm=ssm, timings_ms={
        "assume_role": (assumed - began) * 1000, "client": (time.perf_counter() - assumed) * 1000})


def start_automation(
    *, region: str, role_arn: str, session_name: str = "", source_identity: str = "", tags: list[dict] | None = None,
    body: dict, client_token: uuid.UUID | str, execution_tags: list[dict] | None = None,
    sts_client=None, ssm_client=None, prepared: MutatingSession | None = None,
) -> AwsCall:
    """Start an execution with `body` (built by automations.runbooks.start_body, the same function the
    preview page shows), adding the request's fixed ClientToken and the execution tags.

    `prepared`: the session mutating_session() made for this call; otherwise it is made here."""
    if prepared is not None and session_name and prepared.session.role_session_name != session_name:
        raise ValueError("the prepared session names someone else")  # a bug, never an AWS answer
    if prepared is None:
        prepared = mutating_session(region=region, role_arn=role_arn, session_name=session_name,
                                    source_identity=source_identity, tags=tags or [], sts_client=sts_client,
                                    ssm_client=ssm_client)
    session, ssm = prepared.session, prepared.ssm
    attempts = _attempt_log(ssm, "StartAutomationExecution")
    made = time.perf_counter()
    # https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_StartAutomationExecution.html
    kwargs = {
        **body,
        # botocore does not fill this in for this operation; ours is fixed per request.
        "ClientToken": str(client_token),
    }
    if execution_tags:
        kwargs["Tags"] = execution_tags[:5]  # SSM accepts at most 5 tags at start
    try:
        response = _call(ssm.start_automation_execution, **kwargs)
    except AwsError as error:
        error.maybe_accepted = "unknown" in attempts
        raise
    return AwsCall(
        operation="StartAutomationExecution", role_session_name=session.role_session_name,
        source_identity=session.source_identity, aws_request_id=response.get("ResponseMetadata", {}).get("RequestId", ""),
        execution_id=response["AutomationExecutionId"], assumed_role_arn=session.assumed_role_arn,
        # For the dispatch's log line (never audited): where this call's time went.
        extra={"timings_ms": {**prepared.timings_ms, "start_call": (time.perf_counter() - made) * 1000}},
    )


def stop_automation(*, region: str, role_arn: str, session_name: str, source_identity: str, tags: list[dict],
                    execution_id: str, sts_client=None, ssm_client=None) -> AwsCall:
    session = assume_role(region=region, role_arn=role_arn, session_name=session_name,
                          source_identity=source_identity, tags=tags, sts_client=sts_client)
    ssm = ssm_client or _client("ssm", region, credentials=session.credentials, role_arn=role_arn)
    # https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_StopAutomationExecution.html
    response = _call(ssm.stop_automation_execution, AutomationExecutionId=execution_id, Type="Cancel")
    return AwsCall(
        operation="StopAutomationExecution", role_session_name=session.role_session_name,
        source_identity=session.source_identity, aws_request_id=response.get("ResponseMetadata", {}).get("RequestId", ""),
        execution_id=execution_id, assumed_role_arn=session.assumed_role_arn,
    )


def send_signal(*, region: str, role_arn: str, session_name: str, source_identity: str, tags: list[dict],
                execution_id: str, signal: str, payload: dict | None = None, sts_client=None, ssm_client=None) -> AwsCall:
    session = assume_role(region=region, role_arn=role_arn, session_name=session_name,
                          source_identity=source_identity, tags=tags, sts_client=sts_client)
    ssm = ssm_client or _client("ssm", region, credentials=session.credentials, role_arn=role_arn)
    # https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendAutomationSignal.html
    kwargs = {"AutomationExecutionId": execution_id, "SignalType": signal}
    if payload:
        kwargs["Payload"] = payload
    response = _call(ssm.send_automation_signal, **kwargs)
    return AwsCall(
        operation="SendAutomationSignal", role_session_name=session.role_session_name,
        source_identity=session.source_identity, aws_request_id=response.get("ResponseMetadata", {}).get("RequestId", ""),
        execution_id=execution_id, assumed_role_arn=session.assumed_role_arn,
    )


#
# Read-only calls: one cached, refreshing session per role and region
#

_read_clients: dict[tuple[str, str, str], object] = {}
_read_sessions: dict[str, botocore.session.Session] = {}
_read_lock = threading.Lock()
READ_SESSION_NAME = "delegate-reader"


def _read_session(role_arn: str) -> botocore.session.Session:
    """One refreshing assumed-role session per role, shared by every service and region.

    AssumeRole runs on first use and then only when fewer than 15 minutes remain (botocore's
    advisory window), i.e. about every 45 minutes with DurationSeconds=3600 (aws-api.md §11.1).
    """
    session = _read_sessions.get(role_arn)
    if session is None:
        base = botocore_session()
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=base.create_client,
            source_credentials=base.get_credentials(),
            role_arn=role_arn,
            extra_args={"RoleSessionName": READ_SESSION_NAME, "DurationSeconds": READ_SESSION_SECONDS},
        )
        credentials = DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method="assume-role")
        session = _new_botocore_session()
        session._credentials = credentials  # the documented-by-practice recipe (aws-api.md §11.1, option A)
        _read_sessions[role_arn] = session
    return session


def read_client(service: str, *, region: str, role_arn: str):
    """A client on the shared read-only session; botocore refreshes the credentials itself."""
    key = (service, region, role_arn)
    with _read_lock:
        cached = _read_clients.get(key)
        if cached is not None:
            return cached
        session = _read_session(role_arn)
        client = boto3.Session(botocore_session=session, region_name=region).client(service, config=READ_CONFIG)
        _read_clients[key] = _paced(client, region=region, role_arn=role_arn)
        return _read_clients[key]


def read_clients_ready(*, region: str, role_arn: str, services: tuple[str, ...]) -> None:
    """Make (or find) these read clients and refresh the read session's credentials if due, in the
    calling thread, so threads that then share the clients never create or refresh anything on a
    botocore session at the same time as another (botocore sessions are not thread-safe)."""
    for service in services:
        read_client(service, region=region, role_arn=role_arn)
    with _read_lock:
        session = _read_session(role_arn)
    session.get_credentials().get_frozen_credentials()  # AssumeRole now if the cached one is due


def warm(*, regions: list[str], read_roles: list[str]) -> list[str]:
    """Do at worker start what a worker's first dispatch would otherwise pay for: load the STS, SSM
    and EC2 service models, make the STS clients, and assume the shared read-only session of each
    role (what the target and content checks use). Mutating calls still assume a fresh session
    naming their requester each time: that cannot be done ahead. Returns the AWS errors met (a
    worker that cannot reach AWS yet still starts; the first dispatch then pays, as before).
    """
    problems: list[str] = []
    session = botocore_session()
    for region in regions:
        _sts(region)
        for service in ("ssm", "ec2"):
            session.create_client(service, region_name=region, config=MUTATING_CONFIG)  # models, endpoint rules
    for role_arn in read_roles:
        try:
            with _read_lock:
                read_session = _read_session(role_arn)
            credentials = read_session.get_credentials()
            credentials.get_frozen_credentials()  # the AssumeRole, now
        except (BotoCoreError, ClientError) as error:
            problems.append(f"{role_arn}: {type(error).__name__}")
        for region in regions:
            read_client("ssm", region=region, role_arn=role_arn)
            read_client("ec2", region=region, role_arn=role_arn)
    return problems


def describe_executions(*, region: str, role_arn: str, execution_ids: list[str], ssm_client=None) -> list[dict]:
    """Metadata for many executions, 10 ids per DescribeAutomationExecutions call (its filter limit)."""
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    found: list[dict] = []
    for start in range(0, len(execution_ids), 10):
        batch = execution_ids[start:start + 10]
        kwargs = {"Filters": [{"Key": "ExecutionId", "Values": batch}], "MaxResults": 50}
        while True:
            response = _call(ssm.describe_automation_executions, **kwargs)
            found.extend(response.get("AutomationExecutionMetadataList", []))
            if not response.get("NextToken"):
                break
            kwargs["NextToken"] = response["NextToken"]
    return found


def get_execution(*, region: str, role_arn: str, execution_id: str, ssm_client=None) -> dict:
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    return _call(ssm.get_automation_execution, AutomationExecutionId=execution_id)["AutomationExecution"]


def step_executions(*, region: str, role_arn: str, execution_id: str, ssm_client=None) -> list[dict]:
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    steps: list[dict] = []
    kwargs = {"AutomationExecutionId": execution_id, "MaxResults": 50}
    while True:
        response = _call(ssm.describe_automation_step_executions, **kwargs)
        steps.extend(response.get("StepExecutions", []))
        if not response.get("NextToken"):
            return steps
        kwargs["NextToken"] = response["NextToken"]


def list_automation_documents(*, region: str, role_arn: str, owner: str, ssm_client=None) -> list[dict]:
    """ListDocuments for Automation runbooks of one owner kind: Self, Amazon or Private (shared with me)."""
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    documents: list[dict] = []
    kwargs = {"Filters": [{"Key": "Owner", "Values": [owner]}, {"Key": "DocumentType", "Values": ["Automation"]}],
              "MaxResults": 50}
    while True:
        response = _call(ssm.list_documents, **kwargs)
        documents.extend(response.get("DocumentIdentifiers", []))
        if not response.get("NextToken"):
            return documents
        kwargs["NextToken"] = response["NextToken"]


def list_document_versions(*, region: str, role_arn: str, name: str, ssm_client=None) -> list[dict]:
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    versions: list[dict] = []
    kwargs = {"Name": name, "MaxResults": 50}
    while True:
        response = _call(ssm.list_document_versions, **kwargs)
        versions.extend(response.get("DocumentVersions", []))
        if not response.get("NextToken"):
            return versions
        kwargs["NextToken"] = response["NextToken"]


def get_document(*, region: str, role_arn: str, name: str, version: str, ssm_client=None) -> dict:
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    return _call(ssm.get_document, Name=name, DocumentVersion=version)


def describe_document(*, region: str, role_arn: str, name: str, version: str, ssm_client=None) -> dict:
    """DescribeDocument of one exact version (never $DEFAULT/$LATEST: the hash must be of what runs)."""
    # https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeDocument.html
    if not str(version).isdigit():
        raise ValueError(f"describe_document needs an explicit version number, not {version!r}")
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    return _call(ssm.describe_document, Name=name, DocumentVersion=str(version))["Document"]


def document_hash(*, region: str, role_arn: str, name: str, version: str, ssm_client=None) -> tuple[str, str]:
    """(Hash, HashType) SSM reports for this exact version of a document."""
    document = describe_document(region=region, role_arn=role_arn, name=name, version=version, ssm_client=ssm_client)
    return str(document.get("Hash", "")), str(document.get("HashType", ""))


def describe_instances(*, region: str, role_arn: str, instance_ids: list[str] | None = None,
                       filters: list[dict] | None = None, ec2_client=None) -> list[dict]:
    """EC2 instances (flattened out of reservations) with their tags as a dict."""
    ec2 = ec2_client or read_client("ec2", region=region, role_arn=role_arn)
    kwargs: dict = {}
    if instance_ids:
        kwargs["InstanceIds"] = instance_ids
    if filters:
        kwargs["Filters"] = filters
    instances = []
    while True:
        response = _call(ec2.describe_instances, **kwargs)
        for reservation in response.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                instances.append({
                    "id": instance["InstanceId"],
                    "state": instance.get("State", {}).get("Name", ""),
                    "type": instance.get("InstanceType", ""),
                    "tags": {tag["Key"]: tag.get("Value", "") for tag in instance.get("Tags", [])},
                })
        if not response.get("NextToken"):
            return instances
        kwargs["NextToken"] = response["NextToken"]


# EC2 describe call, its id argument, its result key and id key, per resource kind.
_EC2_KINDS = {
    "volume": ("describe_volumes", "VolumeIds", "Volumes", "VolumeId"),
    "snapshot": ("describe_snapshots", "SnapshotIds", "Snapshots", "SnapshotId"),
    "image": ("describe_images", "ImageIds", "Images", "ImageId"),
    "security_group": ("describe_security_groups", "GroupIds", "SecurityGroups", "GroupId"),
    "subnet": ("describe_subnets", "SubnetIds", "Subnets", "SubnetId"),
    "vpc": ("describe_vpcs", "VpcIds", "Vpcs", "VpcId"),
}


def describe_ec2_resources(kind: str, *, region: str, role_arn: str, ids: list[str] | None = None,
                           filters: list[dict] | None = None, ec2_client=None) -> list[dict]:
    """Volumes, snapshots, images, security groups, subnets or VPCs as {"id", "state", "tags"}
    (security groups have no state: ""); instances use describe_instances."""
    if kind == "instance":
        return describe_instances(region=region, role_arn=role_arn, instance_ids=ids, filters=filters,
                                  ec2_client=ec2_client)
    operation, id_argument, result_key, id_key = _EC2_KINDS[kind]
    ec2 = ec2_client or read_client("ec2", region=region, role_arn=role_arn)
    kwargs: dict = {}
    if ids:
        kwargs[id_argument] = ids
    if filters:
        kwargs["Filters"] = filters
    if kind == "snapshot":
        kwargs["OwnerIds"] = ["self"]
    elif kind == "image":
        kwargs["Owners"] = ["self"]  # DescribeImages names it Owners (OwnerIds is DescribeSnapshots')
    response = _call(getattr(ec2, operation), **kwargs)
    return [
        {"id": item[id_key], "state": item.get("State", ""),
         "tags": {tag["Key"]: tag.get("Value", "") for tag in item.get("Tags", [])}}
        for item in response.get(result_key, [])
    ]


def stack_tags(*, region: str, role_arn: str, stack: str, cfn_client=None) -> dict[str, str] | None:
    """A CloudFormation stack's tags (by name or ARN); None when it does not exist or was deleted."""
    cfn = cfn_client or read_client("cloudformation", region=region, role_arn=role_arn)
    try:
        stacks = _call(cfn.describe_stacks, StackName=stack).get("Stacks", [])
    except PermanentAwsError as error:
        if error.code == "ValidationError":  # CloudFormation's answer for "Stack with id … does not exist"
            return None
        raise
    live = [item for item in stacks if item.get("StackStatus") != "DELETE_COMPLETE"]
    if not live:
        return None
    return {tag["Key"]: tag.get("Value", "") for tag in live[0].get("Tags", [])}
