"""The console's pure parts: sessions and CSRF tokens, the search SQL builder, the charts,
the template gallery (against the bundled templates and a broken one), its settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from daemon import settings
from daemon.delivery.render import Renderer
from daemon.http.console import auth, charts, gallery, queries
from daemon.http.console.common import filters_from
from daemon.http.console.queries import Filters
from outbox import errors

SECRET = "s3cret-console-token"


def test_a_session_holds_until_it_expires_and_only_under_its_own_token() -> None:
    session = auth.new_session(SECRET, 1, now=1000)
    assert auth.valid_session(SECRET, session, now=1000 + 3599)
    assert not auth.valid_session(SECRET, session, now=1000 + 3600)  # expired
    assert not auth.valid_session("another-token-entirely", session, now=1000)  # token changed
    expires, mac = session.split(".")
    assert not auth.valid_session(SECRET, f"{int(expires) + 9999}.{mac}", now=1000)  # extended
    for forged in ("", "x", "1.2.3", f"{expires}.", f".{mac}", "9999999999.00"):
        assert not auth.valid_session(SECRET, forged, now=1000)


def test_the_csrf_token_is_the_sessions_own() -> None:
    one, two = auth.new_session(SECRET, 1, now=0), auth.new_session(SECRET, 2, now=0)
    assert auth.csrf_token(SECRET, one) == auth.csrf_token(SECRET, one)
    assert auth.csrf_token(SECRET, one) != auth.csrf_token(SECRET, two)
    assert auth.csrf_token(SECRET, one) != one.split(".")[1]  # not the cookie's MAC either


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({"Origin": "http://console.test:8026"}, True),
        ({"Origin": "http://evil.test"}, False),
        ({"Origin": "http://console.test:8027"}, False),
        ({"Origin": "https://console.test:8026"}, False),
        ({"Origin": "null"}, False),
        ({"Referer": "http://console.test:8026/console/messages?x=1"}, True),
        ({"Referer": "http://evil.test/console"}, False),
        ({}, False),
    ],
)
def test_actions_must_come_from_the_console_itself(headers: dict[str, str], same: bool) -> None:
    request = make_mocked_request(
        "POST", "/console/messages/action", headers={"Host": "console.test:8026", **headers}
    )
    assert auth.same_origin(request) is same


def test_statuses_are_literals_and_every_other_value_a_parameter() -> None:
    args: list[object] = []
    where = queries.where(
        Filters(recipient="o'brien@example.com", status="pending", template="x'; DROP"), args
    )
    assert where == "lower(recipient) = lower($1) AND status = 'pending' AND template = $2"
    assert args == ["o'brien@example.com", "x'; DROP"]
    with pytest.raises(ValueError, match="unknown status"):
        Filters(status="pending'; DROP TABLE outbox.message; --")
    with pytest.raises(ValueError, match="unknown channel"):
        Filters(channel="fax")


def test_an_action_keeps_to_the_statuses_it_applies_to() -> None:
    args: list[object] = []
    assert queries.where(Filters(), args, statuses=("failed", "expired")) == (
        "status IN ('failed', 'expired')"
    )
    assert queries.where(Filters(status="failed"), [], statuses=("failed",)) == "status = 'failed'"
    # A search for sent messages retries nothing.
    assert queries.where(Filters(status="sent"), [], statuses=("failed",)) == "status = '-none-'"
    # Leased rows are found through the lease index's own predicate.
    assert "locked_until IS NOT NULL" in queries.where(Filters(status="sending"), [])


def test_search_forms_are_read_strictly() -> None:
    found = filters_from({"recipient": " Ann@Example.com ", "since": "2026-05-04T09:30"})
    assert found.recipient == "Ann@Example.com"
    assert found.since == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
    for bad in ({"campaign": "1; DROP"}, {"since": "yesterday"}, {"status": "lost"}):
        with pytest.raises(ValueError):
            filters_from(bad)
    assert filters_from({}).empty


def test_charts_are_inline_svg_without_styles() -> None:
    drawn = charts.bars([0, 1, 4, 2], label="sends <per> minute")
    assert drawn.count("<rect") == 4 and "style=" not in drawn
    assert "sends &lt;per&gt; minute" in drawn
    assert 'class="fill over"' in charts.gauge(0.06, 0.05, label="bounces")
    assert 'class="fill ok"' in charts.gauge(0.0, 0.05, label="bounces")


def test_every_bundled_template_has_an_example_that_renders_without_warnings() -> None:
    renderer = Renderer.from_settings(settings.Settings())
    listed = gallery.gallery(renderer)
    assert {t.name for t in listed} >= {"welcome", "digest", "sms/verification_code"}
    for info in listed:
        assert info.example is not None, info.name
        assert info.warnings == [], (info.name, info.warnings)
        for shown in gallery.previews(renderer, info):
            assert shown.error is None, (info.name, shown)
    welcome = gallery.describe(renderer, "welcome")
    assert welcome.locales == ["fr"] and welcome.channels == ["email", "inapp"]


def test_the_gallery_warns_of_missing_parts_examples_and_variables(tmp_path: Path) -> None:
    (tmp_path / "promo").mkdir()
    (tmp_path / "promo" / "subject.j2").write_text("Hi {{ name }}")
    (tmp_path / "promo" / "text.j2").write_text("{{ offer }} {{ unsubscribe_url }}")
    (tmp_path / "promo" / "html.de.j2").write_text("<p>{{ offer }}</p>")
    (tmp_path / "promo" / "example.json").write_text(json.dumps({"name": "Ann"}))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "sms.j2").write_text("{{ code }}")
    renderer = Renderer(tmp_path)
    listed = {t.name: t for t in gallery.gallery(renderer)}
    promo = listed["promo"].warnings
    assert "locale de: subject, text fall back to the plain part" in promo
    assert any(w.startswith("example.json lacks offer") for w in promo)
    assert any("'offer' is undefined" in w for w in promo)  # the preview's own failure
    assert listed["bare"].warnings == ["no example.json: nothing to preview with"]


def test_a_short_console_token_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTBOXD_CONSOLE__TOKEN", "short")
    with pytest.raises(errors.ConfigurationError) as caught:
        settings.load()
    message = str(caught.value)
    assert message.startswith("invalid setting OUTBOXD_CONSOLE__TOKEN: must be at least 16")
    assert "short" not in message  # a secret is never echoed, even a bad one


def test_actions_go_back_only_to_console_pages() -> None:
    from daemon.http.console.common import console_path, number

    assert console_path("/console/messages?status=failed") == "/console/messages?status=failed"
    for elsewhere in ("javascript:alert(1)", "//evil.example/console", "https://evil.example",
                      "/consoleevil", "/console\\\\evil.example", "/metrics"):  # fmt: skip
        assert console_path(elsewhere) == "/console"
    assert number("42") == 42
    assert [number(v) for v in ("²", "٣", "-1", "1e3", "", "9" * 19)] == [None] * 6
