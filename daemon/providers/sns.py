"""SMS through AWS SNS ``Publish`` to a phone number."""

from __future__ import annotations

from typing import Any

from daemon import addresses
from daemon.providers import aws
from daemon.settings import AwsSettings, SmsSettings
from outbox.models import Message, Receipt, Rendered


class SnsSmsProvider(aws.AwsProvider):
    service = "sns"
    name = "sns"
    channel = "sms"

    def __init__(self, aws_settings: AwsSettings, sms: SmsSettings) -> None:
        super().__init__(aws_settings)
        self.sender_id = sms.sender_id
        self.max_price = sms.max_price

    def request(self, message: Message, rendered: Rendered) -> dict[str, Any]:
        """The Publish arguments; raises InvalidRecipient before any call."""
        number = addresses.validate_phone(message.recipient)
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
            "Message": rendered.sms or "",
            "MessageAttributes": attributes,
        }

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        request = self.request(message, rendered)
        try:
            response = await self._client.publish(**request)
        except Exception as exc:
            raise aws.classify(exc, "SNS") from exc
        return Receipt(self.name, response["MessageId"])
