"""The fuzz budget: small, derandomized and fast in CI; long and random by flag.

CI (the default): every fuzz test runs ``AGI_VOICE_FUZZ_EXAMPLES`` examples (default 60 per
property; the whole of tests/fuzz in well under a minute on 2 cores) from Hypothesis's fixed
derandomized seed, so a CI failure reproduces exactly.

``AGI_VOICE_FUZZ=long``: 100 times the examples (or ``AGI_VOICE_FUZZ_EXAMPLES``), random seeds,
and Hypothesis's example database in ``.hypothesis/`` so a failure found once is replayed first
the next time. Run it without pytest's per-test timeout (README, "Testing")::

    AGI_VOICE_FUZZ=long .venv/bin/pytest tests/fuzz -o timeout=0 --hypothesis-show-statistics
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, settings

LONG = os.environ.get("AGI_VOICE_FUZZ", "").strip().lower() == "long"
DEFAULT_EXAMPLES = 60


def examples(weight: float = 1.0) -> int:
    """How many examples a property runs: the budget times ``weight`` (heavier properties,
    such as whole provider sessions, take a smaller share)."""
    env = os.environ.get("AGI_VOICE_FUZZ_EXAMPLES", "").strip()
    base = int(env) if env else DEFAULT_EXAMPLES * (100 if LONG else 1)
    return max(1, int(base * weight))


def fuzz(weight: float = 1.0) -> settings:
    """Hypothesis settings for one fuzz property (see the module doc)."""
    return settings(
        max_examples=examples(weight),
        deadline=None,
        derandomize=not LONG,
        database=settings.default.database if LONG else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much, HealthCheck.large_base_example],
        print_blob=LONG,
    )


def rng() -> random.Random:
    """The seeded generator of the socket-level fuzzers: fixed in CI, random (and printed, so
    a failure can be replayed with ``AGI_VOICE_FUZZ_SEED``) in a long run."""
    env = os.environ.get("AGI_VOICE_FUZZ_SEED", "").strip()
    seed = int(env) if env else (random.SystemRandom().randrange(1 << 32) if LONG else 14)
    print(f"fuzz seed {seed} (AGI_VOICE_FUZZ_SEED={seed} replays it)")
    return random.Random(seed)
