"""Verification: comparators (`comparators`), scenario files bound to them (`scenarios`), the
scenario suite (`suite`, `kit test`), capturing a run as a scenario (`capture`), replay against
an earlier bundle (`replay`), and kit's pytest-notebook defaults (`nbregression`)."""
