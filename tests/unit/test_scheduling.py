"""Pure parts of the scheduler: how far ahead an endpoint is claimed."""

from __future__ import annotations

from engine.delivery.scheduler import AHEAD_S, DEEP_PREFETCH, PREFETCH, claim_depth


def test_an_endpoint_of_unknown_pace_is_claimed_prefetch_rounds_ahead() -> None:
    assert claim_depth(None) == PREFETCH


def test_a_fast_endpoint_is_claimed_deepest() -> None:
    assert claim_depth(0.001) == DEEP_PREFETCH
    assert claim_depth(0.0) == DEEP_PREFETCH


def test_a_slow_endpoint_is_claimed_no_deeper_than_prefetch() -> None:
    assert claim_depth(AHEAD_S) == PREFETCH
    assert claim_depth(30.0) == PREFETCH


def test_depth_keeps_the_rounds_claimed_ahead_within_ahead_s() -> None:
    for pace in (0.004, 0.008, 0.0125, 0.02, 0.03):
        depth = claim_depth(pace)
        assert PREFETCH <= depth <= DEEP_PREFETCH
        # The rounds beyond the first drain within AHEAD_S, unless PREFETCH alone is more.
        assert (depth - 1) * pace <= AHEAD_S or depth == PREFETCH
        # And one round deeper would not.
        assert depth == DEEP_PREFETCH or depth * pace > AHEAD_S


def test_depth_falls_as_the_pace_slows() -> None:
    depths = [claim_depth(pace) for pace in (0.001, 0.005, 0.01, 0.02, 0.05, 1.0)]
    assert depths == sorted(depths, reverse=True)
    assert depths[0] > depths[-1]
