"""The SMTP URL of an ``email`` action (the value of its ``smtp_url_env``), parsed in one place for the
worker that sends and ``hookline check`` that vets it.

The URL carries a password, so nothing here ever quotes it: Python's own parse errors do (an
unescaped ``/`` in the password ends the host part early and the start of the password is read as
the port, and ``ValueError`` says ``Port could not be cast to integer value as '<password start>'``).
Every refusal is one sentence naming the variable and the rule, never a part of the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

#: scheme → (``start_tls`` for aiosmtplib: None = when offered, True = required, False = TLS from the
#: first byte instead; default port)
SCHEMES: dict[str, tuple[bool | None, int]] = {"smtp": (None, 25), "smtp+starttls": (True, 587), "smtps": (False, 465)}


class SmtpUrlError(ValueError):
    """A value that is not an SMTP URL; its message names the variable only."""


@dataclass(frozen=True)
class SmtpUrl:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None


def refusal(env: str) -> str:
    """What is said about a value of ``env`` that does not parse."""
    return (
        f"{env} is not a valid smtp://, smtp+starttls:// or smtps:// URL "
        "(smtp://[user:password@]host[:port]); percent-encode reserved characters in the user and password"
    )


def parse_smtp_url(value: str, env: str) -> SmtpUrl:
    """``value`` as host, port and (unquoted) credentials; :class:`SmtpUrlError` naming ``env`` otherwise.

    A URL with a path, query or fragment is refused too: there the password held an unescaped
    ``/``, ``?`` or ``#``, and what reads as host and port is the user name and part of the password.
    """
    try:
        parts = urlsplit(value.strip())
        # .port raises on a non-number or one out of range; .hostname on a broken [IPv6] literal
        hostname, port, username, password = parts.hostname, parts.port, parts.username, parts.password
    except ValueError:
        raise SmtpUrlError(refusal(env)) from None
    if parts.scheme not in SCHEMES or not hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SmtpUrlError(refusal(env))
    start_tls, default_port = SCHEMES[parts.scheme]
    return SmtpUrl(
        hostname=hostname,
        port=port or default_port,
        username=unquote(username) if username else None,
        password=unquote(password) if password else None,
        use_tls=parts.scheme == "smtps",
        start_tls=start_tls,
    )


def smtp_url_problem(value: str, env: str) -> str | None:
    """What ``hookline check`` says about the value of ``env``: the worker's own refusal, or None."""
    try:
        parse_smtp_url(value, env)
    except SmtpUrlError as e:
        return str(e)
    return None


__all__ = ["SCHEMES", "SmtpUrl", "SmtpUrlError", "parse_smtp_url", "refusal", "smtp_url_problem"]
