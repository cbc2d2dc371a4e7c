"""Scores and thresholds as people read them (``core.display.format_score``, ``threshold_fraction``).

The shipped detector's calibrated threshold is 0.000376: fixed-decimal text showed it, and every
clean scan's score, as 0.000 - and a score bar from 0 to 1 stayed empty for flagged scans too."""

from __future__ import annotations

import math

import pytest

from breakfix_desktop.core.display import format_score, threshold_fraction


@pytest.mark.parametrize("value, text", [
    (0.853, "0.853"), (1.0, "1.000"), (0.0123, "0.0123"), (0.000375569, "0.000376"), (1.23e-5, "0.0000123"),
    (0.0, "0"), (4e-9, "< 0.000001"), (None, ""), (math.nan, "nan"), (0.5, "0.500"),
])
def test_format_score_keeps_three_significant_digits(value, text):
    assert format_score(value) == text


def test_format_score_tells_apart_a_threshold_and_scores_just_either_side():
    t = 0.000375569
    below, above = format_score(t * 0.9), format_score(t * 1.1)
    assert below != format_score(t) != above and float(below) < float(format_score(t)) < float(above)
    assert format_score(0.000375569, 4) == "0.0003756"


@pytest.mark.parametrize("threshold", [0.000376, 0.05, 0.5, 0.79])
def test_threshold_fraction_puts_the_threshold_half_way(threshold):
    assert threshold_fraction(threshold, threshold) == pytest.approx(0.5)
    assert threshold_fraction(0.0, threshold) == 0.0 and threshold_fraction(1.0, threshold) == pytest.approx(1.0)
    assert threshold_fraction(threshold * 0.99, threshold) < 0.5 < threshold_fraction(threshold * 1.01, threshold)
    xs = [threshold_fraction(s, threshold) for s in (0, threshold / 3, threshold, (1 + threshold) / 2, 1)]
    assert xs == sorted(xs)


def test_threshold_fraction_without_a_usable_threshold_is_the_clipped_score():
    assert threshold_fraction(0.3, None) == 0.3 and threshold_fraction(0.3, 0.0) == 0.3
    assert threshold_fraction(1.7, None) == 1.0 and threshold_fraction(-0.2, 0.5) == 0.0
    assert threshold_fraction(math.nan, 0.5) == 1.0  # a broken score reads as flagged, as screening treats it
