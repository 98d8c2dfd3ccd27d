"""How ``serve`` writes logs: plain text or JSON lines, each with the request id,
tokens redacted in the final line.

Why redact the formatted line: a JSON formatter puts fields (and, with
``exc_info``, tracebacks) into the line that never passed through a record's
``msg``/``args``; rewriting the output is the one place every token in a
URL is sure to be caught, whatever the format.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

from pythonjsonlogger.json import JsonFormatter

from gateway.http.logredact import redact
from gateway.http.requestid import RequestIdFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"


class RedactedText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactedJson(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``log_format`` ("text" or "json") lines with the request id."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(RedactedJson(
            JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(RedactedText(TEXT_FORMAT))
    return handler


def configure_logging(level: str, log_format: str) -> None:
    """The root logger writes through one handler; uvicorn's loggers propagate to it
    (``serve`` gives uvicorn ``log_config=None``)."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(log_format)]
    root.setLevel(level.upper())
