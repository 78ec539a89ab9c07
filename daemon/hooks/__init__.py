"""Outbound webhooks: telling the application what happened to its messages."""
