"""InlineTrust: which templates render on the event loop, from their record of CPU."""

from __future__ import annotations

from daemon.delivery.render_trust import MAX_DEMOTIONS, InlineTrust


def test_a_template_is_trusted_after_enough_quick_renders_in_a_row() -> None:
    trust = InlineTrust(after=3, limit=0.002)
    assert not trust.inline("welcome")
    for _ in range(2):
        trust.observe("welcome", 0.0005)
    assert not trust.inline("welcome")
    trust.observe("welcome", 0.002)  # at the limit still counts as quick
    assert trust.inline("welcome")
    assert not trust.inline("receipt")  # each template has its own record


def test_a_slow_render_sends_it_back_and_doubles_what_it_takes_to_return() -> None:
    trust = InlineTrust(after=2, limit=0.002)
    for _ in range(2):
        trust.observe("t", 0.001)
    assert trust.inline("t")
    trust.observe("t", 0.0021)
    assert not trust.inline("t")
    for _ in range(3):
        trust.observe("t", 0.001)
    assert not trust.inline("t")  # needs 4 now
    trust.observe("t", 0.001)
    assert trust.inline("t")


def test_slow_again_and_again_it_needs_at_most_8192_quick_renders_to_come_back() -> None:
    trust = InlineTrust(after=32, limit=0.002)
    for _ in range(MAX_DEMOTIONS + 5):
        trust.observe("t", 1.0)
    for _ in range((32 << MAX_DEMOTIONS) - 1):
        trust.observe("t", 0.0)
    assert not trust.inline("t")
    trust.observe("t", 0.0)
    assert trust.inline("t")
    assert 32 << MAX_DEMOTIONS == 8192


def test_a_render_the_watchdog_stopped_counts_as_slow() -> None:
    trust = InlineTrust(after=1, limit=0.002)
    trust.observe("u", float("inf"))
    trust.observe("u", 0.0)
    assert not trust.inline("u")
    trust.observe("u", 0.0)
    assert trust.inline("u")


def test_observe_says_when_a_trusted_template_was_slow() -> None:
    trust = InlineTrust(after=1, limit=0.002)
    assert not trust.observe("t", 0.5)  # slow, but it was not on the loop
    assert not trust.observe("t", 0.001)
    assert not trust.observe("t", 0.001)
    assert trust.inline("t")
    assert trust.observe("t", 0.5)
    assert not trust.observe("t", 0.5)  # once per stall
