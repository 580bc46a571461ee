"""bench/profile_md.py: its timing loop keeps every evaluation, its forced rebuild rebuilds, and a
short profile of a tiny model runs end to end with consistent parts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import profile_md  # noqa: E402


def test_the_timing_loop_feeds_each_output_into_the_next_input():
    calls = []

    def fn(x, scale):
        calls.append(1)  # traced once
        return jnp.sin(x) * scale

    x = jnp.arange(4.0)
    run = profile_md.looped(fn)
    with jax.enable_x64(False):
        np.testing.assert_allclose(run(3, x, 2.0), x, atol=1e-6)  # the 1e-30 step is invisible
    assert len(calls) == 1  # one compilation for every count
    wall, cpu = profile_md.best(fn, x, 2.0, repeats=2)
    assert 0 < wall < 1 and 0 < cpu < 1


@pytest.fixture(scope="module")
def cu_model():
    return make_model(elements=(29,))


def test_a_short_profile_adds_up_and_counts_the_padding(cu_model):
    rows, slots, raw = profile_md.profile("gmnn", cu_model, 108, steps=10, repeats=1, count_steps=2)
    parts = {r["part"]: r for r in rows}
    assert {"descriptor", "readout", "energy + forces", "neighbour check", "MD step"} <= set(parts)
    assert parts["MD step"]["% of step"] == pytest.approx(100)
    assert all(math.isfinite(r["ms"]) for r in rows)
    assert parts["energy + forces"]["ms"] > parts["energy"]["ms"] > 0
    # 3x3x3 fcc Cu at 600 K: about 18 neighbours within r_max 4 (two shells at rest)
    assert slots["K allocated"] >= slots["filled (r_max+skin)"] >= slots["within r_max"] > 12
    assert 0 <= slots["padding %"] < 100
    assert raw["MD step"]["wall_s"] > 0
