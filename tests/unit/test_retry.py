from __future__ import annotations

from daemon.delivery.retry import backoff_delay


def test_full_jitter_spans_zero_to_the_exponential_ceiling() -> None:
    assert backoff_delay(1, base=5, cap=3600, rand=lambda: 1.0) == 5
    assert backoff_delay(3, base=5, cap=3600, rand=lambda: 1.0) == 20
    assert backoff_delay(3, base=5, cap=3600, rand=lambda: 0.0) == 0
    assert backoff_delay(3, base=5, cap=3600, rand=lambda: 0.5) == 10


def test_ceiling_is_capped_even_for_huge_attempt_numbers() -> None:
    assert backoff_delay(10_000, base=5, cap=3600, rand=lambda: 1.0) == 3600
    assert backoff_delay(0, base=5, cap=3600, rand=lambda: 1.0) == 5
