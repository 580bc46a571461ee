"""apax_core.xla_cpu: YNNPACK fusions off on XLA's CPU backend, unless the user says otherwise."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from apax_core import xla_cpu


def test_tune_adds_the_flag_only_where_nobody_chose(monkeypatch):
    monkeypatch.delenv("APAX_XLA_TUNING", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    xla_cpu.tune()
    assert xla_cpu._jaxlib_knows(xla_cpu.FLAG.encode())
    want = f"--xla_force_host_platform_device_count=2 --{xla_cpu.FLAG}="
    assert os.environ["XLA_FLAGS"] == want
    xla_cpu.tune()  # once only
    assert os.environ["XLA_FLAGS"] == want
    mine = f"--{xla_cpu.FLAG}=individual_dot"
    monkeypatch.setenv("XLA_FLAGS", mine)
    xla_cpu.tune()
    assert os.environ["XLA_FLAGS"] == mine
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv("APAX_XLA_TUNING", "off")
    xla_cpu.tune()
    assert "XLA_FLAGS" not in os.environ
    assert not xla_cpu._jaxlib_knows(b"xla_cpu_no_such_flag_anywhere")


def test_this_process_compiles_without_library_fusions():
    """conftest imports apax_core before JAX starts its backend, as a user's script does: the
    compiled program of a dense layer with its activation has no YNNPACK fusion."""
    x = jnp.ones((64, 64))
    hlo = jax.jit(lambda a, b: jnp.tanh(a @ b).sum(0)).lower(x, x).compile().as_text()
    assert "ynn" not in hlo
