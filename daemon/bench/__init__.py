"""``outboxd bench`` and its peers (a fake SES endpoint, SMTP sinks, a Celery worker).

Tooling, not product: the running daemon never imports this package."""
