from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from daemon.providers.mime import build_email, format_address, message_id, sender_domain
from outbox import errors
from outbox.models import Message, Rendered

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
LONG = "<https://mail.acme.example/unsubscribe?token=" + "x" * 400 + ">"


def _message(recipient: str = "zoe@example.com") -> Message:
    return Message(7, "email", recipient, "welcome", {}, "news", 1, None, {}, 1, None, CREATED)


def _parse(data: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_multipart_alternative_round_trips() -> None:
    rendered = Rendered(
        subject="Bienvenue chez Acme, Zoë !",
        text="Bonjour Zoë,\nligne 2 — fin",
        html="<p>Bonjour <b>Zoë</b></p>",
        headers={"List-Unsubscribe": LONG, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )
    data = build_email(_message(), rendered, sender="Équipe Acme <noreply@acme.example>",
                       reply_to="help@acme.example")  # fmt: skip
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    parsed = _parse(data)
    assert parsed.get_content_type() == "multipart/alternative"
    assert str(parsed["Subject"]) == "Bienvenue chez Acme, Zoë !"
    assert parsed["From"].addresses[0].display_name == "Équipe Acme"
    assert parsed["From"].addresses[0].addr_spec == "noreply@acme.example"
    assert str(parsed["Reply-To"]) == "help@acme.example"
    assert str(parsed["List-Unsubscribe"]) == LONG  # not folded, not encoded
    assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(parsed["Message-ID"]) == message_id(_message(), "acme.example")
    assert parsed["Date"] is not None and parsed["MIME-Version"] == "1.0"
    text, html = [part.get_content() for part in parsed.iter_parts()]
    assert text.replace("\r\n", "\n").strip() == "Bonjour Zoë,\nligne 2 — fin"
    assert html.strip() == "<p>Bonjour <b>Zoë</b></p>"


def test_text_only_is_a_single_part() -> None:
    parsed = _parse(
        build_email(_message(), Rendered(subject="Hi", text="plain"), sender="a@b.example")
    )
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().strip() == "plain"


def test_header_injection_is_impossible() -> None:
    rendered = Rendered(
        subject="Hello\r\nBcc: victim@example.com",
        text="x",
        headers={"X-Campaign": "a\nBcc: victim@example.com"},
    )
    parsed = _parse(
        build_email(_message(), rendered, sender="Evil\r\nBcc: v@x.example <a@b.example>")
    )
    assert parsed["Bcc"] is None
    assert "Bcc" in str(parsed["Subject"])  # kept as text on the same line


def test_message_id_is_stable_per_message() -> None:
    first = _parse(
        build_email(_message(), Rendered(subject="a", text="b"), sender="a@acme.example")
    )
    second = _parse(
        build_email(_message(), Rendered(subject="a", text="b"), sender="a@acme.example")
    )
    assert first["Message-ID"] == second["Message-ID"]


def test_long_lines_in_bodies_are_wrapped_for_smtp() -> None:
    data = build_email(
        _message(),
        Rendered(subject="s", text="w" * 5000, html="<p>" + "h" * 5000),
        sender="a@b.example",
    )
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_oversized_header_is_refused_for_good() -> None:
    # Permanent: the same row would fail the same way on every attempt.
    with pytest.raises(errors.PermanentError, match="more than the 998"):
        build_email(
            _message(),
            Rendered(subject="s", text="t", headers={"X-Big": "y" * 1000}),
            sender="a@b.example",
        )


def test_addresses() -> None:
    assert sender_domain("Acme <hi@Acme.example>") == "Acme.example"
    assert sender_domain("nobody") == "localhost"
    assert format_address("plain@example.com") == "plain@example.com"
    assert format_address("Zoë <z@example.com>").startswith("=?utf-8?")
    with pytest.raises(ValueError):
        format_address("")


def _encodings(data: bytes) -> list[str]:
    return [str(part["Content-Transfer-Encoding"]) for part in _parse(data).walk()
            if not part.is_multipart()]  # fmt: skip


def test_plain_ascii_parts_go_as_7bit_and_round_trip() -> None:
    text = "Hi Ann,\n.a line starting with a dot\n\nbye \n"
    html = '<p style="margin:0">Hi <b>Ann</b> = you</p>\r\n<p>2</p>'
    rendered = Rendered(subject="s", text=text, html=html)
    data = build_email(_message(), rendered, sender="a@b.example")
    assert _encodings(data) == ["7bit", "7bit"]
    assert b"\n" not in data.replace(b"\r\n", b"")
    parsed_text, parsed_html = [part.get_content() for part in _parse(data).iter_parts()]
    assert parsed_text.replace("\r\n", "\n") == text
    assert parsed_html.replace("\r\n", "\n") == html.replace("\r\n", "\n")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("x" * 999, id="a line longer than 998"),
        pytest.param("short\n" + "y" * 1200 + "\nend", id="one long line among short ones"),
        pytest.param("Zoë", id="not ascii"),
        pytest.param("nul\x00here", id="NUL"),
    ],
)
def test_what_7bit_cannot_carry_is_quoted_printable(body: str) -> None:
    data = build_email(_message(), Rendered(subject="s", text=body), sender="a@b.example")
    assert _encodings(data) == ["quoted-printable"]
    assert max(map(len, data.split(b"\r\n"))) <= 998
    assert _parse(data).get_content().replace("\r\n", "\n").rstrip("\n") == body


@pytest.mark.parametrize(
    "value",
    ["ann@example.com", "a.b+c@sub.example.org", "Ann <ann@example.com>", '"A, B" <ab@x.example>',
     "a..b@example.com", ".a@example.com", "a@example..com", "Zoë <z@example.com>"],
)  # fmt: skip
def test_format_address_fast_path_agrees_with_the_parser(value: str) -> None:
    import email.utils

    name, address = email.utils.parseaddr(value)
    expected = (address if not name else email.utils.formataddr((name, address), "utf-8")) or None
    try:
        got: str | None = format_address(value)
    except ValueError:
        got = None
    assert got == expected
