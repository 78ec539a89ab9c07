"""``Order``: the application's own table, written in the same transaction as the message."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    email = models.TextField()

    class Meta:
        app_label = "readme_django"
        db_table = "orders"
        managed = False
