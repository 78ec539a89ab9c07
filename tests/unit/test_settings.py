from __future__ import annotations

from pathlib import Path

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
    monkeypatch.setenv(
        "OUTBOXD_INBOX__ALLOWED_ORIGINS", "https://App.example.com, http://127.0.0.1:8080"
    )
    loaded = settings.load()
    assert loaded.email.sender == "Acme <hi@acme.example>"
    assert loaded.email.rate == 14
    assert loaded.feedback.topic_arns == ("arn:aws:sns:us-east-1:1:a", "arn:x:b")
    assert [k.get_secret_value() for k in loaded.secret_key] == ["new", "old"]
    assert loaded.smtp.tls == "starttls"
    # Origins as browsers send them: scheme and host lower case.
    assert loaded.inbox.allowed_origins == ("https://app.example.com", "http://127.0.0.1:8080")


ORIGINS = "invalid setting OUTBOXD_INBOX__ALLOWED_ORIGINS"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("OUTBOXD_EMAIL__RATE", "fast", "must be a number"),
        ("OUTBOXD_EMAIL__PROVIDER", "pigeon", "must be one of ses, smtp, file or null"),
        ("OUTBOXD_SMTP__PORT", "70000", "must be at most 65535"),
        ("OUTBOXD_SMTP__PORT", "25.5", "must be a whole number"),
        ("OUTBOXD_WORKER__CONCURRENCY", "0", "must be at least 1"),
        ("OUTBOXD_HTTP__ENABLED", "maybe", "must be true or false"),
        ("OUTBOXD_PUBLIC_URL", "notify", "must be a URL"),
        ("OUTBOXD_DATABASE_URL", "mysql://x", "must be a postgresql:// URL"),
        ("OUTBOXD_DATABASE__LISTEN_URL", "mysql://x", "must be a postgresql:// URL"),
        ("OUTBOXD_WORKER__LEASE_SECONDS", "3", "3 must exceed twice the send timeout"),
        ("OUTBOXD_EMAIL", "{not json", "not valid JSON"),
        ("OUTBOXD_TEMPLATES_DIR", "/no/such/dir", "no such directory"),
        ("OUTBOXD_EMAIL__FROM", "not-an-address", "must be an email address"),
        ("OUTBOXD_EMAIL__FROM", "a@x.example, b@x.example", "must be an email address"),
        ("OUTBOXD_EMAIL__FROM", "Acme <hi@>", "must be an email address"),
        ("OUTBOXD_EMAIL__REPLY_TO", "support", "must be an email address"),
        ("OUTBOXD_HTTP__ADMIN_PORT", "8025", "must"),
        ("OUTBOXD_HTTP__MAX_CONNECTIONS", "0", "must"),
        ("OUTBOXD_SMS__MAX_SEGMENTS", "50", "must"),
        ("OUTBOXD_INBOX__ALLOWED_ORIGINS", "http://a.t/", "'http://a.t/' is not an origin"),
        ("OUTBOXD_INBOX__ALLOWED_ORIGINS", "a.test", "'a.test' is not an origin"),
        ("OUTBOXD_INBOX__HEARTBEAT_SECONDS", "0", "must"),
    ],
)
def test_bad_settings_name_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(errors.ConfigurationError) as caught:
        settings.load()
    message = str(caught.value)
    assert message.startswith(f"invalid setting {name}: {words}")
    assert "\n" not in message
    assert "Input should" not in message and "Value error" not in message  # pydantic's words


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("OUTBOXD_EMAIL__PROVDER", "(did you mean OUTBOXD_EMAIL__PROVIDER?)"),
        ("OUTBOXD_WORKER__CONCURENCY", "(did you mean OUTBOXD_WORKER__CONCURRENCY?)"),
        ("OUTBOXD_DATABSE_URL", "(did you mean OUTBOXD_DATABASE_URL?)"),
        ("OUTBOXD_EMAIL_PROVIDER", "(did you mean OUTBOXD_EMAIL__PROVIDER?)"),
        ("outboxd_smtp__pasword", "(did you mean OUTBOXD_SMTP__PASSWORD?)"),
        ("OUTBOXD_COLOUR", ""),
    ],
)
def test_unknown_variables_are_refused_with_the_likely_name(
    monkeypatch: pytest.MonkeyPatch, name: str, expected: str
) -> None:
    monkeypatch.setenv(name, "hunter2")
    with pytest.raises(errors.ConfigurationError) as caught:
        settings.load()
    assert str(caught.value) == f"unknown setting {name} {expected}".strip()
    assert "hunter2" not in str(caught.value)


def test_every_unknown_variable_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXD_EMAIL__PROVDER", "ses")
    monkeypatch.setenv("OUTBOXD_SMS__RAET", "2")
    with pytest.raises(errors.ConfigurationError) as caught:
        settings.load()
    assert str(caught.value) == (
        "unknown setting OUTBOXD_EMAIL__PROVDER (did you mean OUTBOXD_EMAIL__PROVIDER?); "
        "unknown setting OUTBOXD_SMS__RAET (did you mean OUTBOXD_SMS__RATE?)"
    )


def test_variables_outboxd_sets_for_itself_and_its_tests_are_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from daemon.processes import child_environment

    for name, value in child_environment({}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OUTBOXD_TEST_DATABASE_URL", "postgresql://x/y")  # read by tests/
    monkeypatch.setenv("OUTBOXD_BENCH_CELERY_BROKER", "redis://")  # read by bench's peer
    loaded = settings.load()
    assert loaded.http.enabled is False and loaded.migrate_on_start is False


def test_a_sender_may_have_a_display_name_and_a_development_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.load().email.sender == "outboxd <outboxd@localhost>"  # the default holds
    monkeypatch.setenv("OUTBOXD_EMAIL__FROM", '"Acme, Inc." <hi@acme.test>')
    monkeypatch.setenv("OUTBOXD_EMAIL__REPLY_TO", "help@acme.example")
    assert settings.load().email.sender == '"Acme, Inc." <hi@acme.test>'


def test_a_relative_templates_dir_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTBOXD_TEMPLATES_DIR", "mytemplates")
    with pytest.raises(errors.ConfigurationError, match=f"looked for {tmp_path}/mytemplates"):
        settings.load()
    (tmp_path / "mytemplates").mkdir()
    assert settings.load().templates_path == Path("mytemplates")


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
