"""The tracking rewrite of rendered HTML, without a database: links, entities, the pixel."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from daemon.campaigns import tokens
from daemon.campaigns.tracking import Tracker, instrument
from daemon.main import Daemon
from daemon.settings import Settings
from outbox.models import Message, Rendered

KEYS = [b"k"]


def _click(url: str) -> str | None:
    return None if url.startswith("mailto:") else f"https://t.example/c?u={url}"


def test_links_are_rewritten_entities_decoded_and_reescaped() -> None:
    html = (
        '<html><body><a class="b" href="https://shop.example/?a=1&amp;b=2">Shop</a>'
        "<A HREF='http://x.example/p'>x</A><a href=\"mailto:hi@x.example\">mail</a>"
        "<a name=top>no href</a></body></html>"
    )
    out = instrument(html, pixel_url="https://t.example/o", click_url=_click)
    assert 'href="https://t.example/c?u=https://shop.example/?a=1&amp;b=2"' in out
    assert "HREF='https://t.example/c?u=http://x.example/p'" in out
    assert 'href="mailto:hi@x.example"' in out
    assert "<a name=top>no href</a>" in out
    pixel = (
        '<img src="https://t.example/o" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    assert out.endswith(pixel + "</body></html>")


def test_the_pixel_goes_at_the_end_without_a_body_tag() -> None:
    out = instrument("<p>hi</p>", pixel_url="https://t.example/o?a=1&b=2", click_url=_click)
    assert out.startswith('<p>hi</p><img src="https://t.example/o?a=1&amp;b=2"')


def _message(category: str = "marketing", channel: str = "email") -> Message:
    return Message(
        id=41, channel=channel, recipient="ann@example.com", template="newsletter", context={},
        category=category, priority=0, locale=None, tags={}, attempts=1, expires_at=None,
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def test_tracker_signs_each_link_for_its_message_and_skips_its_own_links() -> None:
    tracker = Tracker(base_url="https://mail.acme.example/", keys=KEYS)
    html = (
        '<body><a href="https://shop.example/sale">Sale</a>'
        '<a href="https://mail.acme.example/unsubscribe?token=abc">Unsubscribe</a></body>'
    )
    out = tracker(_message(), Rendered(subject="s", text="t", html=html)).html or ""
    assert "https://shop.example/sale" not in out
    assert 'href="https://mail.acme.example/unsubscribe?token=abc"' in out
    click = out.split('href="https://mail.acme.example/t/c/')[1].split('"')[0]
    assert tokens.read_click_token(KEYS, click) == (41, "https://shop.example/sale")
    pixel = out.split('src="https://mail.acme.example/t/o/')[1].split('"')[0]
    assert tokens.read_open_token(KEYS, pixel) == 41


def test_transactional_mail_and_text_only_mail_are_left_alone() -> None:
    tracker = Tracker(base_url="https://mail.acme.example", keys=KEYS)
    rendered = Rendered(subject="s", text="t", html='<a href="https://x.example/reset">r</a>')
    assert tracker(_message("transactional"), rendered) is rendered
    text_only = Rendered(subject="s", text="https://x.example")
    assert tracker(_message(), text_only) is text_only


def test_only_mail_we_build_ourselves_is_tracked_and_only_when_enabled(tmp_path: Path) -> None:
    def tracker(provider: str, enabled: bool) -> object:
        settings = Settings(
            data_dir=tmp_path, secret_key="k", tracking={"enabled": enabled},
            email={"provider": provider},
        )  # fmt: skip
        return Daemon(settings, dsn="postgresql://unused").tracker

    assert isinstance(tracker("smtp", True), Tracker)
    assert isinstance(tracker("file", True), Tracker)
    assert tracker("ses", True) is None  # SES counts opens and clicks itself
    assert tracker("smtp", False) is None
