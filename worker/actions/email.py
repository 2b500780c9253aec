"""``type = "email"``: one message over SMTP (aiosmtplib).

``smtp_url_env`` names a variable holding ``smtp://[user:password@]host[:port]`` (STARTTLS when the
server offers it), ``smtp+starttls://…`` (STARTTLS required) or ``smtps://…`` (TLS from the first
byte, port 465 by default). The ``Message-ID`` is derived from the action's idempotency key, so a
message sent again after a crash between the server's ``250`` and our bookkeeping carries the same
id, which mail systems and clients use to drop the duplicate (at least once, deduplicable).
"""

from __future__ import annotations

import hashlib
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any

import aiosmtplib

from app.core.config import EmailAction
from app.core.smtpurl import SmtpUrlError, parse_smtp_url
from worker.actions.base import ActionContext, ActionDeps, env_value, render
from worker.errors import PermanentError, TransientError


def message_id(idempotency_key: str, sender: str) -> str:
    """``<hookline.<sha256 of the key>@<sender's domain>>``: the same key always gives the same id."""
    domain = sender.rpartition("@")[2].strip(">").strip() or "hookline.invalid"
    return f"<hookline.{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{domain}>"


def _address(text: str, what: str) -> str:
    """Exactly one address: ``parseaddr`` alone keeps the first of ``a@x.com, b@y.com`` and drops the
    rest without a word, so a rendered value naming several recipients is refused instead. The refusal
    names the place (``what``: the action and its ``to`` template), never the rendered value."""
    found = getaddresses([text])
    addr = found[0][1] if len(found) == 1 else ""
    if addr.count("@") != 1 or any(c in text for c in "\r\n") or " " in addr or parseaddr(text)[1] != addr:
        # the rendered text comes from the payload or the model's answer: name the template, not the value
        why = ""
        if any(c in text for c in "\r\n"):
            why = " (it holds a line break)"
        elif len(found) > 1:
            why = f" ({len(found)} addresses)"
        raise PermanentError(f"{what}: the rendered value is not one email address{why}")
    return addr


def build_message(action: EmailAction, ctx: ActionContext) -> tuple[EmailMessage, list[str]]:
    what = f"email action {ctx.action}"
    items = [action.to] if isinstance(action.to, str) else list(action.to)
    to = [_address(render(t, ctx, what=f"{what}: to").strip(), f"{what}: to {t[:100]!r}") for t in items]
    subject = render(action.subject, ctx, what=f"{what}: subject")
    if "\n" in subject or "\r" in subject:
        subject = " ".join(subject.split())
    msg = EmailMessage()
    msg["From"] = action.from_
    msg["To"] = ", ".join(str(Address(addr_spec=a)) for a in to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(ctx.idempotency_key, parseaddr(action.from_)[1])
    msg["X-Hookline-Idempotency-Key"] = ctx.idempotency_key
    msg.set_content(render(action.body, ctx, what=f"{what}: body"))
    return msg, to


async def run(action: EmailAction, ctx: ActionContext, deps: ActionDeps) -> dict[str, Any]:
    what = f"email action {ctx.action}"
    try:  # its refusal names the variable, never a part of the URL (it carries the password)
        url = parse_smtp_url(env_value(deps.environ, action.smtp_url_env, what=what), action.smtp_url_env)
    except SmtpUrlError as e:
        raise PermanentError(f"{what}: {e}") from None
    msg, to = build_message(action, ctx)
    try:
        refused, _ = await aiosmtplib.send(
            msg,
            sender=parseaddr(action.from_)[1],
            recipients=to,
            hostname=url.hostname,
            port=url.port,
            username=url.username,
            password=url.password,
            use_tls=url.use_tls,
            start_tls=url.start_tls,
            timeout=deps.timeout_for(action.timeout_seconds, what=what),
        )
    except aiosmtplib.SMTPAuthenticationError as e:
        raise PermanentError(f"{what}: SMTP authentication failed ({e.code})") from None
    except aiosmtplib.SMTPRecipientsRefused as e:
        codes = sorted({r.code for r in e.recipients})
        err = PermanentError if all(c >= 500 for c in codes) else TransientError
        raise err(f"{what}: the SMTP server refused the recipient(s) ({codes})") from None
    except aiosmtplib.SMTPResponseException as e:
        err = PermanentError if e.code >= 500 else TransientError
        raise err(f"{what}: the SMTP server answered {e.code} {e.message[:200]}") from None
    except (aiosmtplib.SMTPException, OSError) as e:
        # no STARTTLS or AUTH where the URL asks for it, no SMTPUTF8 for an address beyond ASCII: what the
        # server cannot do, every attempt alike, in aiosmtplib's own fixed sentence (never a host or a password)
        if type(e) in (aiosmtplib.SMTPException, aiosmtplib.SMTPNotSupported):
            raise PermanentError(f"{what}: {e}") from None
        raise TransientError(f"{what}: {e.__class__.__name__}") from None
    if refused:  # sent to the others: not "sent", and a 4xx one may take it on the next attempt
        codes = sorted({r.code for r in refused.values()})
        err = PermanentError if all(c >= 500 for c in codes) else TransientError
        raise err(
            f"{what}: the SMTP server refused {len(refused)} of {len(to)} recipient(s) ({codes}); "
            "the message went to the others"
        )
    return {"message_id": msg["Message-ID"], "to": to}
