"""Helpers for the security sweeps: every URL pattern the project serves, and how to fill it in."""
from __future__ import annotations

import re
from dataclasses import dataclass

from django.urls import URLResolver, get_resolver

_PARAM = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "requests/<int:pk>/approve/"
    name: str | None  # "automations:request_approve"

    @property
    def params(self) -> list[str]:
        return [m.group("name") for m in _PARAM.finditer(self.template)]

    @property
    def is_api(self) -> bool:
        return self.template.startswith("api/")

    def url(self, **values) -> str:
        missing = set(self.params) - set(values)
        if missing:
            raise KeyError(f"{self.template}: no value for {sorted(missing)}")
        return "/" + _PARAM.sub(lambda m: str(values[m.group("name")]), self.template)


def _walk(patterns, prefix: str = "", namespace: str | None = None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
        else:
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            yield Route(prefix + str(pattern.pattern), name)


def project_routes() -> list[Route]:
    """Every route outside the Django admin (the admin is for superusers, who see everything by design)."""
    return [route for route in _walk(get_resolver().url_patterns) if not route.template.startswith("admin/")]
