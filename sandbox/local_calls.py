"""In-process boto3 clients: their calls reach this sandbox's front door without a socket.

The sandbox's own calls (seeding the world, runbook steps) used to go out over HTTP to its
own port: a socket round trip, a server thread and a thread switch per call, which on a busy
machine made a two-step runbook wait on the scheduler. botocore's `before-send` event lets a
handler answer instead of the network, so the call still goes through botocore (parameter
validation, serialisation, retries, error parsing) and through `server.dispatch` (faults,
identity, call log, EC2 overrides, moto; `Sandbox.dispatch`), exactly as a call over HTTP would.
"""

from __future__ import annotations

import io
import weakref
from urllib.parse import urlsplit

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders


class _Body(io.BytesIO):
    """The raw response botocore reads (`stream()`, as urllib3's response offers)."""

    def stream(self, **_):
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


def attach(client, sandbox) -> None:
    """Answer this client's calls with `server.dispatch` on `sandbox`, in the calling thread.

    The client keeps only a weak reference: once that sandbox is gone its calls go to the
    network again (and find nothing there), as they did before.
    """
    target = weakref.ref(sandbox)

    def send(request, **_):
        sandbox = target()
        if sandbox is None:
            return None
        url = urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = body.read()
        headers = HTTPHeaders()
        for name, value in request.headers.items():
            headers[name] = value.decode() if isinstance(value, bytes) else value
        headers["Host"] = url.netloc
        status, response_headers, payload = sandbox.dispatch(request.method, url.path or "/", url.query, headers, body)
        out = HTTPHeaders()
        for name, value in response_headers:
            out[name] = value
        return AWSResponse(request.url, status, out, _Body(payload))

    client.meta.events.register("before-send", send)
