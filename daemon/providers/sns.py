"""SMS through AWS SNS ``Publish`` to a phone number."""

from __future__ import annotations

import math
from typing import Any

from daemon import addresses
from daemon.providers import aws
from daemon.settings import AwsSettings, SmsSettings
from outbox import errors
from outbox.models import Message, Receipt, Rendered

#: The GSM 03.38 default alphabet (one septet each) and its extension table (two each).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


def sms_segments(text: str) -> int:
    """How many SMS ``text`` is sent as: GSM-7 when every character has a septet (160 in
    one message, 153 per part when split), else UCS-2 (70, or 67 per part; characters
    beyond the BMP take two units)."""
    septets = 0
    for char in text:
        if char in _GSM7_BASIC:
            septets += 1
        elif char in _GSM7_EXTENDED:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return 1 if units <= 70 else math.ceil(units / 67)
    return 1 if septets <= 160 else math.ceil(septets / 153)


class SnsSmsProvider(aws.AwsProvider):
    service = "sns"
    name = "sns"
    channel = "sms"

    def __init__(self, aws_settings: AwsSettings, sms: SmsSettings) -> None:
        super().__init__(aws_settings)
        self.sender_id = sms.sender_id
        self.max_price = sms.max_price
        self.max_segments = sms.max_segments

    def request(self, message: Message, rendered: Rendered) -> dict[str, Any]:
        """The Publish arguments; raises InvalidRecipient or PermanentError (too long)
        before any call."""
        number = addresses.validate_phone(message.recipient)
        text = rendered.sms or ""
        segments = sms_segments(text)
        if segments > self.max_segments:
            raise errors.PermanentError(
                f"SMS of {len(text)} characters is {segments} segments, more than "
                f"OUTBOXD_SMS__MAX_SEGMENTS ({self.max_segments})"
            )
        sms_type = "Transactional" if message.is_transactional else "Promotional"
        attributes: dict[str, Any] = {
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": sms_type}
        }
        if self.sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {
                "DataType": "String",
                "StringValue": self.sender_id,
            }
        if self.max_price:
            attributes["AWS.SNS.SMS.MaxPrice"] = {
                "DataType": "Number",
                "StringValue": f"{self.max_price:.5f}",
            }
        return {
            "PhoneNumber": number,
            "Message": text,
            "MessageAttributes": attributes,
        }

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        request = self.request(message, rendered)
        try:
            response = await self._client.publish(**request)
        except Exception as exc:
            raise aws.classify(exc, "SNS") from exc
        return Receipt(self.name, response["MessageId"])
