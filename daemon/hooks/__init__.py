"""Outbound webhooks to the application: signed POSTs of the events in
``outbox.webhook_delivery`` (written by triggers in the transaction of each change)."""
