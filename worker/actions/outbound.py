"""The one check every outbound request of an action passes before it is sent.

``http`` and ``slack`` call :func:`check_destination` with the URL they are about to use. Today it
refuses anything but ``http(s)://host`` and, for a ``url`` template, a host other than the one the
configuration wrote out; an outbound host allowlist belongs here too, so it covers every action.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from worker.errors import PermanentError


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def check_destination(url: str, *, what: str, origin: str | None = None) -> str:
    """Return ``url`` if an action may send to it; else a permanent error that does not echo it
    (a URL from the environment may carry a token, like a Slack incoming webhook's path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"{what}: the destination is not an http(s) URL with a host")
    if origin is not None and origin_of(url) != origin:
        raise PermanentError(f"{what}: the rendered URL left the host fixed by the configuration ({origin})")
    return url
