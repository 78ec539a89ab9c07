"""The settings tree, read once from the environment (prefix ``OUTBOXD_``, nesting ``__``).

Nothing else in outboxd reads ``os.environ``: the tree is built at start-up and passed
down. :func:`load` turns validation errors into one line naming the variable.
"""

from __future__ import annotations

from daemon.settings.campaigns import CampaignSettings, TrackingSettings
from daemon.settings.console import ConsoleSettings
from daemon.settings.loading import credentials, describe, env_name, load
from daemon.settings.sections import (
    ENV_PREFIX,
    LOCAL_SEND_TIMEOUT,
    AwsSettings,
    DatabaseSettings,
    EmailProviderName,
    EmailSettings,
    FeedbackSettings,
    FileSettings,
    HttpSettings,
    InboxSettings,
    PeopleSettings,
    PoolMode,
    SesSettings,
    SmsProviderName,
    SmsSettings,
    SmtpSettings,
    SmtpTls,
    WorkerSettings,
)
from daemon.settings.tree import Settings

__all__ = [
    "ENV_PREFIX",
    "LOCAL_SEND_TIMEOUT",
    "AwsSettings",
    "CampaignSettings",
    "ConsoleSettings",
    "DatabaseSettings",
    "EmailProviderName",
    "EmailSettings",
    "FeedbackSettings",
    "FileSettings",
    "HttpSettings",
    "InboxSettings",
    "PeopleSettings",
    "PoolMode",
    "SesSettings",
    "Settings",
    "SmsProviderName",
    "SmsSettings",
    "SmtpSettings",
    "SmtpTls",
    "TrackingSettings",
    "WorkerSettings",
    "credentials",
    "describe",
    "env_name",
    "load",
]
