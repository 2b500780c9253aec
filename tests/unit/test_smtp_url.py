"""The SMTP URL of an email action: parsed whole, refused with a sentence that names the variable and
never a part of the value (it carries the password), by the worker and `hookline check` alike."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from app.core.config import environment_problems, parse_config
from app.core.smtpurl import SmtpUrl, SmtpUrlError, parse_smtp_url, refusal

HOST = "email-smtp.us-east-1.amazonaws.com"
#: the shape of an AWS SES SMTP password: '/' and '+' are common in them
PASSWORDS = ["BHk3PwLEAK/d+tail", "BHk3PwLEAK?d+tail", "BHk3PwLEAK#d+tail", "1234/PwLEAK", "587/PwLEAK"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_with_reserved_characters_is_refused_without_a_word_of_it(password: str) -> None:
    """Unescaped, '/', '?' or '#' ends the host part early: Python then reads the start of the password
    as the port (a ValueError quoting it) or, all digits, as a port it would connect to."""
    for url in (f"smtp://AKIAEXAMPLE:{password}@{HOST}:587", f"smtps://AKIAEXAMPLE:{password}@{HOST}"):
        with pytest.raises(SmtpUrlError) as e:
            parse_smtp_url(url, "HL_SMTP_URL")
        assert str(e.value) == refusal("HL_SMTP_URL")
        assert "PwLEAK" not in str(e.value) and "AKIA" not in str(e.value) and HOST not in str(e.value)
        assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)
    encoded = parse_smtp_url(f"smtp://AKIAEXAMPLE:{quote(password, safe='')}@{HOST}:587", "HL_SMTP_URL")
    assert encoded == SmtpUrl(HOST, 587, "AKIAEXAMPLE", password, use_tls=False, start_tls=None)


@pytest.mark.parametrize(
    "url",
    [
        "http://u:p@host",  # another scheme
        "smtp://u:p@",  # no host
        "smtp://u:secretish@host:notaport",
        "smtp://u:secretish@host:99999",  # a port out of range
        "smtp://u:secretish@[::1",  # a broken IPv6 literal
        "smtp://u:secretish@host/path",
        "",
    ],
)
def test_what_is_not_an_smtp_url_is_refused_by_name(url: str) -> None:
    with pytest.raises(SmtpUrlError) as e:
        parse_smtp_url(url, "HL_SMTP_URL")
    assert str(e.value).startswith("HL_SMTP_URL is not a valid smtp://, smtp+starttls:// or smtps:// URL")
    assert "percent-encode reserved characters in the user and password" in str(e.value)
    assert "secretish" not in str(e.value)


def test_schemes_ports_and_credentials() -> None:
    assert parse_smtp_url("smtp://mail.example.com", "S") == SmtpUrl("mail.example.com", 25, None, None, False, None)
    assert parse_smtp_url("smtp+starttls://h/", "S") == SmtpUrl("h", 587, None, None, False, True)
    assert parse_smtp_url(" smtps://u%40x:p%40ss%20word@h:2465\n", "S") == SmtpUrl(
        "h", 2465, "u@x", "p@ss word", True, False
    )


def test_hookline_check_reports_the_same_sentence() -> None:
    email = {
        "type": "email",
        "smtp_url_env": "HL_SMTP_URL",
        "from": "a@b.io",
        "to": "x@y.io",
        "subject": "s",
        "body": "b",
    }
    data = {
        "sources": {"gh": {"provider": "github", "secrets_env": ["GH_SECRET"]}},
        "pipelines": {
            "p": {"source": "gh", "instructions": "x", "output_schema": {"type": "object"}, "actions": [email]}
        },
        "alerts": [{**email, "smtp_url_env": "HL_ALERT_SMTP_URL"}],
    }
    environ = {
        "GH_SECRET": "s",
        "HL_SMTP_URL": f"smtp://AKIAEXAMPLE:{PASSWORDS[0]}@{HOST}:587",
        "HL_ALERT_SMTP_URL": f"smtp://AKIAEXAMPLE:{quote(PASSWORDS[0], safe='')}@{HOST}:587",
    }
    problems = environment_problems(parse_config(data), environ)
    assert problems == [f"pipelines.p.actions.0.smtp_url_env: {refusal('HL_SMTP_URL')}"]
    environ["HL_ALERT_SMTP_URL"] = "smtp://u:p#w@h"
    assert environment_problems(parse_config(data), environ)[1:] == [
        f"alerts.0.smtp_url_env: {refusal('HL_ALERT_SMTP_URL')}"
    ]
