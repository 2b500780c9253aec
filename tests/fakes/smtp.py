"""A real SMTP server in the test process (aiosmtpd), recording what it accepts.

with SmtpServer(users={"hookline": "s3cret"}) as smtp:
    smtp.url("hookline", "s3cret")    # smtp://hookline:s3cret@127.0.0.1:PORT
    smtp.messages                      # [email.message.EmailMessage, ...]
    smtp.refuse_next(451)              # the next RCPT gets a 451 (transient) answer
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Accepted:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class _Handler:
    accepted: list[Accepted] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        with self.cond:
            code = self.refusals.pop(0) if self.refusals else None
        if code is not None:
            return f"{code} mailbox unavailable (fake refusal)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.cond:
            self.accepted.append(Accepted(envelope.mail_from, list(envelope.rcpt_tos), msg))
            self.cond.notify_all()
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, users: dict[str, str] | None = None, *, smtputf8: bool = True) -> None:
        """``smtputf8``: whether the server offers SMTPUTF8 (addresses beyond ASCII), as most do."""
        self.users = users
        self.handler = _Handler()
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        if users is not None:
            kwargs |= {"authenticator": self._auth, "auth_require_tls": False, "auth_required": True}
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=_free_port(), **kwargs)

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and self.users is not None:
            user, password = data.login.decode(), data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user else ""
        return f"smtp://{auth}127.0.0.1:{self.controller.port}"

    @property
    def messages(self) -> list[Accepted]:
        return list(self.handler.accepted)

    def refuse_next(self, code: int) -> None:
        with self.handler.cond:
            self.handler.refusals.append(code)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Accepted]:
        with self.handler.cond:
            if not self.handler.cond.wait_for(lambda: len(self.handler.accepted) >= count, timeout):
                raise AssertionError(f"expected {count} message(s), got {len(self.handler.accepted)}")
            return list(self.handler.accepted)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
