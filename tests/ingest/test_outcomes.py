"""ingest/models/outcomes.py: the per-request failure rule every batch method shares."""

from __future__ import annotations

import pytest

from rsembed_store.errors import ComputeError
from rsembed_store.ingest.models.outcomes import attempt, outcomes, settle


def _inverse(x):
    if x == 0:
        raise ComputeError(f"x={x} has no inverse")
    return 1.0 / x


def test_failures_take_their_place_when_asked():
    out = outcomes([2, 0, 4], _inverse, return_exceptions=True)
    assert out[0] == 0.5 and out[2] == 0.25
    assert isinstance(out[1], ComputeError) and "x=0" in str(out[1])


def test_first_failure_propagates_otherwise():
    seen = []

    def record(x):
        seen.append(x)
        return _inverse(x)

    with pytest.raises(ComputeError, match="x=0"):
        outcomes([2, 0, 4], record, return_exceptions=False)
    assert seen == [2, 0]  # stops at the failure


def test_interrupts_are_never_swallowed():
    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        attempt(stop, return_exceptions=True)


def test_settle_raises_the_first_exception_or_keeps_them():
    first, second = ComputeError("first"), ComputeError("second")
    assert settle([1, first, second], return_exceptions=True) == [1, first, second]
    with pytest.raises(ComputeError, match="first"):
        settle([1, first, second], return_exceptions=False)
    assert settle([1, 2], return_exceptions=False) == [1, 2]
