"""Campaigns: audience expansion, A/B winners, tracking and statistics."""
