"""Benchmark-scale demo data: ``livegifts seed --creators N --viewers N --gifts N``.

:mod:`app.seeding.plan` draws a realistic data set from a random seed (skewed popularity,
combos, live and ended sessions, coin purchases); :mod:`app.seeding.load` writes it in bulk
as the very rows the API would have written, so ``livegifts audit`` passes and every
leaderboard agrees with the gift receipts. The small first-start demo set is
:mod:`app.seed`.
"""

from app.seeding.load import Report, ScaleSummary, SeedRefused, seed_at_scale
from app.seeding.plan import ScaleOptions, SeedOptionsInvalid

__all__ = ["Report", "ScaleOptions", "ScaleSummary", "SeedOptionsInvalid", "SeedRefused",
           "seed_at_scale"]
