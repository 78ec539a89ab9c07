from __future__ import annotations

import pytest

from daemon import settings
from outbox import errors


def test_defaults_need_no_configuration() -> None:
    loaded = settings.load()
    assert loaded.database_url is None
    assert loaded.email.provider == "file"
    assert loaded.sms.provider == "file"
    assert (loaded.http.host, loaded.http.port) == ("127.0.0.1", 8025)


def test_nested_variables_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXD_EMAIL__FROM", "Acme <hi@acme.example>")
    monkeypatch.setenv("OUTBOXD_EMAIL__RATE", "14")
    monkeypatch.setenv("OUTBOXD_FEEDBACK__TOPIC_ARNS", "arn:aws:sns:us-east-1:1:a, arn:x:b")
    monkeypatch.setenv("OUTBOXD_SECRET_KEY", "new,old")
    monkeypatch.setenv("OUTBOXD_SMTP__TLS", "starttls")
    loaded = settings.load()
    assert loaded.email.sender == "Acme <hi@acme.example>"
    assert loaded.email.rate == 14
    assert loaded.feedback.topic_arns == ("arn:aws:sns:us-east-1:1:a", "arn:x:b")
    assert [k.get_secret_value() for k in loaded.secret_key] == ["new", "old"]
    assert loaded.smtp.tls == "starttls"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("OUTBOXD_EMAIL__RATE", "fast", "invalid setting OUTBOXD_EMAIL__RATE: "),
        ("OUTBOXD_EMAIL__PROVIDER", "pigeon", "invalid setting OUTBOXD_EMAIL__PROVIDER: "),
        ("OUTBOXD_SMTP__PORT", "70000", "invalid setting OUTBOXD_SMTP__PORT: "),
        ("OUTBOXD_WORKER__CONCURRENCY", "0", "invalid setting OUTBOXD_WORKER__CONCURRENCY: "),
        ("OUTBOXD_DATABASE_URL", "mysql://x", "invalid setting OUTBOXD_DATABASE_URL: "),
        ("OUTBOXD_WORKER__LEASE_SECONDS", "3", "invalid setting OUTBOXD_WORKER__LEASE_SECONDS: "),
    ],
)
def test_bad_settings_name_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(errors.ConfigurationError) as caught:
        settings.load()
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXD_DATABASE_URL", "mysql://user:hunter2@db")
    with pytest.raises(errors.ConfigurationError) as caught:
        settings.load()
    assert "hunter2" not in str(caught.value)


def test_settings_are_frozen() -> None:
    loaded = settings.load()
    with pytest.raises(Exception, match="frozen"):
        loaded.data_dir = loaded.data_dir  # type: ignore[misc]


def test_systemd_credentials_fill_unset_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "secret_key").write_text("from-credential\n")
    (directory / "smtp_password").write_text("pw\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    loaded = settings.load()
    assert [k.get_secret_value() for k in loaded.secret_key] == ["from-credential"]
    assert loaded.smtp.password is not None and loaded.smtp.password.get_secret_value() == "pw"
    # An explicit variable wins over the credential.
    monkeypatch.setenv("OUTBOXD_SECRET_KEY", "from-env")
    assert [k.get_secret_value() for k in settings.load().secret_key] == ["from-env"]
