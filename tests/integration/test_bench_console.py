"""``python -m daemon.bench.console``: the console's query costs and its indexes' cost, on a
small table (the figures in docs/CONSOLE.md come from the same code at a million rows)."""

from __future__ import annotations

import pytest

from daemon.bench import console


@pytest.mark.slow
async def test_every_console_query_is_explained(postgres_admin_dsn: str) -> None:
    rows = await console.explain(postgres_admin_dsn, 5000)
    assert len(rows) == len({row["case"] for row in rows}) >= 20
    by_case = {row["case"]: row for row in rows}
    assert "message_recipient_search_idx" in by_case["search: recipient"]["indexes"]
    assert by_case["search: status failed"]["indexes"] == ["message_trouble_idx"]
    assert by_case["search: notification"]["indexes"][0] == "message_notification_idx"
    assert by_case["search: recipient"]["rows"] > 0
    assert by_case["action: requeue 1,000 (rolled back)"]["rows"] > 0
    assert by_case["action: retry 1,000 failed (rolled back)"]["rows"] > 0
    assert all(row["ms"] >= 0 for row in rows)


@pytest.mark.slow
async def test_with_the_archive_every_search_reads_it_through_its_own_indexes(
    postgres_admin_dsn: str,
) -> None:
    rows = await console.explain(postgres_admin_dsn, 5000, archive_after_hours=24)
    by_case = {row["case"]: row["indexes"] for row in rows}

    def archive_index(case: str) -> str:
        [name] = [i for i in by_case[case] if i.startswith("message_archive_")]
        return name.split("_", 3)[3]  # after message_archive_<month>_

    assert archive_index("search: recipient") == "lower_id_idx"
    assert archive_index("search: status failed") == "status_id_idx"
    assert archive_index("search: notification") == "notification_id_idx"
    assert archive_index("search: last hour") == "created_at_idx"
    assert archive_index("message: the row") == "id_idx"
    assert not any(i.startswith("message_archive_") for i in by_case["search: status pending"])


@pytest.mark.slow
async def test_the_index_cost_is_measured_both_ways(postgres_admin_dsn: str) -> None:
    result = await console.indexes(postgres_admin_dsn, 2000, 2)
    assert set(result) == {"none", "0015"}
    assert all(rates["insert"] > 0 and rates["floor"] > 0 for rates in result.values())


def test_the_indexes_measured_are_those_of_the_migration() -> None:
    statements = console._index_statements()
    assert [s.split()[5] for s in statements] == [
        "message_recipient_search_idx", "message_trouble_idx", "message_notification_idx",
    ]  # fmt: skip
