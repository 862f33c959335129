"""The bridge to moto: every AWS call the sandbox does not own goes to moto's WSGI dispatcher.

moto (https://github.com/getmoto/moto) models hundreds of AWS APIs. Its server mode is a WSGI
application (`DomainDispatcherApplication`) that picks the service from the SigV4 credential
scope, exactly like our front door; we hand it the request as a WSGI environ instead of
running a second HTTP server, so there is one port and one process.

moto keeps its state in module-level backends: one moto world per process. `reset()` empties
it (every Sandbox start does, then seeds); see app.py for what happens with nested sandboxes.
"""

from __future__ import annotations

import io
import os
import threading

from . import model_cache

model_cache.install()  # before moto (or any boto3 session) parses a botocore model

# moto loads thousands of Amazon-owned AMIs per region by default, which makes DescribeImages take
# seconds and costs ~100 MB; the world seeds the one base image it needs (world.py).
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

_app = None
_app_lock = threading.Lock()


def application():
    """The moto WSGI dispatcher (imported lazily: it pulls in Flask and moto's core)."""
    global _app
    with _app_lock:
        if _app is None:
            from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

            _app = DomainDispatcherApplication(create_backend_app)
        return _app


def call(
    method: str, path: str, query: str, headers, body: bytes, host: str, account_id: str | None = None
) -> tuple[int, list, bytes]:
    """One request through moto: (status, headers, body), in `account_id`'s backends.

    moto keeps one backend per account; it picks the account from `x-moto-account-id`, which the
    front door sets from the caller's identity (a header a client sent itself is dropped)."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": _unquote_path(path),
        "RAW_URI": path + (f"?{query}" if query else ""),
        "REQUEST_URI": path + (f"?{query}" if query else ""),
        "QUERY_STRING": query,
        "SERVER_NAME": host.split(":")[0],
        "SERVER_PORT": host.partition(":")[2] or "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key not in ("CONTENT_LENGTH", "X_MOTO_ACCOUNT_ID"):
            environ["HTTP_" + key] = value
    environ.setdefault("HTTP_HOST", host)
    if account_id:
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = account_id
    captured: dict = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = response_headers
        return lambda data: None

    chunks = application()(environ, start_response)
    try:
        payload = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return captured["status"], captured["headers"], payload


def _unquote_path(path: str) -> str:
    # WSGI's PATH_INFO is the decoded path, as werkzeug's own server passes it (S3 keys need it).
    from urllib.parse import unquote

    return unquote(path, encoding="latin-1")


# Whether moto's world is exactly as seeded: a new Sandbox then reuses it instead of seeding
# again (seeding costs about a second; the sandbox's own tests start ~100 sandboxes).
_world = {"seeded": False, "dirty": True, "generation": 0}
READ_ONLY_PREFIXES = ("Describe", "List", "Get", "Head", "GET ", "HEAD ")


def note_call(operation: str) -> None:
    """Any call that may change moto's state makes the seeded world dirty."""
    if not operation.startswith(READ_ONLY_PREFIXES):
        _world["dirty"] = True


def world_is_pristine() -> bool:
    return _world["seeded"] and not _world["dirty"]


def mark_seeded() -> None:
    _world.update(seeded=True, dirty=False)


def reset() -> None:
    """Forget every moto resource in every account and region (moto's own /moto-api/reset)."""
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    _world.update(seeded=False, dirty=True, generation=_world["generation"] + 1)


def generation() -> int:
    """Bumped by every reset: what was seeded lazily before it is gone (world.py)."""
    return _world["generation"]


def ec2_backend(account_id: str, region: str):
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region]
