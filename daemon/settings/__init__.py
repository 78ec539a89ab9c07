"""The settings tree, read once from the environment (prefix ``OUTBOXD_``, nesting ``__``).

Nothing else in outboxd reads ``os.environ``: the tree is built at start-up and passed
down. :func:`load` turns validation errors into one line naming the variable.
"""

from __future__ import annotations

from daemon.settings.base import ENV_PREFIX
from daemon.settings.campaigns import CampaignSettings, TrackingSettings
from daemon.settings.channels import (
    LOCAL_SEND_TIMEOUT,
    AwsSettings,
    EmailProviderName,
    EmailSettings,
    FileSettings,
    SesSettings,
    SmsProviderName,
    SmsSettings,
    SmtpSettings,
    SmtpTls,
)
from daemon.settings.console import ConsoleSettings
from daemon.settings.http import FeedbackSettings, HttpSettings, InboxSettings
from daemon.settings.loading import credentials, describe, env_name, load
from daemon.settings.people import PeopleSettings
from daemon.settings.tree import Settings
from daemon.settings.worker import DatabaseSettings, PoolMode, WorkerSettings

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
