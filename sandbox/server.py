"""The HTTP front door: one port; Delegate's own APIs here, every other AWS call to moto.

A request is routed by the service in its SigV4 credential scope
(`Credential=AKID/date/REGION/SERVICE/aws4_request`), falling back to `X-Amz-Target` and the
Query `Action`. Delegate answers the SSM document and Automation APIs (ssm_documents.py,
ssm_automation.py) and STS AssumeRole / GetCallerIdentity (sts.py, which validates
SourceIdentity and session tags as AWS does and remembers the session behind each key);
everything else (EC2, IAM, S3, RDS, SQS, Auto Scaling, CloudFormation, Lambda, other SSM and
STS calls...) goes to moto's backends in this process (moto_bridge.py). Faults, expiry of our
STS sessions and the call log apply to both. `/_sandbox/...` paths are the control API.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from . import change_calendar, control, execution_preview, moto_bridge, ssm_automation, ssm_documents, sts, world
from .errors import AwsError
from .protocol import parse_authorization, parse_form, unflatten, xml_document, xml_scalar
from .state import Request

log = logging.getLogger(__name__)

# Delegate's own operations; any other call goes to moto.
OPERATIONS = {
    "ssm": {**ssm_documents.OPERATIONS, **ssm_automation.OPERATIONS, **change_calendar.OPERATIONS,
            **execution_preview.OPERATIONS},
    # moto's AssumeRole accepts any SourceIdentity and session tags and forgets who the session
    # was; Delegate's audit trail depends on both, so these two STS calls stay ours (sts.py).
    "sts": sts.OPERATIONS,
}
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
EC2_NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
EXPIRED = {"ssm": "ExpiredTokenException", "sts": "ExpiredToken", "ec2": "RequestExpired"}
DEFAULT_REGION = "us-east-1"
# EC2 calls whose instance states the sandbox paces in time (inventory.Transitions).
STATE_CALLS = {"StartInstances", "StopInstances", "TerminateInstances", "ModifyInstanceAttribute"}
REST_XML_SERVICES = {"s3", "s3control", "route53", "cloudfront"}


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, sandbox):
        super().__init__(address, Handler)
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    # Keep-alive connections outlive serve_forever(); remember them so stop() can close them
    # and a pooled client cannot keep talking to a stopped sandbox.
    def get_request(self):
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    # Headers and body go out as two writes; without TCP_NODELAY, Nagle plus delayed ACKs add
    # ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server_version = "DelegateSandbox/2.0"

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if url.path.startswith("/_sandbox/"):
            status, payload = control.handle(self.server.sandbox, self.command, url.path, url.query, body)
            self._send(status, [("Content-Type", "application/json")], json.dumps(payload, default=str).encode())
            return
        status, headers, payload = dispatch(
            self.server.sandbox, self.command, url.path or "/", url.query, self.headers, body
        )
        self._send(status, headers, payload)

    def _send(self, status: int, headers: list, payload: bytes):
        self.send_response(status)
        seen = set()
        for name, value in headers:
            if name.lower() in ("content-length", "transfer-encoding", "connection", "server", "date"):
                continue
            seen.add(name.lower())
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def _operation(service: str | None, method: str, path: str, query: str, headers, body: bytes):
    """(service, operation, params, protocol) as far as the front door needs to know them."""
    target = headers.get("X-Amz-Target") or ""
    content_type = headers.get("Content-Type") or ""
    if service is None and target.startswith("AmazonSSM."):
        service = "ssm"
    if target:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        return service, target.partition(".")[2], params if isinstance(params, dict) else {}, "json"
    if "x-www-form-urlencoded" in content_type or (method == "POST" and not content_type and body[:7] == b"Action="):
        form = parse_form(body, query)
        operation = form.pop("Action", "")
        version = form.pop("Version", "")
        if service is None:
            service = "sts" if operation in sts.OPERATIONS or version == "2011-06-15" else None
        return service, operation, form, "ec2" if service == "ec2" else "query"
    if "Action=" in query and service in ("ec2", "sts", None):
        form = parse_form(b"", query)
        return service, form.pop("Action", ""), form, "ec2" if service == "ec2" else "query"
    protocol = "rest-xml" if service in REST_XML_SERVICES else "rest-json"
    return service, f"{method} {path}", None, protocol


def dispatch(sandbox, method: str, path: str, query: str, headers, body: bytes) -> tuple[int, list, bytes]:
    """Run one AWS call: faults, identity, then Delegate's operation or moto; record it in `sandbox.calls`."""
    request_id = str(uuid.uuid4())
    access_key, region_name, scope_service = parse_authorization(headers.get("Authorization"))
    region_name = region_name or DEFAULT_REGION
    state = sandbox.state
    service, operation, params, protocol = _operation(scope_service, method, path, query, headers, body)
    delegate = OPERATIONS.get(service or "", {}).get(operation) if protocol in ("json", "query") else None
    if service in ("ssm", "sts") and delegate is not None:
        params = params if protocol == "json" else unflatten(params)
    caller = sts.identify(state, access_key)  # a dict read: no state lock (see Engine and actions)
    call = {
        "service": service,
        "operation": operation,
        "region": region_name,
        "params": params,
        "access_key_id": access_key,
        "session_name": caller.session_name,
        "source_identity": caller.source_identity,
        "session_tags": caller.session_tags,
        "role_arn": caller.role_arn,
        "client_token": (params or {}).get("ClientToken") if isinstance(params, dict) else None,
        "aws_request_id": request_id,
        "time": time.time(),
        "error": None,
        "status": 200,
        "emulated_by": "delegate" if delegate else "moto",
    }
    try:
        sandbox.faults.before_call(service or "", operation, region_name)
        if sts.is_expired(caller):
            raise AwsError(EXPIRED.get(service or "", "ExpiredTokenException"), "The security token included in the request is expired")
        if delegate is not None:
            status, response_headers, payload = _delegate(sandbox, delegate, service, operation, params, caller, region_name, request_id)
        else:
            account = _account_of(sandbox, caller, access_key, headers)
            if service == "organizations":
                world.ensure_organization(sandbox)
            if account != state.account_id:
                world.ensure_member(sandbox, account)
            status, response_headers, payload = _moto(
                sandbox, method, path, query, headers, body, service, operation, params, region_name, account
            )
            if status >= 400:
                call["error"] = _error_code(payload) or str(status)
    except AwsError as exc:
        status, response_headers, payload = _error(protocol, service, exc, request_id)
        call["error"] = exc.code
    except NotImplementedError as exc:  # moto's way of saying it does not model something
        error = _not_emulated(service, operation, exc)
        status, response_headers, payload = _error(protocol, service, error, request_id)
        call["error"] = error.code
    except Exception as exc:  # noqa: BLE001 - never an HTML 500: botocore must see an AWS-shaped error
        log.error("sandbox error in %s %s: %s", service, operation, traceback.format_exc())
        error = AwsError("InternalServerError", f"Internal error in the Delegate sandbox: {exc!r}", 500)
        status, response_headers, payload = _error(protocol, service, error, request_id)
        call["error"] = error.code
    call["status"] = status
    sandbox.calls.append(call)
    if not any(name.lower() in ("x-amzn-requestid", "x-amz-request-id") for name, _ in response_headers):
        response_headers = [*response_headers, ("x-amzn-RequestId", request_id)]
    return status, response_headers, payload


def _not_emulated(service, operation, exc: NotImplementedError) -> AwsError:
    detail = str(exc)
    if "Filter dicts have not been implemented" in detail:
        name = detail.split("'")[1] if "'" in detail else "?"
        return AwsError(
            "InvalidParameterValue",
            f"The filter '{name}' is invalid or not emulated by the Delegate sandbox (moto: {detail.split('. Feel')[0]}).",
        )
    return AwsError(
        "InvalidAction",
        f"The action {operation or '(none)'} is not valid for this web service: the Delegate sandbox "
        f"does not emulate {service} {operation} (moto: {detail.split('. Feel')[0]}).",
    )


def _delegate(sandbox, handler, service, operation, params, caller, region_name, request_id):
    state = sandbox.state
    with state.lock:
        region = state.region(region_name)
        req = Request(state, region, service, operation, params, caller, request_id, faults=sandbox.faults)
        req.extra["sandbox"] = sandbox
        result = handler(req)
        if not operation.startswith(("Describe", "List", "Get")):
            state.mark_dirty()
    status, payload, content_type = _success(service, operation, result, request_id)
    return status, [("Content-Type", content_type)], payload


def _instance_ids(operation: str, form: dict) -> list[str]:
    if operation == "ModifyInstanceAttribute":
        changes_type = "InstanceType.Value" in form or form.get("Attribute") == "instanceType"
        return [form["InstanceId"]] if changes_type and form.get("InstanceId") else []
    return [v for k, v in form.items() if re.fullmatch(r"InstanceId\.\d+", k)]


def _account_of(sandbox, caller, access_key: str | None, headers) -> str:
    """The account a call acts in: an assumed-role session's account, else the central one.
    The seeding key may name a member account (world.py seeds the organization's members)."""
    if caller.session:
        return caller.session["Account"]
    if access_key == world.SELF_CREDENTIALS["aws_access_key_id"] and headers.get(world.SEED_ACCOUNT_HEADER):
        return headers.get(world.SEED_ACCOUNT_HEADER)
    return sandbox.state.account_id


def _moto(sandbox, method, path, query, headers, body, service, operation, params, region_name, account=None):
    transitions = sandbox.transitions
    watched: list[str] = []
    before: dict = {}
    account = account or sandbox.state.account_id
    # Timed instance transitions and the EC2 refusals are modelled for the central account only;
    # in member accounts moto's own (immediate) EC2 behaviour applies (sandbox/README.md).
    if service == "ec2" and account == sandbox.state.account_id:
        transitions.settle()
        # EC2 refuses DescribeInstances MaxResults outside 5..1000 (the CLI sends 1000); moto takes anything.
        max_results = (params or {}).get("MaxResults")
        if operation == "DescribeInstances" and max_results and not 5 <= int(max_results) <= 1000:
            raise AwsError(
                "InvalidParameterValue",
                f"Value ( {max_results} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.",
            )
        if operation == "AttachVolume":
            _refuse_attached_volume(sandbox, region_name, (params or {}).get("VolumeId", ""))
        if operation in STATE_CALLS and (params or {}).get("DryRun", "false").lower() != "true":
            watched = _instance_ids(operation, params or {})
            refusal = transitions.before(region_name, operation, watched)
            if refusal:
                raise AwsError("IncorrectInstanceState", refusal)
            before = transitions.states(region_name, watched)
    host = headers.get("Host") or f"{sandbox.host}:{sandbox.port}"
    seeding = parse_authorization(headers.get("Authorization"))[0] == world.SELF_CREDENTIALS["aws_access_key_id"]
    if not seeding and not sandbox.world_ready.wait(120):
        raise AwsError("ServiceUnavailable", "The Delegate sandbox is still seeding its AWS world.", 503)
    moto_bridge.note_call(operation)
    status, response_headers, payload = moto_bridge.call(method, path, query, headers, body, host, account)
    if watched and status < 400 and operation != "ModifyInstanceAttribute":
        transitions.after(region_name, operation, watched, before)
    return status, response_headers, payload


def _refuse_attached_volume(sandbox, region_name: str, volume_id: str) -> None:
    """moto re-attaches a volume that is in use, silently detaching it; EC2 says VolumeInUse."""
    volume = moto_bridge.ec2_backend(sandbox.state.account_id, region_name).volumes.get(volume_id)
    if volume is not None and volume.attachment is not None:
        raise AwsError(
            "VolumeInUse", f"{volume_id} is already attached to an instance ({volume.attachment.instance.id})"
        )


_CODE = re.compile(rb"<Code>([^<]+)</Code>")


def _error_code(payload: bytes) -> str | None:
    match = _CODE.search(payload[:2000])
    if match:
        return match.group(1).decode()
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    code = data.get("__type") or data.get("code") or data.get("Code") if isinstance(data, dict) else None
    return str(code).rpartition("#")[2] if code else None


def _query_xml(value) -> str:
    """Query-protocol (STS) result members: elements named as the members, lists as <member>."""
    if isinstance(value, dict):
        return "".join(f"<{k}>{_query_xml(v)}</{k}>" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "".join(f"<member>{_query_xml(v)}</member>" for v in value)
    return xml_scalar(value)


def _success(service: str, operation: str, result: dict, request_id: str) -> tuple[int, bytes, str]:
    if service == "ssm":
        return 200, json.dumps(result, default=str).encode(), "application/x-amz-json-1.1"
    body = (
        f"<{operation}Result>{_query_xml(result)}</{operation}Result>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
    )
    return 200, xml_document(f"{operation}Response", STS_NAMESPACE, body), "text/xml"


def _error(protocol: str, service: str | None, exc: AwsError, request_id: str) -> tuple[int, list, bytes]:
    """An AWS-shaped error in the request's own protocol (faults and Delegate's operations)."""
    code, message = xml_scalar(exc.code), xml_scalar(exc.message)
    if protocol in ("json", "rest-json"):
        # botocore reads the code only from __type; Message fills the modeled member (aws-api.md §1.1).
        body = {"__type": exc.code, "message": exc.message, "Message": exc.message}
        content_type = "application/x-amz-json-1.1" if protocol == "json" else "application/json"
        return exc.status, [("Content-Type", content_type), ("x-amzn-ErrorType", exc.code)], json.dumps(body).encode()
    if protocol == "ec2":
        text = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
        return exc.status, [("Content-Type", "text/xml")], text.encode()
    if protocol == "rest-xml":
        text = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{request_id}</RequestId></Error>"
        )
        return exc.status, [("Content-Type", "application/xml")], text.encode()
    kind = "Sender" if exc.sender else "Receiver"
    body = (
        f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}"
        f"</Message></Error><RequestId>{request_id}</RequestId>"
    )
    return exc.status, [("Content-Type", "text/xml")], xml_document("ErrorResponse", STS_NAMESPACE, body)
