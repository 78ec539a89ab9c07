"""Provider construction from settings."""

from __future__ import annotations

from daemon.providers.base import Provider
from daemon.settings import EmailProviderName, Settings, SmsProviderName


def build_email(settings: Settings) -> Provider:
    """The email provider named by OUTBOXD_EMAIL__PROVIDER."""
    email = settings.email
    match email.provider:
        case EmailProviderName.SMTP:
            from daemon.providers.smtp import SmtpProvider

            return SmtpProvider(settings.smtp, sender=email.sender, reply_to=email.reply_to)
        case EmailProviderName.SES:
            from daemon.providers.ses import SesProvider

            return SesProvider(
                settings.aws, settings.ses, sender=email.sender, reply_to=email.reply_to
            )
        case EmailProviderName.FILE:
            from daemon.providers.file import FileEmailProvider

            return FileEmailProvider(
                settings.file_dir, sender=email.sender, reply_to=email.reply_to
            )
        case EmailProviderName.NULL:
            from daemon.providers.null import NullProvider

            return NullProvider("email")


def build_sms(settings: Settings) -> Provider:
    """The SMS provider named by OUTBOXD_SMS__PROVIDER."""
    match settings.sms.provider:
        case SmsProviderName.SNS:
            from daemon.providers.sns import SnsSmsProvider

            return SnsSmsProvider(settings.aws, settings.sms)
        case SmsProviderName.FILE:
            from daemon.providers.file import FileSmsProvider

            return FileSmsProvider(settings.file_dir)
        case SmsProviderName.NULL:
            from daemon.providers.null import NullProvider

            return NullProvider("sms")


__all__ = ["Provider", "build_email", "build_sms"]
