"""Structured logs (structlog over the standard library) with secrets masked in every line.

Each line carries the request id bound by RequestIdMiddleware or by the Celery task, so one
web request or dispatch can be followed across processes.
"""
import logging
import re

import structlog

# AWS key ids, secret keys, session tokens and auth headers (reliability-security.md §2.7).
_SECRET_PATTERNS = [
    (re.compile(r"\b(ASIA|AKIA)[0-9A-Z]{12,}\b"), r"\1****************"),
    (re.compile(r"(?i)(aws_secret_access_key|secretaccesskey|secret_key|SecretAccessKey)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}<]+"),
     r"\1\2****"),
    (re.compile(r"(?i)(x-amz-security-token|sessiontoken|session_token|SessionToken|aws_session_token)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}<]+"),
     r"\1\2****"),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(token|bearer|aws4-hmac-sha256)?\s*[^'\",}]+"), r"\1****"),
    (re.compile(r"(?i)(<SecretAccessKey>|<SessionToken>)[^<]+"), r"\1****"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Mask credentials in the final message, whatever library produced it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _redact_event(_logger, _name, event_dict):
    return {key: redact(value) if isinstance(value, str) else value for key, value in event_dict.items()}


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
            renderer,
        ],
    )


def configure_structlog() -> None:
    structlog.configure(
        processors=[*_PRE_CHAIN[:-1], structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
