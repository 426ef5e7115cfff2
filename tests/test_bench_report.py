"""The README's benchmark table is exactly what ``bench.report`` builds from the committed results."""

from __future__ import annotations

from bench import report


def test_readme_table_matches_committed_results():
    table = report.readme_table((report.ROOT / "README.md").read_text())
    assert table is not None, "README lost its bench markers"
    _, expected = report.render()
    assert table == expected, "README table is stale: run `python -m bench.report --from-results`"


def test_every_target_row_says_whether_it_was_met():
    data, _ = report.render()
    areas = {row["area"] for row in data["rows"]}
    assert {"training", "serving", "rollout"} <= areas
    for row in data["rows"]:
        if row["target"]:
            assert row["met"] in (True, False), row
