"""The sandbox's own control API under /_sandbox/, for other processes, scripts and the demo.

GET  /_sandbox/health               200 "ok" once the seeded world is there (503 "seeding" before);
                                    URL, account, time scale, regions in use
GET  /_sandbox/calls                recorded calls (?operation=, ?service=, ?since=<index>)
POST /_sandbox/calls/clear          forget recorded calls
GET  /_sandbox/executions           execution snapshots (?region=)
GET  /_sandbox/executions/{id}      one snapshot, with RunsAs: the identity its steps act as
GET  /_sandbox/inventory            EC2 instances with state and state history (?region=)
GET  /_sandbox/faults               current fault knobs
POST /_sandbox/faults               set knobs: a JSON body with any of the knob names (faults.py)
POST /_sandbox/reset-faults         back to a well-behaved AWS
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs


def handle(sandbox, method: str, path: str, query: str, body: bytes) -> tuple[int, dict]:
    args = {k: v[0] for k, v in parse_qs(query).items()}
    route = (method, path.rstrip("/"))
    try:
        if route == ("GET", "/_sandbox/health"):
            # Ready means the demo world is there: a caller that waits for health may act on it.
            ready = sandbox.world_ready.is_set()
            return 200 if ready else 503, {
                "status": "ok" if ready else "seeding",
                "url": sandbox.url,
                "account_id": sandbox.state.account_id,
                "time_scale": sandbox.state.time_scale,
                "regions": sorted(sandbox.state.regions),
                "world": "ready" if ready else "seeding",
            }
        if route == ("GET", "/_sandbox/calls"):
            calls = sandbox.calls.snapshot()[int(args.get("since", 0)) :]
            calls = [
                c for c in calls if all(c.get(k) == args[k] for k in ("operation", "service") if k in args)
            ]
            return 200, {"calls": calls}
        if route == ("POST", "/_sandbox/calls/clear"):
            sandbox.calls.clear()
            return 200, {"cleared": True}
        if route == ("GET", "/_sandbox/executions"):
            return 200, {"executions": sandbox.executions(region=args.get("region"))}
        if method == "GET" and path.startswith("/_sandbox/executions/"):
            try:
                return 200, sandbox.execution(path.rstrip("/").rsplit("/", 1)[1])
            except KeyError as exc:
                return 404, {"error": str(exc)}
        if route == ("GET", "/_sandbox/inventory"):
            return 200, {"instances": sandbox.inventory(region=args.get("region"))}
        if route == ("GET", "/_sandbox/faults"):
            return 200, sandbox.faults.snapshot()
        if route == ("POST", "/_sandbox/faults"):
            sandbox.faults.apply(json.loads(body or b"{}"))
            return 200, sandbox.faults.snapshot()
        if route == ("POST", "/_sandbox/reset-faults"):
            sandbox.faults.reset()
            return 200, sandbox.faults.snapshot()
    except (ValueError, KeyError, TypeError) as exc:
        return 400, {"error": f"{type(exc).__name__}: {exc}"}
    return 404, {"error": f"no control endpoint {method} {path}", "see": __doc__}
