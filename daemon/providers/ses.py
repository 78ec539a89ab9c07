"""Email through AWS SES v2 ``SendEmail``.

``Content.Simple`` (with ``Headers`` for List-Unsubscribe) needs no MIME on our side,
which is the cheapest way to send; ``raw=True`` sends MIME built by :mod:`daemon.providers.mime`.
``SendEmail`` goes by the lean request path of :mod:`daemon.providers.aws_signed` (a
third of the SDK call's CPU); everything else by the aioboto3 client.
"""

from __future__ import annotations

import re
from typing import Any

from daemon.providers import aws, aws_signed, mime
from daemon.settings import AwsSettings, SesSettings
from outbox import errors
from outbox.models import Message, Receipt, Rendered

_TAG_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def _tag(value: object) -> str:
    # SES accepts only ASCII letters, digits, '_' and '-' in tag names and values.
    return _TAG_CHARS.sub("_", str(value))[:256] or "_"


def email_tags(message: Message) -> list[dict[str, str]]:
    """The message's tags plus ``outbox_id`` and ``category``, sanitised for SES."""
    tags = {_tag(k): _tag(v) for k, v in message.tags.items()}
    tags["outbox_id"] = str(message.id)
    tags["category"] = _tag(message.category)
    return [{"Name": name, "Value": value} for name, value in tags.items()][:50]


class SesProvider(aws.AwsProvider):
    service = "sesv2"
    name = "ses"
    channel = "email"

    def __init__(
        self,
        aws_settings: AwsSettings,
        ses: SesSettings,
        *,
        sender: str,
        reply_to: str | None = None,
        raw: bool = False,
    ) -> None:
        super().__init__(aws_settings)
        self.configuration_set = ses.configuration_set
        self.sender = mime.format_address(sender)
        self.reply_to = reply_to
        self.raw = raw
        self._raw_sender = sender
        self._send_email: aws_signed.SignedJsonOperation | None = None

    async def open(self) -> None:
        await super().open()
        credentials = await self._session.get_credentials()
        operation = aws_signed.SignedJsonOperation(
            self._client, credentials, "SendEmail", self.aws.timeout
        )
        await operation.open()
        self._stack.push_async_callback(operation.close)
        self._send_email = operation

    def request(self, message: Message, rendered: Rendered) -> dict[str, Any]:
        """The SendEmail arguments for ``message``."""
        if self.raw:
            data = mime.build_email(
                message, rendered, sender=self._raw_sender, reply_to=self.reply_to
            )
            content: dict[str, Any] = {"Raw": {"Data": data}}
        else:
            body: dict[str, Any] = {"Text": {"Data": rendered.text or "", "Charset": "UTF-8"}}
            if rendered.html:
                body["Html"] = {"Data": rendered.html, "Charset": "UTF-8"}
            simple: dict[str, Any] = {
                "Subject": {"Data": rendered.subject or "", "Charset": "UTF-8"},
                "Body": body,
            }
            if rendered.headers:
                simple["Headers"] = [{"Name": k, "Value": v} for k, v in rendered.headers.items()]
            content = {"Simple": simple}
        sender, reply_to = mime.branded_sender(rendered, self._raw_sender, self.reply_to)
        request: dict[str, Any] = {
            "FromEmailAddress": self.sender
            if sender is self._raw_sender
            else mime.format_address(sender),
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": content,
            "EmailTags": email_tags(message),
        }
        if reply_to and not self.raw:
            request["ReplyToAddresses"] = [reply_to]
        brand = rendered.sender
        configuration_set = (brand and brand.configuration_set) or self.configuration_set
        if configuration_set:
            request["ConfigurationSetName"] = configuration_set
        if brand is not None and brand.tenant:
            request["TenantName"] = brand.tenant
        return request

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        try:
            assert self._send_email is not None, "open() first"
            response = await self._send_email(self.request(message, rendered))
        except Exception as exc:
            raise aws.classify(exc, "SES") from exc
        return Receipt(self.name, response["MessageId"])

    async def max_send_rate(self) -> float | None:
        """The account's MaxSendRate, or None if it cannot be read."""
        try:
            account = await self._client.get_account()
        except Exception as exc:
            decision = aws.classify(exc, "SES")
            if isinstance(decision, errors.ChannelPaused):
                raise decision from exc
            return None
        rate = account.get("SendQuota", {}).get("MaxSendRate")
        return float(rate) if rate else None
