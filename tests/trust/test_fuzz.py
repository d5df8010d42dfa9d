"""A bounded fuzz run (hypothesis) of the front end: only the project's named errors may escape.

About 200 generated inputs in all (annotation parsers, CLI argument checks, image files with
random sizes, dtypes, channels, colour spaces and corrupted bytes); the long run is
``python benchmarks/fuzz_front_end.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.trust.fuzz_targets import TARGETS

#: Examples per target in the suite (seeded: the same inputs every run).
EXAMPLES = {"geojson": 60, "geojson-text": 30, "csv": 60, "cli": 60, "image": 40}


@pytest.mark.parametrize("target", sorted(EXAMPLES))
def test_front_end_fuzz(target):
    check, strategy = TARGETS[target]
    run = settings(max_examples=EXAMPLES[target], deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))(given(strategy)(check))
    run()
