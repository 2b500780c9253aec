"""Follow-up actions: deliver an answer to the sender's own reply channel.

Meant for ``respond = "sync"`` pipelines whose answer came after the deadline (the HTTP reply was
``respond_default``): ``late_only = true`` (the default) posts only then, so a sender never gets the
same answer twice. On an ``async`` pipeline they always post.

* ``slack_response`` — POST to the ``response_url`` of a Slack slash command or interaction.
* ``discord_followup`` — Discord's follow-up message endpoint
  (``POST {api_base}/webhooks/{application_id}/{token}``), or with ``edit_original`` the deferred
  reply itself (``PATCH …/messages/@original``).

Texts are templates (:mod:`app.core.templates`), checked here at load.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from app.core import templates
from app.core.config._base import Strict


def _check_template(value: Any) -> Any:
    templates.check_value(value)
    return value


class SlackResponseAction(Strict):
    type: Literal["slack_response"]
    name: str | None = None
    late_only: bool = True
    #: Dotted path of the response URL in the payload (slash commands and block actions: response_url).
    response_url: str = "response_url"
    #: Hosts a response URL may point at (Slack's is hooks.slack.com); https unless loopback.
    allowed_hosts: tuple[str, ...] = ("hooks.slack.com",)
    text: str | None = None
    blocks: Any = None
    response_type: Literal["ephemeral", "in_channel"] = "ephemeral"
    replace_original: bool | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)

    _templates = field_validator("text", "blocks")(classmethod(lambda cls, v: _check_template(v)))

    @model_validator(mode="after")
    def _something(self) -> SlackResponseAction:
        if self.text is None and self.blocks is None:
            raise ValueError("slack_response needs text or blocks (templates over the output)")
        return self


class DiscordFollowupAction(Strict):
    type: Literal["discord_followup"]
    name: str | None = None
    late_only: bool = True
    api_base: str = "https://discord.com/api/v10"
    content: str | None = None
    embeds: Any = None
    ephemeral: bool = False
    #: PATCH the deferred original response (after a type 5 reply) instead of posting a new message.
    edit_original: bool = False
    timeout_seconds: float | None = Field(default=None, gt=0)

    _templates = field_validator("content", "embeds")(classmethod(lambda cls, v: _check_template(v)))

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("api_base must be an https URL (or a loopback URL for tests)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _something(self) -> DiscordFollowupAction:
        if self.content is None and self.embeds is None:
            raise ValueError("discord_followup needs content or embeds (templates over the output)")
        return self


FOLLOWUP_TYPES = ("slack_response", "discord_followup")
