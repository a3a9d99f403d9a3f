"""Kill -9 artstore processes at random moments; nothing committed or staged may be lost.

A small run of tests/crash_harness.py; the long run is
``python tests/crash_harness.py --kills 300``.
"""

from __future__ import annotations

import crash_harness


def test_random_kills_lose_nothing(tmp_path):
    tally = crash_harness.run(kills=15, seed=7, work=tmp_path)
    assert tally.problems == []
    assert tally.kills == 15
    # Every version that was logged was checked after every kill, and once more at the end.
    assert tally.versions_checked > 15
    assert set(tally.by_op) >= {"put", "upsert"}
