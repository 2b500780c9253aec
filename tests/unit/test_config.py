"""hookline.toml validation: errors name the exact key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.core.config import environment_problems, load_config, parse_config
from app.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

GOOD: dict[str, Any] = {
    "sources": {"stripe": {"provider": "stripe", "secrets_env": ["STRIPE_SECRET"]}},
    "pipelines": {
        "p": {
            "source": "stripe",
            "instructions": "x",
            "output_schema": {"type": "object"},
            "actions": [{"type": "log"}, {"type": "http", "url_env": "CRM_URL"}],
        }
    },
}


def _err(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return str(exc.value)


def test_the_sample_file_is_valid() -> None:
    config = load_config(ROOT / "hookline.toml")
    assert {"github", "stripe"} <= set(config.sources)
    assert config.pipelines["payment-recovery"].matches("stripe", "invoice.payment_failed")


def test_good_config_parses_and_names_things() -> None:
    config = parse_config(GOOD)
    assert config.sources["stripe"].name == "stripe"
    assert config.pipelines["p"].action_key(0) == "log#0"
    assert config.pipelines_for("stripe", "anything") == [config.pipelines["p"]]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["sources"]["stripe"].update(provider="strpe"),
            "sources.stripe.provider: unknown provider 'strpe' (did you mean 'stripe'?)",
        ),
        (lambda d: d["sources"]["stripe"].update(secrets_env=["not a name"]), "sources.stripe.secrets_env"),
        (lambda d: d["sources"]["stripe"].update(colour="red"), "sources.stripe.colour: unknown key"),
        (lambda d: d["sources"]["stripe"].update(ordering_key="data.customer"), "needs a 'header:' or 'json:' prefix"),
        (lambda d: d["sources"]["stripe"].update(public_url="example.com/x"), "sources.stripe.public_url"),
        (lambda d: d["pipelines"]["p"].update(source="nope"), "pipelines.p.source: no [sources.nope]"),
        (lambda d: d["pipelines"]["p"].pop("instructions"), "pipelines.p.instructions: required key is missing"),
        (lambda d: d["pipelines"]["p"].update(output_model="x:Y"), "set exactly one of output_schema or output_model"),
        (lambda d: d["pipelines"]["p"].update(output_schema={"type": "string"}), "pipelines.p.output_schema"),
        (
            lambda d: d["pipelines"]["p"].update(
                output_schema={"type": "object", "properties": {"a": {"type": "strng"}}}
            ),
            "pipelines.p.output_schema: not a valid JSON Schema at properties/a/type",
        ),
        (lambda d: d["pipelines"]["p"]["actions"].append({"type": "email"}), "pipelines.p.actions.2"),
        (
            lambda d: d["pipelines"]["p"]["actions"].append({"type": "python", "target": "nocolon"}),
            "target must look like",
        ),
        (lambda d: d["pipelines"]["p"].update(retry={"max_attempts": 0}), "pipelines.p.retry.max_attempts"),
    ],
)
def test_errors_name_the_key(mutate: Any, expected: str) -> None:
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    assert expected in _err(data)


SCHEDULED = {"source": "schedule", "instructions": "x", "output_schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["sources"]["stripe"].update(secret_env=["S"]),
            "sources.stripe.secret_env: unknown key (did you mean 'secrets_env'?)",
        ),
        (
            lambda d: d["pipelines"]["p"]["actions"][1].update(urlenv="CRM_URL"),
            "pipelines.p.actions.1.urlenv: unknown key (did you mean 'url_env'?)",
        ),
        (
            lambda d: d["pipelines"]["p"].update(retry={"max_attempt": 3}),
            "pipelines.p.retry.max_attempt: unknown key (did you mean 'max_attempts'?)",
        ),
        (  # a table that may be left out (`Concurrency | None`)
            lambda d: d["pipelines"]["p"].update(concurrency={"per_tenants": 2}),
            "pipelines.p.concurrency.per_tenants: unknown key (did you mean 'per_tenant'?)",
        ),
        (  # a key written as the file has it, not as Python names it (`from_`)
            lambda d: d["pipelines"]["p"]["actions"].append(
                {"type": "email", "frm": "a@example.com", "to": "b", "subject": "s", "body": "b", "smtp_url_env": "S"}
            ),
            "pipelines.p.actions.2.frm: unknown key (did you mean 'from'?)",
        ),
        (
            lambda d: d["pipelines"]["p"]["actions"][1].update(headers={"X-Key": {"evn": "KEY"}}),
            "pipelines.p.actions.1.headers.X-Key.evn: unknown key; one of: env, prefix",
        ),
        (lambda d: d.update(alert=[{"type": "log"}]), "alert: unknown key (did you mean 'alerts'?)"),
        (  # no close match: the keys there are ('prompt' is 'instructions' here); never 'name', the table's key
            lambda d: d["pipelines"]["p"].update(promt="x"),
            "pipelines.p.promt: unknown key; one of: actions, batch, concurrency,",
        ),
        (
            lambda d: d["pipelines"]["p"]["actions"].append({"type": "logg"}),
            "pipelines.p.actions.2.type: unknown action type 'logg' (did you mean 'log'?)",
        ),
        (
            lambda d: d.update(alerts=[{"type": "pager"}]),
            "alerts.0.type: unknown action type 'pager'; one of: discord_followup, email, http, log, python, slack,"
            " slack_response, sql",
        ),
        (
            lambda d: d["pipelines"]["p"]["actions"].append({"kind": "log"}),
            "pipelines.p.actions.2.type: required key is missing; one of: discord_followup, email, http,",
        ),
        (
            lambda d: d["pipelines"]["p"].update(source="strip"),
            "pipelines.p.source: no [sources.strip] is defined (did you mean 'stripe'?)",
        ),
        (
            lambda d: d["pipelines"]["p"].update(source="billing"),
            "pipelines.p.source: no [sources.billing] is defined; one of: db, schedule, stripe",
        ),
        (
            lambda d: d.update(
                pipelines={**d["pipelines"], "daily-digest": SCHEDULED},
                schedules={"daily": {"cron": "0 9 * * *", "pipeline": "daily-digst"}},
            ),
            "schedules.daily.pipeline: no [pipelines.daily-digst] is defined (did you mean 'daily-digest'?)",
        ),
        (
            lambda d: d.update(
                pipelines={**d["pipelines"], "daily-digest": SCHEDULED},
                schedules={"daily": {"cron": "0 9 * * *", "pipeline": "daily-digest", "filter": {"source": "strip"}}},
            ),
            "schedules.daily.filter.source: no [sources.strip] is defined (did you mean 'stripe'?)",
        ),
        (
            lambda d: d.update(
                pipelines={**d["pipelines"], "daily-digest": SCHEDULED},
                schedules={
                    "daily": {"cron": "0 9 * * *", "pipeline": "daily-digest", "filter": {"source": ["db", "billing"]}}
                },
            ),
            "schedules.daily.filter.source: no [sources.billing] is defined; one of: db, schedule, stripe",
        ),
    ],
)
def test_a_misspelt_name_gets_the_close_match(mutate: Any, expected: str) -> None:
    """A newcomer's typo named only the place (`sources.stripe.secret_env: unknown key`, `no
    [sources.strip] is defined`), and an unknown action type was pydantic's "Input tag 'logg' found
    using 'type' does not match any of the expected tags" at the action, not at its `type`. Each now
    says what was meant, as an unknown provider does, or what there is to choose from."""
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    error = _err(data)
    assert any(line.startswith(expected) for line in error.splitlines()), error
    assert "'name'" not in error and ", name," not in error and "Input tag" not in error, error


def test_db_is_a_reserved_source_name() -> None:
    """`[sources.db]` was accepted: POST /webhooks/db stored a sender's events as source "db", which the
    row-event pipelines took for row changes (and their delivery ids could take a row event's place).
    A DBA may write it to get `redact` for a watched table: the error points to exclude_columns."""
    data: dict[str, Any] = {
        **GOOD,
        "sources": {**GOOD["sources"], "db": {"provider": "stripe", "secrets_env": ["S"], "redact": ["new.token"]}},
    }
    error = _err(data)
    assert error.startswith("sources.db: the name is reserved for the row events of watched tables"), error
    assert "exclude_columns" in error


def test_hmac_provider_needs_its_table() -> None:
    data: dict[str, Any] = {"sources": {"x": {"provider": "hmac", "secrets_env": ["S"]}}}
    assert "hmac" in _err(data)
    data["sources"]["x"]["hmac"] = {"header": "X-Sig", "algorithm": "md5"}
    assert "sources.x" in _err(data)
    data["sources"]["x"]["hmac"] = {"header": "X-Sig", "algorithm": "sha512", "encoding": "base64"}
    assert parse_config(data).sources["x"].hmac_options() is not None


def test_environment_problems_name_variables_not_values() -> None:
    config = parse_config(GOOD)
    problems = environment_problems(config, {"STRIPE_SECRET": "whsec_supersecret"})
    assert problems == ["pipelines.p.actions.1.url_env: CRM_URL is not set"]
    problems = environment_problems(config, {})
    assert any("STRIPE_SECRET" in p for p in problems)
    assert not any("supersecret" in p for p in problems)


SLACK_URL = "https://hooks.slack.com/services/T0/B0/s3cretXYZ"
STRIPE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # letters, digits and _: it looks like a name
# secrets without a prefix hookline knows, each made of letters, digits and _ only (all made up)
HEX_SECRET = "a3f9c2e1b7d04f6a8e2c9b1d3f5a7c9e0b2d4f6a"  # 40 hex digits, a letter first
BASE64_SECRET = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"  # base64 without + / =
API_KEY = "sk_live_51HfakeKEY0123456789abcdefFAKE"  # a Stripe API key: underscores, then the random part
LONG_NAME = "A" * 101  # no variable is named like this


def _set_secrets_env(value: str) -> Any:
    return lambda d: d["sources"]["stripe"].update(secrets_env=["STRIPE_SECRET", value])


@pytest.mark.parametrize(
    ("where", "mutate", "secret"),
    [
        ("sources.stripe.secrets_env", lambda d: d["sources"]["stripe"].update(secrets_env=[SLACK_URL]), "s3cret"),
        ("sources.stripe.secrets_env", _set_secrets_env(STRIPE_SECRET), STRIPE_SECRET[6:]),
        ("sources.stripe.secrets_env", _set_secrets_env(HEX_SECRET), HEX_SECRET),
        ("sources.stripe.secrets_env", _set_secrets_env(BASE64_SECRET), BASE64_SECRET),
        ("sources.stripe.secrets_env", _set_secrets_env(API_KEY), API_KEY[8:]),
        ("sources.stripe.secrets_env", _set_secrets_env(LONG_NAME), LONG_NAME),
        (
            "pipelines.p.actions.1.url_env",
            lambda d: d["pipelines"]["p"]["actions"][1].update(url_env=SLACK_URL),
            "s3cret",
        ),
        (
            "pipelines.p.actions.1.url_env",
            lambda d: d["pipelines"]["p"]["actions"][1].update(url_env=STRIPE_SECRET),
            STRIPE_SECRET[6:],
        ),
        (
            "pipelines.p.actions.1.secret_env",
            lambda d: d["pipelines"]["p"]["actions"][1].update(secret_env=HEX_SECRET),
            HEX_SECRET,
        ),
        (
            "alerts.0.webhook_url_env",
            lambda d: d.update(alerts=[{"type": "slack", "webhook_url_env": BASE64_SECRET, "text": "x"}]),
            BASE64_SECRET,
        ),
    ],
)
def test_a_secret_written_where_its_variable_name_belongs_is_refused_unquoted(
    where: str, mutate: Any, secret: str
) -> None:
    """A newcomer pastes the secret itself into `secrets_env` or `url_env`. `hookline check`, `hookline
    dev` and every process refusing to start (a release step's log) printed it back (`'https://hooks.
    slack.com/…' is not an environment variable name`), and a Stripe secret, which looks like a name,
    went on to the warning `none of ['whsec_…'] is set`. So did a secret without a known prefix made of
    letters and digits only (40 hex digits, base64 without + / =, an API key): it reads as a name. The
    key is named, the value never."""
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    error = _err(data)
    assert error.startswith(f"{where}: ") and error.count("\n") == 0, error
    assert secret not in error and secret[:12] not in error, error


@pytest.mark.parametrize(
    "name",
    ["STRIPE_WEBHOOK_SECRET", "MY_SECRET_2", "stripe_secret", "OAUTH2_CLIENT_SECRET", "GH_APP_SECRET_20261204", "S"],
)
def test_a_variable_name_is_taken_as_one(name: str) -> None:
    """Names of variables, however written, are not mistaken for a secret (letters and digits mixed in
    words between underscores, lower case, a date)."""
    data = {**GOOD, "sources": {"stripe": {"provider": "stripe", "secrets_env": [name]}}}
    assert parse_config(data).sources["stripe"].secrets_env == (name,)


def test_hookline_check_names_a_python_target_that_does_not_import_in_alerts_too() -> None:
    """An ``[[alerts]]`` python action was never imported by ``hookline check``: its first alert failed."""
    data = {**GOOD, "alerts": [{"type": "python", "target": "no_such_module_here:notify"}]}
    problems = environment_problems(parse_config(data), {"STRIPE_SECRET": "s", "CRM_URL": "http://x"})
    assert problems == [
        "alerts.0.target: cannot import 'no_such_module_here': ModuleNotFoundError: "
        "No module named 'no_such_module_here'"
    ]


@pytest.mark.parametrize(
    ("body", "headers", "flagged"),
    [
        ('{"text": "{{ output.reply }}"}', {}, 1),
        ('{"a": "{{ output.a }}", "b": "{% if output.b %}{{ output.b }}{% endif %}"}', {}, 2),
        ('{"a": "say \\"{{ output.a }}\\""}', {"content-type": "application/merge-patch+json"}, 1),
        ('{"text": {{ output.reply | tojson }}, "n": {{ output.n }}}', {}, 0),  # the safe form
        ("Reply: {{ output.reply }}", {"Content-Type": "text/plain"}, 0),  # not sent as JSON
    ],
)
def test_hookline_check_warns_of_values_put_between_json_quotes_without_tojson(
    body: str, headers: dict[str, str], flagged: int
) -> None:
    """A model's answer often holds a quote or a newline: such a body breaks, and the action fails."""
    action = {"type": "http", "url_env": "CRM_URL", "body": body, "headers": headers}
    data = {**GOOD, "alerts": [action]}
    problems = environment_problems(parse_config(data), {"STRIPE_SECRET": "s", "CRM_URL": "http://x"})
    prefix = f"alerts.0.body: {flagged} value(s) put between a JSON string's quotes without | tojson"
    assert [p[: len(prefix)] for p in problems] == ([prefix] if flagged else [])


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "h.toml"
    bad.write_text("[sources.x\nprovider=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    assert load_config(tmp_path / "missing.toml").sources == {}


def test_retry_delay_grows_and_is_capped() -> None:
    from app.core.config import RetryPolicy

    policy = RetryPolicy(backoff_seconds=2, max_backoff_seconds=10, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    assert policy.delay(1, retry_after=7) == 7
    # max_backoff_seconds caps our own backoff, never the API's retry-after (a floor, up to a day)
    assert policy.delay(1, retry_after=3600) == 3600
    assert policy.delay(1, retry_after=10**9) == 86_400
    jittered = RetryPolicy(backoff_seconds=4, max_backoff_seconds=100)
    assert all(2 <= jittered.delay(1) <= 4 for _ in range(50))


@pytest.mark.parametrize("section", ["sources", "pipelines", "schedules"])
def test_a_name_key_inside_a_table_is_refused(section: str) -> None:
    """A table's name is its key: ``name = "notify"`` in two pipelines used to give both the same name,
    so the second one's answer and actions were taken for the first one's and silently dropped."""
    data: dict[str, Any] = {
        "sources": {"gh": {"provider": "github", "secrets_env": ["S"]}},
        "pipelines": {
            "p": {"source": "gh", "instructions": "x", "output_schema": {"type": "object"}},
            "digest": {"source": "schedule", "instructions": "x", "output_schema": {"type": "object"}},
        },
        "schedules": {"daily": {"cron": "0 9 * * *", "pipeline": "digest"}},
    }
    table = next(iter(data[section].values()))
    table["name"] = "other"
    assert f"{section}.{next(iter(data[section]))}.name: unknown key" in _err(data)
    table["name"] = next(iter(data[section]))  # the same as the key: harmless
    assert parse_config(data)
