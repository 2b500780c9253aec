"""Who may use /admin: the bearer token (API), a signed session cookie (dashboard), CSRF checks.

* The API takes ``Authorization: Bearer $HOOKLINE_ADMIN_TOKEN``, compared in constant time; so do the
  dashboard's pages, for scripts and proxies (a browser never attaches that header by itself, so such
  a request needs no CSRF token). On the dashboard, a bearer token that is not the admin token (an
  auth proxy's own) is ignored and the session cookie decides; it is a 401 only without a session.
* The dashboard's login form takes the same token and sets a session cookie
  (``HttpOnly; SameSite=Strict; Path=/admin``, ``Secure`` when the request came over HTTPS).
  The cookie is ``v1.ISSUED.NONCE.MAC``, MAC = HMAC-SHA256 under a key derived from the token: every
  web process accepts it, and changing the token signs everyone out. Nothing is stored server side.
* Every state-changing dashboard request carries a synchronizer token (HMAC of the session's nonce,
  in the form field or the ``X-CSRF-Token`` header), and its ``Origin`` (or ``Referer``) must be this
  site; ``Sec-Fetch-Site: cross-site`` is refused outright. The login form uses a double-submit
  cookie instead, since there is no session yet.
* Wrong tokens are counted per client address (:class:`app.web.throttle.FailedAttempts`): past the
  limit, a token from that address (right or wrong) is 429 until its window has passed. A valid
  session cookie still signs its requests in; no token is tried then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from app.core.errors import Forbidden, Unauthorized
from app.core.settings import Settings
from app.web.throttle import FailedAttempts

SESSION_COOKIE = "hookline_session"
LOGIN_CSRF_COOKIE = "hookline_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: How long a dashboard session lasts.
SESSION_SECONDS = 12 * 3600


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (of digests, so the length of the token does not show either)."""
    a = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(expected.encode()).digest()
    return hmac.compare_digest(a, b)


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hookline admin"'}


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None when there is no such header."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def require_bearer(request: Request, token: str, attempts: FailedAttempts, address: str) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>``; 429 while ``address`` has sent
    too many wrong tokens (each wrong one is counted against it)."""
    given = bearer_token(request)
    if not given:
        raise Unauthorized("send Authorization: Bearer <HOOKLINE_ADMIN_TOKEN>", headers=CHALLENGE)
    attempts.check(address)
    if not token_matches(given, token):
        attempts.failed(address)
        raise Unauthorized("the admin token is not valid", headers=CHALLENGE)


@dataclass(frozen=True)
class Session:
    nonce: str
    csrf: str
    #: Signed in by ``Authorization: Bearer`` on this request, not by the cookie: no CSRF token needed.
    bearer: bool = False


class Sessions:
    """Issues and checks dashboard session cookies and their CSRF tokens."""

    def __init__(self, token: str, settings: Settings) -> None:
        self._token = token
        self._key = hmac.new(token.encode(), b"hookline admin session v1", hashlib.sha256).digest()
        self._settings = settings

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())

    def _csrf(self, nonce: str) -> str:
        return self._mac("csrf." + nonce)

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        nonce = _b64(secrets.token_bytes(18))
        body = f"v1.{int(now if now is not None else time.time())}.{nonce}"
        return f"{body}.{self._mac(body)}", Session(nonce, self._csrf(nonce))

    def read(self, request: Request, attempts: FailedAttempts | None = None, address: str = "") -> Session | None:
        """The request's session: from an ``Authorization: Bearer`` header holding the admin token, else
        from a valid, unexpired session cookie; None when there is neither. A bearer token that is not
        the admin token is left aside, not refused: a proxy in front of the dashboard (oauth2-proxy's
        ``pass_authorization_header``, Pomerium) sends its own there, and the cookie decides (with its
        CSRF checks). Only when the cookie does not sign the request in either is that bearer a 401,
        counted in ``attempts`` against ``address``; while that address is over the limit its bearer is
        not tried at all: the cookie alone decides, and without one the answer is 429."""
        given = bearer_token(request)
        if given is None:
            return self._from_cookie(request)
        if attempts is not None and attempts.retry_after(address):
            session = self._from_cookie(request)
            if session is None:
                attempts.check(address)
            return session
        if token_matches(given, self._token):
            return Session(nonce="", csrf="", bearer=True)
        session = self._from_cookie(request)
        if session is None:
            if attempts is not None:
                attempts.failed(address)
            raise Unauthorized(
                "the admin token is not valid, and there is no valid session cookie (sign in at /admin/login)",
                headers=CHALLENGE,
            )
        return session

    def _from_cookie(self, request: Request) -> Session | None:
        parts = request.cookies.get(SESSION_COOKIE, "").split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        body = ".".join(parts[:3])
        if not hmac.compare_digest(self._mac(body).encode(), parts[3].encode()):
            return None
        if not 0 <= time.time() - int(parts[1]) < SESSION_SECONDS:
            return None
        return Session(parts[2], self._csrf(parts[2]))

    # -- cookies ---------------------------------------------------------------------------------

    def is_https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        if self._settings.trust_forwarded_proto:
            return request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https"
        return False

    def set_cookie(self, request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=self.is_https(request),
        )

    def clear_cookie(self, request: Request, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/admin", httponly=True, samesite="strict", secure=self.is_https(request))

    # -- CSRF ------------------------------------------------------------------------------------

    def check_origin(self, request: Request) -> None:
        """403 for a request another site made the browser send."""
        if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
            raise Forbidden("cross-site request refused")
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin is None:
            return  # no browser hint at all (old browser, curl): the CSRF token still has to match
        parts = urlsplit(origin)
        allowed = {request.headers.get("host", "")}
        if self._settings.public_url:
            allowed.add(urlsplit(self._settings.public_url).netloc)
        if origin == "null" or parts.netloc not in allowed:
            raise Forbidden("cross-origin request refused")
        if parts.scheme == "http" and self.is_https(request):
            raise Forbidden("cross-origin request refused")

    def check_csrf(self, request: Request, session: Session, submitted: str | None) -> None:
        """403 unless the Origin is ours and the synchronizer token matches the session. A request
        signed in by its bearer header passes: no browser sends that header on another site's behalf."""
        if session.bearer:
            return
        self.check_origin(request)
        given = submitted or request.headers.get(CSRF_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise Forbidden("missing or wrong CSRF token; reload the page")

    def check_login_csrf(self, request: Request, submitted: str | None) -> None:
        """Login: the form's token must equal the login cookie set with the form (double submit)."""
        self.check_origin(request)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
            raise Forbidden("missing or wrong CSRF token; reload the login page")
