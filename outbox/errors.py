"""The exception tree. Each class's docstring is its default message.

The class of an error carries the decision about what happens to the message:

* :class:`PermanentError` - never retried; the message becomes ``failed`` now.
* :class:`TransientError` - retried with backoff until attempts run out.
* :class:`Throttled` - retried later without using an attempt; the channel slows down.
* :class:`ChannelPaused` - the provider refuses all sends (e.g. account paused); the
  channel's circuit opens, the message is retried later without using an attempt.
* :class:`Suppressed` - the recipient must not be contacted.
"""

from __future__ import annotations


class OutboxError(Exception):
    """outboxd error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def reason(self) -> str:
        """The human-readable reason, as stored in ``last_error``."""
        return str(self.args[0]) if self.args else type(self).__name__


class ConfigurationError(OutboxError):
    """Invalid configuration."""


class SchemaError(OutboxError):
    """The database schema is missing or not current: run `outboxd migrate`."""


class PermanentError(OutboxError):
    """Permanent delivery failure."""


class TemplateError(PermanentError):
    """The template could not be rendered."""


class InvalidRecipient(PermanentError):
    """Invalid recipient."""


class TransientError(OutboxError):
    """Temporary delivery failure."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Throttled(TransientError):
    """The provider is throttling us."""


class ChannelPaused(TransientError):
    """The provider has paused sending for this account."""


class Suppressed(OutboxError):
    """The recipient is suppressed or opted out."""


class DatabaseError(OutboxError):
    """The database could not be reached or refused the operation."""


class StatementRefused(DatabaseError):
    """The database refused the values of a statement (a data or constraint error): the
    same statement would be refused again, unlike one that met a lost connection."""
