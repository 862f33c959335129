"""Structured logs (structlog over the standard library) with secrets masked in every line.

Each line carries the request id bound by RequestIdMiddleware or by the Celery task, so one
web request or dispatch can be followed across processes.
"""
import logging
import re

import structlog

# What may sit between a secret's name and its value, in any rendering a library produces:
# `Name: v`, `'Name': 'v'`, `'Name': b'v'` (botocore's request headers), `Name=v` (query strings,
# cookies) and `\"Name\": \"v\"` (JSON inside a JSON log line).
_SEP = r"""(?P<sep>[\\'"]*\s*[:=]\s*b?[\\'"]*)"""
_VALUE = r"""[^\s'"\\,;&}<]+"""

# AWS key ids, secret keys, session tokens, auth headers, cookies (reliability-security.md §2.7).
_SECRET_PATTERNS = [
    (re.compile(r"\b(ASIA|AKIA)[0-9A-Z]{12,}\b"), r"\1****************"),
    # STS session tokens by their well-known prefixes, wherever they appear (defence in depth).
    (re.compile(r"\b(IQoJb3JpZ2lu|FwoGZXIvYXdz)[A-Za-z0-9+/=]{16,}"), r"\1****"),
    (re.compile(r"(?i)(?P<name>aws_secret_access_key|secretaccesskey|secret_access_key|secret_key|client_secret)"
                + _SEP + _VALUE), r"\g<name>\g<sep>****"),
    (re.compile(r"(?i)(?P<name>x-amz-security-token|sessiontoken|session_token|aws_session_token)" + _SEP + _VALUE),
     r"\g<name>\g<sep>****"),
    (re.compile(r"(?i)(?P<name>sessionid|csrftoken|csrfmiddlewaretoken|access_token|id_token|refresh_token|password)"
                + _SEP + _VALUE), r"\g<name>\g<sep>****"),
    # The whole header value: the scheme (Token, Bearer, AWS4-HMAC-SHA256 Credential=…, Signature=…) too.
    (re.compile(r"""(?i)(?P<name>authorization|cookie)(?P<sep>[\\'"]*\s*[:=]\s*b?[\\'"]*)[^'"\\\n]+"""),
     r"\g<name>\g<sep>****"),
    (re.compile(r"(?i)(<SecretAccessKey>|<SessionToken>)[^<]+"), r"\1****"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(item) for item in value)
    return value


class RedactSecretsFilter(logging.Filter):
    """Mask credentials in the final message, whatever library produced it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            return True  # a structlog event: the formatter redacts it, nested values included
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a broken format string; the formatter reports it
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _redact_event(_logger, _name, event_dict):
    return {key: _redact_value(value) for key, value in event_dict.items()}


def _redacted(renderer):
    """A last pass over the rendered line: tracebacks and anything a processor added after _redact_event."""

    def render(logger, name, event_dict):
        return redact(renderer(logger, name, event_dict))

    return render


_PRE_CHAIN = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ExtraAdder(),
]


def structured_formatter(output: str = "json") -> structlog.stdlib.ProcessorFormatter:
    renderer = structlog.processors.JSONRenderer() if output == "json" else structlog.dev.ConsoleRenderer(colors=False)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_PRE_CHAIN,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_event,
            _redacted(renderer),
        ],
    )


def configure_structlog() -> None:
    structlog.configure(
        processors=[*_PRE_CHAIN[:-1], structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
