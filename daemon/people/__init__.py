"""Time-based work about people rather than single messages: quiet hours, digests and
schedules (none of it on the hot path)."""
