"""One parsed copy of each botocore data file per process, shared by every botocore Loader.

botocore caches what a Loader parsed on that Loader only, and moto makes several: one when
moto.ec2 is imported (it lists EC2's regions through a new boto3 Session), one per service
when its first backend is built, one for the response parser; the seeding and the engine's
boto3 sessions add theirs. Each parses the same multi-megabyte JSON again (the EC2 model takes
~0.2 s a time, four times at start-up). Loaders with the same search paths and extras now
share one cache, as botocore already shares a parsed model between the clients of one session
(callers treat those as read-only).
"""

from __future__ import annotations

from botocore import loaders

_caches: dict[tuple, dict] = {}


def install() -> None:
    """Idempotent; call before moto or any boto3 session loads a model."""
    if getattr(loaders.Loader.__init__, "_delegate_shared", False):
        return
    original = loaders.Loader.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        key = (tuple(self.search_paths), tuple(self.extras_types))
        self._cache = _caches.setdefault(key, {})

    __init__._delegate_shared = True
    loaders.Loader.__init__ = __init__
