"""Compiled CPU kernels, registered with XLA as FFI targets.

XLA's CPU backend runs the GMNN contractions (eight groups of invariants of a few hundred
flops per atom) and their VJPs as dozens of small batched ops whose index shuffling
dominates; the same arithmetic as one loop over the atoms (``gmnn_contractions.cc``) is
several times faster: :func:`contractions`, :func:`contractions_vjp` (every float32 GMNN on
a CPU: MD, predictions, training) and :func:`contractions_vjp_vjp` (training on forces),
:func:`contractions_pullback` (a shallow ensemble's member forces), the moments' pull-back to
the pairs (:func:`monomials_pullback`) and the Bessel basis with its slope
(:func:`bessel_basis_and_slope`).

The source is compiled on first use with the system's C++ compiler against the XLA FFI
headers that jaxlib ships, into ``$XDG_CACHE_HOME/apax_core/native`` (else
``~/.cache/apax_core/native``; ``APAX_NATIVE_CACHE`` names another folder), keyed by the
source, the jaxlib version, the flags and the processor; files are written whole (temp +
rename), so concurrent processes are safe.

``APAX_NATIVE=off`` switches the kernels off; without a compiler, or on another backend, the
callers take the XLA path (same numbers, slower) and a compiler failure is logged once.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("gmnn_contractions.cc")
TARGETS = {
    "apax_contractions_pullback": "ApaxContractionsPullback",
    "apax_contractions": "ApaxContractions",
    "apax_contractions_vjp": "ApaxContractionsVjp",
    "apax_contractions_vjp_vjp": "ApaxContractionsVjpVjp",
    "apax_bessel_basis": "ApaxBesselBasis",
    "apax_monomials_pullback": "ApaxMonomialsPullback",
}
"""FFI target name -> the handler symbol in the library."""
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")


def _cache_root() -> Path:
    if os.environ.get("APAX_NATIVE_CACHE"):
        return Path(os.environ["APAX_NATIVE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "apax_core" / "native"


def _cpu() -> str:
    """This processor's model and features (``-march=native`` builds for it alone)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [x for x in lines if x.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep)))


def _compile(compiler: str) -> Path:
    """The shared library for :data:`SOURCE`, compiled unless already in the cache."""
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join((compiler, *FLAGS, jax.lib.__version__, _cpu())).encode()
    ).hexdigest()[:16]
    path = _cache_root() / key / "libapax_native.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        cmd = [compiler, *FLAGS, f"-I{include}", str(SOURCE), "-o", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.replace(out, path)
    return path


@functools.cache
def available() -> bool:
    """Whether the kernels are compiled, loaded and registered (once per process)."""
    if os.environ.get("APAX_NATIVE", "").strip().lower() in {"off", "0", "false"}:
        return False
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        log.warning("no C++ compiler: the GMNN contractions take the XLA path (slower)")
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(str(_compile(compiler)))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        log.warning("native kernels not built (%s); taking the XLA path", detail)
        return False
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return True


def applies(dtype) -> bool:
    """Whether the kernels can run here: float32 on a CPU backend, built and registered."""
    return jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu" and available()


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contractions_pullback(m: tuple, d_features, n_contr: int):
    """As :func:`apax_core.model.gmnn.contractions_pullback` (same arguments and result,
    (N, B, S, 20)), computed by the compiled kernel; callers check :func:`applies` first.
    Differentiable (training on a shallow ensemble's member forces): its VJP is that of the
    XLA version, which is linear in each argument, so nothing is recomputed but its pullback."""
    if not available():
        raise RuntimeError("the native kernels are not available here (see applies())")
    n, s = m[0].shape
    full = jnp.concatenate(
        [m[0][..., None], m[1], m[2].reshape(n, s, 9), m[3].reshape(n, s, 27)], -1
    )
    b = d_features.shape[0]
    call = jax.ffi.ffi_call(
        "apax_contractions_pullback",
        jax.ShapeDtypeStruct((n, b, s, 20), jnp.float32),
        vmap_method="sequential",
    )
    return call(full, d_features, **_attributes(n_contr))


def _attributes(n_contr: int) -> dict:
    return {"n_contr": np.int64(n_contr), "n_threads": np.int64(os.cpu_count() or 1)}


def _pullback_fwd(m, d_features, n_contr):
    return contractions_pullback(m, d_features, n_contr), (m, d_features)


def _pullback_bwd(n_contr, residuals, cotangent):
    from apax_core.model.gmnn import contractions_pullback as xla_pullback

    m, d_features = residuals
    _, vjp = jax.vjp(lambda m, d: xla_pullback(m, d, n_contr), m, d_features)
    return vjp(cotangent)


contractions_pullback.defvjp(_pullback_fwd, _pullback_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def contractions(sums, n_contr: int):
    """As :func:`apax_core.model.gmnn.contractions` of the moments, from their distinct
    monomials' pair sums (..., S, 20) -> (..., F), by the compiled kernel (float32, a CPU:
    callers check :func:`applies`). Atoms fill the vector lanes, 8 at a time. Its VJP is
    :func:`contractions_vjp`."""
    if not available():
        raise RuntimeError("the native kernels are not available here (see applies())")
    from apax_core.model.gmnn import descriptor_size

    shape = (*sums.shape[:-1][:-1], descriptor_size(sums.shape[-2], n_contr))
    call = jax.ffi.ffi_call(
        "apax_contractions", jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="broadcast_all"
    )
    return call(sums, **_attributes(n_contr))


def _contractions_fwd(sums, n_contr):
    return contractions(sums, n_contr), sums


def _contractions_bwd(n_contr, sums, cotangent):
    return (contractions_vjp(sums, cotangent, n_contr),)


contractions.defvjp(_contractions_fwd, _contractions_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contractions_vjp(sums, cotangent, n_contr: int):
    """The VJP of :func:`contractions`: the cotangent of the sums (..., S, 20) from the
    features' (..., F), by the compiled kernel. Its VJP (training on forces) is
    :func:`contractions_vjp_vjp`."""
    call = jax.ffi.ffi_call(
        "apax_contractions_vjp",
        jax.ShapeDtypeStruct(sums.shape, jnp.float32),
        vmap_method="broadcast_all",
    )
    return call(sums, cotangent, **_attributes(n_contr))


def _vjp_fwd(sums, cotangent, n_contr):
    return contractions_vjp(sums, cotangent, n_contr), (sums, cotangent)


def _vjp_bwd(n_contr, residuals, g):
    return contractions_vjp_vjp(*residuals, g, n_contr)


contractions_vjp.defvjp(_vjp_fwd, _vjp_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def contractions_vjp_vjp(sums, cotangent, g, n_contr: int):
    """The VJP of :func:`contractions_vjp` at (sums, cotangent) for the cotangent ``g`` of
    its result, by the compiled kernel: (the sums' part (..., S, 20), the Hessian of
    <cotangent, features> times g; the cotangent's part (..., F), the features' JVP along g).
    This is the second-order part of training on forces. Differentiable once more through
    the XLA version (:func:`_xla_vjp_vjp`)."""
    call = jax.ffi.ffi_call(
        "apax_contractions_vjp_vjp",
        (
            jax.ShapeDtypeStruct(sums.shape, jnp.float32),
            jax.ShapeDtypeStruct(cotangent.shape, jnp.float32),
        ),
        vmap_method="broadcast_all",
    )
    return call(sums, cotangent, g, **_attributes(n_contr))


def _per_structure(fn, sums):
    """``fn`` vmapped over the leading (structure) axes of ``sums`` beyond (N, S, 20)."""
    for _ in range(sums.ndim - 3):
        fn = jax.vmap(fn)
    return fn


def _xla_vjp(sums, cotangent, n_contr):
    """:func:`contractions_vjp` by XLA, for one structure (N, S, 20), (N, F)."""
    from apax_core.model.gmnn import contractions_pullback, full_moments

    return contractions_pullback(full_moments(sums), cotangent[None], n_contr)[:, 0]


def _xla_vjp_vjp(sums, cotangent, g, n_contr):
    """:func:`contractions_vjp_vjp` by XLA, for one structure."""
    return jax.vjp(functools.partial(_xla_vjp, n_contr=n_contr), sums, cotangent)[1](g)


def _vjp_vjp_fwd(sums, cotangent, g, n_contr):
    return contractions_vjp_vjp(sums, cotangent, g, n_contr), (sums, cotangent, g)


def _vjp_vjp_bwd(n_contr, residuals, cotangents):
    fn = _per_structure(functools.partial(_xla_vjp_vjp, n_contr=n_contr), residuals[0])
    return jax.vjp(fn, *residuals)[1](cotangents)


contractions_vjp_vjp.defvjp(_vjp_vjp_fwd, _vjp_vjp_bwd)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def bessel_basis_and_slope(r, mask, n_basis: int, r_max: float):
    """As :func:`apax_core.model.gmnn.weighted_basis_and_slope` for a Bessel basis: the
    weighted basis and its derivative by r, (..., n_basis) each, from distances r (...) and a
    float mask (...), by the compiled kernel (float32, a CPU: callers check :func:`applies`).
    Differentiable through the XLA version."""
    out = jax.ShapeDtypeStruct((*r.shape, n_basis), jnp.float32)
    call = jax.ffi.ffi_call("apax_bessel_basis", (out, out), vmap_method="broadcast_all")
    n_threads = np.int64(os.cpu_count() or 1)
    return call(r, mask, n_basis=np.int64(n_basis), r_max=np.float64(r_max), n_threads=n_threads)


@bessel_basis_and_slope.defjvp
def _bessel_jvp(n_basis, r_max, primals, tangents):
    from apax_core.model.gmnn import xla_bessel_basis_and_slope

    return jax.jvp(
        functools.partial(xla_bessel_basis_and_slope, n_basis=n_basis, r_max=r_max),
        primals,
        tangents,
    )


@jax.custom_vjp
def monomials_pullback(radial, unit, g):
    """As :func:`apax_core.model.gmnn.xla_monomials_pullback` (radial (N, K, S), unit
    (N, K, 3), g (N, B, S, 20) -> d_radial (N, K, B, S), d_unit (N, K, B, 3)), by the compiled
    kernel (float32, a CPU: callers check :func:`applies`), 8 pairs of an atom in the vector
    lanes. Differentiable through the XLA version."""
    n, k, s = radial.shape[-3:]
    b = g.shape[-3]
    lead = radial.shape[:-3]
    call = jax.ffi.ffi_call(
        "apax_monomials_pullback",
        (
            jax.ShapeDtypeStruct((*lead, n, k, b, s), jnp.float32),
            jax.ShapeDtypeStruct((*lead, n, k, b, 3), jnp.float32),
        ),
        vmap_method="broadcast_all",
    )
    return call(radial, unit, g, n_threads=np.int64(os.cpu_count() or 1))


def _monomials_fwd(radial, unit, g):
    return monomials_pullback(radial, unit, g), (radial, unit, g)


def _monomials_bwd(residuals, cotangents):
    from apax_core.model.gmnn import xla_monomials_pullback

    return jax.vjp(xla_monomials_pullback, *residuals)[1](cotangents)


monomials_pullback.defvjp(_monomials_fwd, _monomials_bwd)
