"""Paired 95 % t-intervals over seeds."""

import math

import pytest

from mtkdrl.compare.stats import Interval, paired, t975


def test_interval_of_three_paired_differences():
    # differences 1, 2, 3: mean 2, std 1, half-width t(2) / sqrt(3) = 4.303 / 1.732
    interval = paired({0: 61.0, 1: 62.0, 2: 63.0, 7: 99.0}, {0: 60.0, 1: 60.0, 2: 60.0})
    assert interval.seeds == 3 and interval.mean == pytest.approx(2.0)
    assert interval.low == pytest.approx(2 - 4.303 / math.sqrt(3))
    assert interval.high == pytest.approx(2 + 4.303 / math.sqrt(3))
    assert interval.includes_zero  # -0.48 to +4.48: a tie


def test_a_consistent_gain_is_not_a_tie():
    interval = Interval.of([1.0, 1.2, 0.9, 1.1, 1.0])
    assert not interval.includes_zero and interval.low > 0.8
    assert str(interval) == "+1.04 [+0.90, +1.18]"


def test_one_seed_gives_no_interval_and_decides_nothing():
    interval = Interval.of([3.0])
    assert interval.low is None and not interval.measured and not interval.includes_zero
    assert str(interval) == "+3.00 (1 seed, no interval)"
    assert paired({0: 1.0}, {1: 1.0}) is None


def test_t_quantiles_shrink_towards_the_normal_one():
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert 2.042 > t975(31) > t975(120) > 1.96
    assert t975(60) == pytest.approx(2.000, abs=0.003)  # the table's value at 60 is 2.000
