"""The respond* keys and follow-up actions are checked at config load, naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import parse_config
from app.core.config.respond import _overlap
from app.core.errors import ConfigError

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}


def config(*pipelines: dict[str, Any], source: str = "slack") -> Any:
    return parse_config(
        {
            "sources": {"s": {"provider": source, "secrets_env": "X"}},
            "pipelines": {
                f"p{i}": {"source": "s", "instructions": "x", "output_schema": SCHEMA, **p}
                for i, p in enumerate(pipelines)
            },
        }
    )


def error_of(*pipelines: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        config(*pipelines)
    return str(e.value)


def test_sync_pipeline_defaults_and_lookup() -> None:
    c = config({"respond": "sync", "events": ["/ask"]}, {"events": ["*"]})
    p = c.pipelines["p0"]
    assert (p.respond_timeout_ms, p.respond_content_type, p.respond_body, p.respond_default) == (
        2500,
        "application/json",
        None,
        None,
    )
    assert c.sync_pipeline_for("s", "/ask") is p
    assert c.sync_pipeline_for("s", "/other") is None


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ({"respond": "later"}, "p0.respond"),
        ({"respond_body": {"text": "x"}}, 'p0: respond_body: only used with respond = "sync"'),
        ({"respond": "sync", "respond_timeout_ms": 0}, "p0.respond_timeout_ms"),
        ({"respond": "sync", "respond_content_type": "text/html"}, "p0.respond_content_type"),
        ({"respond": "sync", "respond_body": {"text": "{{ output.answer "}}, "p0: respond_body: template error"),
        (
            {"respond": "sync", "respond_content_type": "application/xml", "respond_default": "<Response/>"},
            "respond_body: required with respond_content_type = 'application/xml'",
        ),
        (
            {
                "respond": "sync",
                "respond_content_type": "application/xml",
                "respond_body": {"Message": "x"},
                "respond_default": "<Response/>",
            },
            "respond_body: must be a string (a template) for application/xml",
        ),
        ({"actions": [{"type": "slack_response"}]}, "slack_response needs text or blocks"),
        ({"actions": [{"type": "discord_followup", "content": "{% if %}"}]}, "content: template error"),
        (
            {"actions": [{"type": "discord_followup", "content": "x", "api_base": "http://evil.example"}]},
            "api_base must be an https URL",
        ),
    ],
)
def test_bad_respond_settings_name_their_key(pipeline: dict[str, Any], message: str) -> None:
    assert message in error_of(pipeline)


def test_two_sync_pipelines_that_could_answer_one_request_are_refused() -> None:
    msg = error_of({"respond": "sync", "events": ["/ask"]}, {"respond": "sync", "events": ["/a*", "*"]})
    assert 'pipelines.p1.respond: pipelines.p0 is also respond = "sync"' in msg and "'/ask' and '*'" in msg
    config({"respond": "sync", "events": ["a.*"]}, {"respond": "sync", "events": ["b.*", "ab"]})  # disjoint: fine


def test_watched_tables_cannot_be_sync() -> None:
    with pytest.raises(ConfigError, match="has no HTTP request to answer"):
        parse_config(
            {"pipelines": {"p": {"source": "db", "instructions": "x", "output_schema": SCHEMA, "respond": "sync"}}}
        )


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("*", "x", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.*", True),
        ("a.*", "b.*", False),
        ("a.*", "ab", False),
        ("x", "x", True),
        ("x", "y", False),
    ],
)
def test_event_pattern_overlap(a: str, b: str, overlap: bool) -> None:
    assert _overlap(a, b) is overlap and _overlap(b, a) is overlap


def test_worker_remembers_which_pipelines_an_event_goes_to_sync_first() -> None:
    from typing import cast

    from worker.runtime import Runtime

    c = config({"events": ["*"]}, {"respond": "sync", "events": ["/ask"]}, {"events": ["/other"]})
    rt = Runtime(settings=cast(Any, None), config=c, db=cast(Any, None), http=cast(Any, None), llm=None)
    assert [p.name for p in rt.pipelines_for("s", "/ask")] == ["p1", "p0"]  # the sync one first
    assert [p.name for p in rt.pipelines_for("s", "/ask")] == ["p1", "p0"]  # remembered, same answer
    assert [p.name for p in rt.pipelines_for("s", "/other")] == ["p0", "p2"]
    assert rt.pipelines_for("elsewhere", "/ask") == []
    rt.config = config({"events": ["/other"]})  # a new config is asked afresh
    assert [p.name for p in rt.pipelines_for("s", "/ask")] == []
    for i in range(5000):  # event types come from senders: the memory stays bounded
        rt.pipelines_for("s", f"t{i}")
    assert len(rt._matched) <= 4096
