"""The statistics of an evaluation report: binomial confidence intervals, judge agreement and paired tests.

Small, exact formulas with their sources; ``tests/test_eval.py`` checks them against SciPy and published
worked examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``n`` with its 95% Wilson score interval (``low``, ``high``), all in [0, 1]."""

    successes: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        """The observed proportion (0 when ``n`` is 0)."""
        return self.successes / self.n if self.n else 0.0


def wilson(successes: int, n: int, z: float = Z_95) -> Proportion:
    """The Wilson score interval for a binomial proportion (Wilson 1927, JASA 22:209; the interval
    recommended by Brown, Cai & DasGupta 2001, Statistical Science 16:101). ``n`` = 0 gives [0, 1].

    Raises ``ValueError`` unless 0 ≤ ``successes`` ≤ ``n``.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Proportion(0, 0, 0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Proportion(successes, n, max(0.0, centre - half), min(1.0, centre + half))


def cohens_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's κ between two raters' labels of the same items (Cohen 1960, Educational and Psychological
    Measurement 20:37): (observed agreement − chance agreement) / (1 − chance agreement).

    ``None`` when undefined (no items, or both raters gave one and the same label to every item, so chance
    agreement is 1). Raises ``ValueError`` when the sequences differ in length.
    """
    if len(first) != len(second):
        raise ValueError("both raters must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    labels = set(first) | set(second)
    chance = sum((first.count(label) / n) * (second.count(label) / n) for label in labels)
    if chance == 1:
        return None
    return (observed - chance) / (1 - chance)


@dataclass(frozen=True)
class McNemar:
    """An exact McNemar test on paired outcomes: ``only_a`` items right under A alone, ``only_b`` under B
    alone; ``p_value`` two-sided. ``difference``: (right under B − right under A) / items."""

    only_a: int
    only_b: int
    n: int
    p_value: float

    @property
    def difference(self) -> float:
        """B's accuracy minus A's, over the paired items."""
        return (self.only_b - self.only_a) / self.n if self.n else 0.0


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """The exact (binomial) McNemar test of paired outcomes ``a`` and ``b`` (McNemar 1947, Psychometrika
    12:153; the exact form: the discordant pairs are Binomial(only_a + only_b, ½) under the null, two-sided
    p = min(1, 2 · P[X ≤ min(only_a, only_b)]) — as ``statsmodels``' ``mcnemar(exact=True)``).

    Raises ``ValueError`` when the sequences differ in length.
    """
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(only_a, only_b, len(a), 1.0)
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
    return McNemar(only_a, only_b, len(a), min(1.0, 2 * tail))
