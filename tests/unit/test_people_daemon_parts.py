"""Pure parts of the daemon's people layer: preference tokens, person links, in-app items,
the in-app render parts, switches and the people settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import settings
from daemon.delivery.person_links import PersonLinks
from daemon.delivery.render import Renderer
from daemon.people.profiles import switch_is_on
from daemon.providers.inapp import InappProvider, item_url
from outbox import errors, resources
from outbox.models import Message, Rendered
from outbox.person_tokens import (
    InvalidPreferenceToken,
    make_preference_token,
    read_preference_token,
)

KEY, OLD = b"k" * 32, b"o" * 32


def _message(**fields: Any) -> Message:
    values: dict[str, Any] = {
        "id": 7, "channel": "email", "recipient": "ann@example.com", "template": "t",
        "context": {}, "category": "news", "priority": 1, "locale": None, "tags": {},
        "attempts": 1, "expires_at": None, "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }  # fmt: skip
    values.update(fields)
    return Message(**values)


# Preference tokens -------------------------------------------------------------------


def test_preference_token_round_trip_and_rotation() -> None:
    token = make_preference_token(
        [OLD], recipient_key="Zoë:42", channel="sms", category="news", now=1000
    )
    assert token.startswith("p1.")
    claim = read_preference_token([KEY, OLD], token, now=1000)
    assert (claim.recipient_key, claim.channel, claim.category) == ("Zoë:42", "sms", "news")
    with pytest.raises(InvalidPreferenceToken, match="signature"):
        read_preference_token([KEY], token, now=1000)


def test_preference_token_expires() -> None:
    token = make_preference_token(
        [KEY], recipient_key="u1", channel="email", category="news", ttl_seconds=10, now=1000
    )
    assert read_preference_token([KEY], token, now=1010).recipient_key == "u1"
    with pytest.raises(InvalidPreferenceToken, match="expired"):
        read_preference_token([KEY], token, now=1011)


def test_preference_token_tampering_is_refused() -> None:
    token = make_preference_token([KEY], recipient_key="u1", channel="email", category="news")
    parts = token.split(".")
    for i, replacement in ((1, "dTI"), (2, "sms"), (3, "dGlwcw"), (4, "9999999999")):
        forged = ".".join([*parts[:i], replacement, *parts[i + 1 :]])
        with pytest.raises(InvalidPreferenceToken):
            read_preference_token([KEY], forged)
    # An inbox subscriber token (v1.<key>.<expires>.<sig>) is no preference token.
    with pytest.raises(InvalidPreferenceToken, match="malformed"):
        read_preference_token([KEY], "v1.dTE.9999999999.AAAA")


@given(st.text(max_size=120))
def test_any_text_is_refused_cleanly(text: str) -> None:
    with pytest.raises(InvalidPreferenceToken):
        read_preference_token([KEY], text)


# Person links -------------------------------------------------------------------------


def _base(message: Message) -> tuple[dict[str, Any], dict[str, str]]:
    return {"unsubscribe_url": "base"}, {"X-Base": "1"}


def test_address_level_rows_keep_their_links() -> None:
    links = PersonLinks(_base, public_url="https://n.example/", keys=[KEY])
    assert links(_message()) == ({"unsubscribe_url": "base"}, {"X-Base": "1"})


def test_a_persons_email_links_to_the_persons_page() -> None:
    links = PersonLinks(_base, public_url="https://n.example/", keys=[KEY], mailto="u@n.example")
    context, headers = links(_message(recipient_key="u1"))
    url = context["unsubscribe_url"]
    assert url == context["preferences_url"]
    assert url.startswith("https://n.example/preferences?token=p1.")
    claim = read_preference_token([KEY], url.split("token=")[1])
    assert (claim.recipient_key, claim.channel, claim.category) == ("u1", "email", "news")
    assert headers == {
        "List-Unsubscribe": f"<{url}>, <mailto:u@n.example?subject=unsubscribe%20news>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_transactional_and_non_email_person_rows() -> None:
    links = PersonLinks(_base, public_url="https://n.example", keys=[KEY])
    context, headers = links(_message(recipient_key="u1", category="transactional"))
    assert set(context) == {"preferences_url"} and headers == {}
    context, headers = links(_message(recipient_key="u1", channel="inapp", recipient="u1"))
    assert set(context) == {"preferences_url", "unsubscribe_url"} and headers == {}


# In-app items -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://app.example/b/7", "HTTP://app.example", "/bookings/7", " /b ", None],
)
def test_urls_an_inbox_may_link_to(url: str | None) -> None:
    assert item_url({"url": url} if url is not None else {}) == (url.strip() if url else None)


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "data:text/html,x", "//evil.example", "/\\evil.example",
     "bookings/7", "https://x.example/a\nb", "https://" + "a" * 5000, 42, ["/x"]],
)  # fmt: skip
def test_urls_an_inbox_refuses(url: object) -> None:
    with pytest.raises(errors.PermanentError, match="context url"):
        item_url({"url": url})


async def test_an_item_carries_what_the_inbox_stores() -> None:
    message = _message(
        channel="inapp", recipient="u1", recipient_key="u1", notification_id=9,
        context={"url": "/b/7", "data": {"booking": 7}, "secret": "x"}, priority=2,
    )  # fmt: skip
    receipt = await InappProvider().send(message, Rendered(subject="T", inapp="B\x00ody"))
    item = receipt.item
    assert item is not None
    assert (item.recipient_key, item.notification_id, item.category, item.priority) == (
        "u1",
        9,
        "news",
        2,
    )
    assert (item.title, item.body, item.url) == ("T", "Body", "/b/7")
    assert json.loads(item.data) == {"booking": 7}  # `data` only, not the whole context
    lone = await InappProvider().send(
        _message(channel="inapp", context={"data": [1]}), Rendered(subject="\ud800T")
    )
    assert lone.item is not None and lone.item.title == "?T" and lone.item.data == "{}"


# Render parts -------------------------------------------------------------------------


def test_inapp_parts_title_and_body_with_locale_variants(tmp_path: Path) -> None:
    brand = {"name": "Acme", "url": "u", "address": ""}
    renderer = Renderer(resources.bundled_templates_dir(), brand=brand)
    context = {"name": "Ann <b>", "login_url": "x"}
    rendered = renderer.render(channel="inapp", template="welcome", context=context)
    assert rendered.subject == "Welcome to Acme, Ann <b>!"  # plain text: not escaped
    assert rendered.inapp == "Your Acme account is ready. Sign in to get started."
    french = renderer.render(channel="inapp", template="welcome", context=context, locale="fr")
    assert french.subject == "Bienvenue chez Acme, Ann <b> !"
    (tmp_path / "only_title").mkdir()
    (tmp_path / "only_title" / "subject.j2").write_text("Hello\n{{ x }}\n")
    title_only = Renderer(tmp_path).render(
        channel="inapp", template="only_title", context={"x": "there"}
    )
    assert (title_only.subject, title_only.inapp) == ("Hello there", "")
    (tmp_path / "no_title").mkdir()
    (tmp_path / "no_title" / "inapp.j2").write_text("body")
    with pytest.raises(errors.TemplateError, match=r"no subject\.j2"):
        Renderer(tmp_path).render(channel="inapp", template="no_title", context={})


# Switches and settings ----------------------------------------------------------------


def test_the_most_specific_switch_wins() -> None:
    switches = {("*", "*"): False, ("*", "news"): True, ("email", "*"): False}
    assert switch_is_on({}, "email", "news") is True
    assert switch_is_on(switches, "sms", "tips") is False  # * *
    assert switch_is_on(switches, "sms", "news") is True  # * news
    assert switch_is_on(switches, "email", "news") is False  # email * beats * news
    assert switch_is_on({**switches, ("email", "news"): True}, "email", "news") is True


def test_people_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.load().people.hourly_cap is None
    monkeypatch.setenv("OUTBOXD_PEOPLE__HOURLY_CAP", "5")
    monkeypatch.setenv("OUTBOXD_PEOPLE__CATEGORIES", "news, tips")
    loaded = settings.load()
    assert (loaded.people.hourly_cap, loaded.people.categories) == (5, ("news", "tips"))
    monkeypatch.setenv("OUTBOXD_PEOPLE__HOURLY_CAP", "0")
    with pytest.raises(errors.ConfigurationError, match="OUTBOXD_PEOPLE__HOURLY_CAP"):
        settings.load()
    monkeypatch.setenv("OUTBOXD_PEOPLE__HOURLY_CAP", "5")
    monkeypatch.setenv("OUTBOXD_PEOPLE__CATEGORIES", "news,transactional")
    with pytest.raises(errors.ConfigurationError, match="OUTBOXD_PEOPLE__CATEGORIES"):
        settings.load()


def test_the_inapp_channel_has_the_local_send_timeout() -> None:
    loaded = settings.load(smtp={"timeout": 50.0}, email={"provider": "smtp"},
                           worker={"lease_seconds": 120})  # fmt: skip
    assert loaded.send_timeout("inapp") == settings.LOCAL_SEND_TIMEOUT
