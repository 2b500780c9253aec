"""Logging setup shared by every hookline process: one line per record, text or JSON."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}
#: Extra fields worth a place on a text line; JSON lines carry every extra field.
TEXT_FIELDS = ("source", "provider", "reason", "remote_addr", "request_id", "event_id", "pipeline", "action")


_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("hookline_log_context", default={})  # noqa: B039


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every record logged inside carries these fields (``event_id``, ``request_id``…), unless it
    sets them itself. Scoped to the current task or thread; undone on exit."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add fields to the innermost :func:`log_context` (None values are left out)."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


def _install_record_factory() -> None:
    """Every record gets the log context's fields when it is made, whichever handler formats it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "hookline_context", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return record

    factory.hookline_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


#: C0 and C1 controls (ESC, CR, BEL: a terminal's escape sequences, OSC 52 clipboard writes included),
#: line and paragraph separators, and the bidirectional marks and overrides that reorder what a
#: terminal shows (U+061C, U+200E-F, U+202A-E, U+2066-9).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_BARE = re.compile(r"^[A-Za-z0-9._:/@+-]+$")


def escape(text: str) -> str:
    """Control characters (newlines included) and bidi overrides as visible escapes: one record stays one
    line, and text from a sender can neither drive the terminal nor reorder what it shows."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def field_value(value: object) -> str:
    """A ``key=value`` value that cannot forge another field: quoted unless it is a plain token."""
    text = str(value)
    if _BARE.match(text):
        return text
    return '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class TextFormatter(logging.Formatter):
    """One line per record. Caller-controlled text (messages' arguments, extra fields) is escaped,
    so no value can start a new line or pose as another ``key=value`` field; tracebacks follow on
    their own lines, as usual."""

    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(vars(record))
        safe.msg, safe.args = escape(record.getMessage()), None
        base = super().format(safe)
        extra = {k: v for k in TEXT_FIELDS if (v := getattr(record, k, None)) is not None}
        if extra:
            head, sep, tail = base.partition("\n")
            base = head + " " + " ".join(f"{k}={field_value(v)}" for k, v in extra.items()) + sep + tail
        return base


#: Query parameters whose value is a credential (Meta's ``hub.verify_token``, a signed URL's signature,
#: an API key…), by a part of their name, in any case.
_SECRET_PARAM = re.compile(r"token|secret|signature|key|password", re.IGNORECASE)


def without_query_secrets(target: str) -> str:
    """A request target (``/path?query``) with the value of each credential-like query parameter
    replaced by ``[redacted]``; the path, the other parameters and their order as they were."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    params = []
    for param in query.split("&"):
        name, eq, _value = param.partition("=")
        params.append(f"{name}=[redacted]" if eq and _SECRET_PARAM.search(unquote_plus(name)) else param)
    return f"{path}?{'&'.join(params)}"


class AccessLogRedactor(logging.Filter):
    """On ``uvicorn.access``: the request target of an access line (``%s - "%s %s HTTP/%s" %d``: client,
    method, target, version, status) loses its credential query values before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], without_query_secrets(args[2]), *args[3:])
        return True


def setup_logging(level: str = "INFO", fmt: str = "text", process: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"{process} " if process else ""
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    access = logging.getLogger("uvicorn.access")  # `hookline web --access-log`, in every web process
    if not any(isinstance(f, AccessLogRedactor) for f in access.filters):
        access.addFilter(AccessLogRedactor())
    for noisy in ("httpx", "httpcore", "httpx2", "anthropic._base_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
