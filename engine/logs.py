"""structlog setup: one JSON object per line on stdout (journald collects it), UTC timestamps."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Log at `level` and above to `stream` (default stdout, where journald collects it)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory((stream or sys.stdout).buffer),
        cache_logger_on_first_use=True,
    )
