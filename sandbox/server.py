"""The HTTP front door: one port speaking SSM (JSON 1.1), STS and EC2 (Query + XML).

A request is routed by the service in its SigV4 credential scope
(`Credential=AKID/date/REGION/SERVICE/aws4_request`), falling back to `X-Amz-Target` and the
Query `Action`/`Version`. The region also comes from the scope; state is per region.
`/_sandbox/...` paths are the control API (control.py).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from . import control, ec2, ec2_xml, ssm_automation, ssm_documents, sts
from .errors import AwsError
from .protocol import parse_authorization, parse_form, unflatten, xml_document, xml_scalar
from .state import Request

log = logging.getLogger(__name__)

OPERATIONS = {
    "ssm": {**ssm_documents.OPERATIONS, **ssm_automation.OPERATIONS},
    "sts": sts.OPERATIONS,
    "ec2": ec2.OPERATIONS,
}
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
EXPIRED = {"ssm": "ExpiredTokenException", "sts": "ExpiredToken", "ec2": "RequestExpired"}
DEFAULT_REGION = "us-east-1"


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
    server_version = "DelegateSandbox/1.0"

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if url.path.startswith("/_sandbox/"):
            status, payload = control.handle(self.server.sandbox, self.command, url.path, url.query, body)
            self._send(status, json.dumps(payload, default=str).encode(), "application/json", "")
            return
        status, payload, content_type, request_id = dispatch(
            self.server.sandbox, self.headers, url.query, body
        )
        self._send(status, payload, content_type, request_id)

    def _send(self, status: int, payload: bytes, content_type: str, request_id: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if request_id:
            self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        self.wfile.write(payload)


def _route(headers, query: str, body: bytes) -> tuple[str, str, dict]:
    """(service, operation, params) of an AWS request."""
    _, _, service = parse_authorization(headers.get("Authorization"))
    target = headers.get("X-Amz-Target") or ""
    if service and service not in OPERATIONS:
        raise AwsError(
            "InvalidAction",
            f"The Delegate sandbox does not implement the {service} service "
            f"(it speaks {', '.join(sorted(OPERATIONS))}).",
        )
    if service is None and target.startswith("AmazonSSM."):
        service = "ssm"
    if service == "ssm":
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise AwsError("SerializationException", "The request body is not valid JSON.") from None
        if not isinstance(params, dict):
            raise AwsError("SerializationException", "The request body must be a JSON object.")
        return service, target.partition(".")[2], params
    form = parse_form(body, query)
    operation = form.pop("Action", "")
    version = form.pop("Version", "")
    if service is None:
        service = "sts" if operation in sts.OPERATIONS or version == "2011-06-15" else "ec2"
    if service == "ec2":
        return service, operation, ec2_xml.parse_request(operation, form)
    return service, operation, unflatten(form)


def dispatch(sandbox, headers, query: str, body: bytes) -> tuple[int, bytes, str, str]:
    """Run one AWS call: faults, identity, the operation; record it in `sandbox.calls`."""
    request_id = str(uuid.uuid4())
    access_key, region_name, scope_service = parse_authorization(headers.get("Authorization"))
    region_name = region_name or DEFAULT_REGION
    state = sandbox.state
    call = {
        "service": scope_service,
        "operation": None,
        "region": region_name,
        "params": None,
        "access_key_id": access_key,
        "session_name": None,
        "source_identity": None,
        "session_tags": [],
        "role_arn": None,
        "client_token": None,
        "aws_request_id": request_id,
        "time": time.time(),
        "error": None,
        "status": 200,
    }
    # Until routing succeeds, answer errors in the scope's protocol (JSON for SSM, XML otherwise).
    service = scope_service or "ssm"
    try:
        service, operation, params = _route(headers, query, body)
        call.update(
            service=service, operation=operation, params=params, client_token=params.get("ClientToken")
        )
        with state.lock:
            caller = sts.identify(state, access_key)
        call.update(
            session_name=caller.session_name,
            source_identity=caller.source_identity,
            session_tags=caller.session_tags,
            role_arn=caller.role_arn,
        )
        sandbox.faults.before_call(service, operation, region_name)
        handler = OPERATIONS[service].get(operation)
        if handler is None:
            raise AwsError(
                "InvalidAction",
                f"The action {operation or '(none)'} is not valid for this web "
                f"service: the Delegate sandbox does not implement {service} {operation}.",
            )
        if sts.is_expired(caller):
            raise AwsError(EXPIRED[service], "The security token included in the request is expired")
        if service == "ec2" and params.get("DryRun"):
            raise AwsError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
        with state.lock:
            region = state.region(region_name)
            req = Request(
                state, region, service, operation, params, caller, request_id, faults=sandbox.faults
            )
            result = handler(req)
            if not operation.startswith(("Describe", "List", "Get")):
                state.mark_dirty()
        status, payload, content_type = _success(service, operation, result, request_id)
    except AwsError as exc:
        status, payload, content_type = _error(service, exc, request_id)
        call["error"] = exc.code
    except Exception as exc:  # noqa: BLE001 - never an HTML 500: botocore must see an AWS-shaped error
        log.error("sandbox error in %s: %s", call["operation"], traceback.format_exc())
        error = AwsError("InternalServerError", f"Internal error in the Delegate sandbox: {exc!r}", 500)
        status, payload, content_type = _error(service, error, request_id)
        call["error"] = error.code
    call["status"] = status
    sandbox.calls.append(call)
    return status, payload, content_type, request_id


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
    if service == "ec2":
        return 200, ec2_xml.render(operation, result, request_id), "text/xml"
    body = (
        f"<{operation}Result>{_query_xml(result)}</{operation}Result>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
    )
    return 200, xml_document(f"{operation}Response", STS_NAMESPACE, body), "text/xml"


def _error(service: str, exc: AwsError, request_id: str) -> tuple[int, bytes, str]:
    if service == "ssm":
        # botocore reads the code only from __type; Message fills the modeled member (aws-api.md §1.1).
        body = {"__type": exc.code, "message": exc.message, "Message": exc.message}
        return exc.status, json.dumps(body).encode(), "application/x-amz-json-1.1"
    if service == "ec2":
        return exc.status, ec2_xml.render_error(exc.code, exc.message, request_id), "text/xml"
    kind = "Sender" if exc.sender else "Receiver"
    body = (
        f"<Error><Type>{kind}</Type><Code>{xml_scalar(exc.code)}</Code><Message>{xml_scalar(exc.message)}"
        f"</Message></Error><RequestId>{request_id}</RequestId>"
    )
    return exc.status, xml_document("ErrorResponse", STS_NAMESPACE, body), "text/xml"
