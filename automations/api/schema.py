"""What drf-spectacular cannot infer: the error bodies every operation may return, and strict bodies.

The schema is a contract that schemathesis checks against the live server
(tests/api/test_schemathesis.py): every status code and content type a response can carry must be
listed, and request bodies must say that unknown keys are refused, because they are.
"""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

ERROR_COMPONENT = "Error"

# Why each status can happen on an operation of the kind named; see _errors_for().
_DESCRIPTIONS = {
    "400": "The input is not valid (code `invalid`, or a domain code such as `runbook_not_offered`).",
    "401": "No credentials, or an invalid token (code `not_authenticated` / `authentication_failed`).",
    "403": "Not allowed, or a session-authenticated write without a valid CSRF token.",
    "404": "No such object among those visible to the caller (code `not_found`).",
    "406": "The Accept header asks for a format this operation does not produce.",
    "409": "The request is not in a status this action applies to (code `transition_not_allowed`).",
    "415": "The body is not JSON.",
}
# Answered by the HTTP server in front of Django, not by the API: no JSON body.
_SERVER_LIMITS = {
    "414": "The request line is longer than the server accepts (gunicorn: 4094 bytes by default).",
}


# Every API error (automations/api/errors.py): a stable machine `code`, a human `detail`, and
# per-field messages when relevant.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "Stable identifier, e.g. `invalid`, `not_found`, `self_approval`."},
        "detail": {"type": "string", "description": "A sentence for people."},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                   "description": "Per-field messages, keyed by field or parameter name."},
    },
    "required": ["code", "detail"],
}


class ErrorSerializer(serializers.Serializer):
    """The component `Error` (same shape as ERROR_SCHEMA), for views that name their errors explicitly."""

    code = serializers.CharField(help_text="Stable identifier, e.g. `invalid`, `not_found`, `self_approval`.")
    detail = serializers.CharField(help_text="A sentence for people.")
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False,
                                   help_text="Per-field messages, keyed by field or parameter name.")


class StrictSerializerExtension(OpenApiSerializerExtension):
    """StrictSerializer refuses undeclared keys with 400, so its schema forbids additional properties."""

    target_class = "automations.api.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


def _error_response(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}},
    }


def _errors_for(path: str, method: str, operation: dict) -> list[str]:
    codes = ["401", "403", "406"]  # every operation is authenticated and content-negotiated
    parameters = operation.get("parameters", [])
    has_query = any(p.get("in") == "query" for p in parameters)
    has_path = any(p.get("in") == "path" for p in parameters)
    if has_query or "requestBody" in operation or method in ("post", "put", "patch"):
        codes.append("400")
    if has_path or any(p.get("name") == "cursor" for p in parameters):
        codes.append("404")  # an unknown or invisible id; a stale or forged cursor
    if method in ("post", "put", "patch"):
        codes.append("415")
    return codes


def postprocess_error_responses(result, generator, request, public):
    """Add the Error component and the error statuses each operation can really answer with."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_COMPONENT, ERROR_SCHEMA)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter.get("in") == "query" and schema.get("type") == "string" and "enum" not in schema:
                    # Every query string is validated strictly: a blank value is a 400, not "no filter",
                    # and so is a NUL character (Django's form and serializer fields refuse it).
                    schema.setdefault("minLength", 1)
                    if "pattern" not in schema and "format" not in schema:
                        schema["pattern"] = "^[^\\u0000]*$"
            responses = operation["responses"]
            for code in _errors_for(path, method, operation):
                responses.setdefault(code, _error_response(_DESCRIPTIONS[code]))
            for code, description in _SERVER_LIMITS.items():
                responses.setdefault(code, {"description": description})
            for code, response in responses.items():
                if code in _DESCRIPTIONS and response.get("description") in ("", None):
                    response["description"] = _DESCRIPTIONS[code]
    return result



def filterset_parameters(filterset_class) -> list:
    """OpenAPI query parameters for a django-filter FilterSet used outside a list view (the export)."""
    from django import forms
    from django_filters import IsoDateTimeFilter
    from drf_spectacular.utils import OpenApiParameter

    parameters = []
    for name, field in filterset_class.base_filters.items():
        if issubclass(field.field_class, forms.IntegerField):
            schema = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}
        elif isinstance(field, IsoDateTimeFilter):
            schema = {"type": "string", "format": "date-time"}
        else:
            schema = {"type": "string", "minLength": 1}
            if field.extra.get("max_length"):
                schema["maxLength"] = field.extra["max_length"]
        parameters.append(OpenApiParameter(name, schema, description=str(field.label or "")))
    return parameters
