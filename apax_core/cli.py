"""Command line: ``apax-core train | eval | calibrate | select | md | validate | template``,
and the bridges ``ipi-client`` (i-PI) and ``lammps`` (LAMMPS)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import ValidationError

from apax_core.config import (
    ConfigError,
    MDConfig,
    MDRun,
    TrainConfig,
    TrainRun,
    format_errors,
    load_job,
)
from apax_core.config.template import commented_yaml
from apax_core.errors import InputError, show_traceback

MINIMAL_TRAIN = """\
# apax-core training: run arguments (where from, where to) and the spec (what to train).
# Every other option has a default; `apax-core template train --full` lists them all.
directory: models/my_model        # the model directory (written, and resumed from)
train_file: train.extxyz          # any ASE-readable file or H5MD
val_file: val.extxyz              # or leave out: data.val_fraction is held out
# base_model: models/previous     # warm start from this model directory
n_epochs: 40
data:
  batch_size: 8
model:
  kind: gmnn                      # Gaussian moments; or equivmp (equivariant message passing)
  r_max: 5.0                      # cutoff (A), also the neighbour-list cutoff
# EquivMP instead (paper settings; slower, receptive field n_layers x r_max):
#  kind: equivmp
#  r_max: 6.0
#  n_basis: 7
#  l_max: 2
#  n_channels: 32
#  n_layers: 2
# Uncertainties: a shallow ensemble trained with CRPS. Uncomment both:
#  ensemble: {kind: shallow, n_members: 8}
# loss:
#   - {quantity: energy, kind: crps, atoms_exponent: 1}
#   - {quantity: forces, kind: crps}
"""


MINIMAL_MD = """\
# apax-core MD: run arguments and the spec. `apax-core template md --full` lists every option.
# Runs with any model of `apax-core template train`. Run: apax-core md MODEL_DIR md.yaml
structure: start.extxyz           # initial structure (or --structure)
directory: md                     # trajectory, checkpoint, status (or --directory)
dynamics:
  kind: nvt                       # nve | nvt (Nose-Hoover chain) | langevin | npt_scr | npt_mtk
  thermostat: {chain_length: 3, chain_steps: 2, sy_steps: 3, tau: 100}  # tau in steps, not fs
# NPT (periodic cells): stochastic cell rescaling, cell isotropic | orthorhombic | full:
#  kind: npt_scr
#  thermostat: {kind: langevin, friction: 0.01}                 # 1/fs
#  cell: full
#  tau_p: 1000                    # fs, not steps
#  compressibility: 4.5e-5        # 1/bar (water; metals ~7e-7)
#  pressure: {kind: constant, P: 1.01325}                        # bar
temperature:
  kind: oscillating               # constant {T} | piecewise {times, temperatures} | oscillating
  T_low: 300
  T_high: 600
  period: 10000                   # fs
dt: 0.5                           # fs
duration: 100000                  # fs
n_inner: 500                      # steps per compiled chunk
sampling_rate: 10                 # keep a frame every 10 steps
checks:                           # stop when the model is unsure (status: stop_detail)
  - {kind: max_temperature, max_T: 2000}  # K. With an ensemble (the train template's
#                                           ensemble lines) add, e.g.:
#  - {kind: energy_uncertainty, threshold: 0.05}  # eV/atom (per_atom: false -> eV)
#  - {kind: forces_uncertainty, threshold: 1.0}   # eV/A
#  - {kind: volume, max_factor: 2}  # NPT: stop when V/V0 leaves [1/2, 2]
# udd: {height: 1.0, width: 1.2}  # uncertainty-driven dynamics (ensembles)
"""

FULL_HEADER = """\
# apax-core {kind}: every option with its default, its unit and what it means (from the config's
# field docstrings). Commented blocks are the other kinds of a choice: uncomment one in place of
# the block above it. Units: eV, A, fs, K, bar.
"""

BAD_INPUT = 2
"""Exit code of a command given bad input (argparse uses 2 for bad arguments as well)."""

JOBS = {"train": (TrainConfig, TrainRun), "md": (MDConfig, MDRun)}


def _load(kind: str, path: str):
    """(spec, run arguments) of a job file, or None after printing every error."""
    try:
        return load_job(path, *JOBS[kind])
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None


def _cmd_validate(args) -> int:
    job = _load(args.kind, args.config)
    if job is None:
        print("Configuration invalid.", file=sys.stderr)
        return BAD_INPUT
    run = job[1]
    if args.kind == "md" and args.structure is not None:
        run = run.model_copy(update={"structure": args.structure})
    files = ("train_file", "val_file", "base_model") if args.kind == "train" else ("structure",)
    missing = [
        f"{name}: file not found: {path}"
        for name in files
        if (path := getattr(run, name)) is not None and not Path(path).exists()
    ]
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return BAD_INPUT
    if args.kind == "md" and run.structure is not None:
        _validate_md_start(job[0], run, args.model)
    print(f"{args.config}: valid")
    return 0


def _validate_md_start(spec: MDConfig, run: MDRun, model_dir: str | None) -> None:
    """The engine's checks of the start structure (``run.structure`` frame ``run.index``)
    that need no model or, with ``model_dir``, all of them; InputError names the frame."""
    from apax_core.data import DataError, read_frames
    from apax_core.md.walkers import check_start

    frames = read_frames(run.structure)
    if not -len(frames) <= run.index < len(frames):
        raise DataError(f"{run.structure}: no structure {run.index} ({len(frames)} structures)")
    name = f"{run.structure} structure {run.index}"
    if model_dir is None:
        check_start(frames[run.index], spec, name)
        return
    from apax_core.md.run import validate
    from apax_core.model_dir import load_model

    validate(load_model(model_dir), frames[run.index], spec, name)


def _cmd_template(args) -> int:
    if not args.full:
        print(MINIMAL_MD if args.kind == "md" else MINIMAL_TRAIN, end="")
        return 0
    if args.kind == "md":
        run, spec = MDRun(structure="start.extxyz"), MDConfig(duration=100_000.0)
    else:
        run = TrainRun(
            directory="models/my_model", train_file="train.extxyz", val_file="val.extxyz"
        )
        spec = TrainConfig(n_epochs=40)
    print(FULL_HEADER.format(kind=args.kind) + commented_yaml(run, spec), end="")
    return 0


def _cmd_train(args) -> int:
    from apax_core.train.trainer import train_run

    spec, run = load_job(args.config, *JOBS["train"])
    directory = train_run(spec, run)
    print(json.dumps(json.loads((directory / "metrics.json").read_text()), indent=2))
    return 0


def _cmd_eval(args) -> int:
    from apax_core.data import from_atoms, read_frames
    from apax_core.evaluate import evaluate
    from apax_core.files import atomic_write
    from apax_core.model_dir import load_model

    model = load_model(args.model)
    structures = [from_atoms(a) for a in read_frames(args.data)]
    metrics = evaluate(model, structures, batch_size=args.batch_size, progress_bar=True)
    units = {"energy": "meV/atom", "forces": "meV/A", "stress": "meV/A^3"}
    print(f"{'quantity':<10}{'MAE':>12}{'RMSE':>12}  unit")
    for q, unit in units.items():
        if f"{q}_mae" in metrics:
            print(f"{q:<10}{metrics[q + '_mae']:>12.3f}{metrics[q + '_rmse']:>12.3f}  {unit}")
    out = Path(args.json or Path(args.model) / f"eval_{Path(args.data).stem}.json")
    atomic_write(out, json.dumps(metrics, indent=2))
    print(f"wrote {out}")
    return 0


def _cmd_calibrate(args) -> int:
    from apax_core.data import from_atoms, read_frames
    from apax_core.model_dir import load_model
    from apax_core.uq import calibrate_model

    model = load_model(args.model)
    structures = [from_atoms(a) for a in read_frames(args.data)]
    cal = calibrate_model(model, structures, args.batch_size, args.family).calibration
    cal.save(args.model)
    scores = ", ".join(f"{f} {nll:.4g}" for f, nll in cal.held_out_nll)
    print(f"held-out force NLL: {scores or 'not scored (fewer than 2 structures)'}")
    print(
        f"{cal.family} family, energy factor {cal.energy:.4g}, forces factor {cal.forces:.4g}: "
        f"wrote {Path(args.model) / 'calibration.json'}"
    )
    return 0


def _select_method(args):
    """The spec of ``--method`` with every one of its fields from the flags of the same name."""
    from apax_core.config.select import SELECTION_METHODS

    spec = SELECTION_METHODS[args.method]
    return spec(**{name: getattr(args, name) for name in spec.model_fields if name != "kind"})


def _cmd_select(args) -> int:
    from apax_core.data import from_atoms, read_frames, write_frames
    from apax_core.files import atomic_write
    from apax_core.model_dir import load_model
    from apax_core.select import select, write_diagnostics

    try:
        method = _select_method(args)
    except ValidationError as err:  # bad flags are bad input, named by option
        raise ConfigError(format_errors(err, "the select options")) from None
    train_frames, pool_frames = read_frames(args.train), read_frames(args.pool)
    model = load_model(args.model)
    selection = select(
        model,
        [from_atoms(a) for a in train_frames],
        [from_atoms(a) for a in pool_frames],
        args.n,
        method,
        batch_size=args.batch_size,
        rank_all=not args.no_curve,
        progress_bar=True,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_frames(out / "selected.extxyz", [pool_frames[i] for i in selection.indices])
    summary = {"n_train": len(train_frames), "n_pool": len(pool_frames), **selection.to_json()}
    atomic_write(out / "selection.json", json.dumps(summary, indent=2))
    write_diagnostics(selection, out)
    print(f"{'pick':>5}{'index':>8}{selection.score_name:>22}")
    for k, (i, v) in enumerate(zip(selection.indices, selection.scores, strict=True)):
        print(f"{k + 1:>5}{int(i):>8}{float(v):>22.6g}")
    print(f"selected {len(selection.indices)} of {len(pool_frames)}; wrote {out}")
    return 0


def _cmd_md(args) -> int:
    from apax_core.data import DataError, read_frames
    from apax_core.md import run_md
    from apax_core.model_dir import load_model

    spec, run = load_job(args.config, *JOBS["md"])
    flags = {"structure": args.structure, "index": args.index, "directory": args.directory}
    run = run.model_copy(update={k: v for k, v in flags.items() if v is not None})
    if run.structure is None:
        raise InputError("no initial structure (set `structure` in the config or --structure)")
    model = load_model(args.model)
    frames = read_frames(run.structure)
    if not -len(frames) <= run.index < len(frames):
        raise DataError(f"{run.structure}: no structure {run.index} ({len(frames)} structures)")
    atoms = frames[run.index]
    result = run_md(
        model,
        atoms,
        spec,
        run.directory,
        traj_name=run.traj_name,
        restart=run.restart,
        progress_bar=run.progress_bar,
    )
    print(json.dumps({"trajectory": str(result.trajectory), **result.status}, indent=2))
    return 0


def _flag_type(annotation) -> tuple[type, list | None]:
    """(argparse type, choices) of a spec field's annotation: a Literal gives its values as
    choices; None and constraints are dropped (the spec validates the values)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return type(args[0]), args
    return _flag_type(args[0]) if args else (annotation, None)


def _spec_flags(group) -> None:
    """``--method`` and one flag per field of every selection method, named, typed, defaulted
    and documented from the spec itself, so the command line and the spec cannot drift."""
    from apax_core.config.select import SELECTION_METHODS

    kinds = list(SELECTION_METHODS)
    group.add_argument("--method", default=kinds[0], choices=kinds, help="selection method")
    for kind, spec in SELECTION_METHODS.items():
        for name, field in spec.model_fields.items():
            if name == "kind":
                continue
            flag_type, choices = _flag_type(field.annotation)
            doc = (field.description or "").replace("%", "%%")
            group.add_argument(
                f"--{name.replace('_', '-')}",
                type=flag_type,
                choices=choices,
                default=field.default,
                help=f"{kind}: {doc} (default: {field.default})",
            )


def _cmd_ipi_client(args) -> int:
    from apax_core.ipi import client_atoms, run_client, run_ipi
    from apax_core.model_dir import load_model

    if (args.address is None) == (args.input is None):
        raise InputError("give --address (i-PI runs elsewhere) or --input (i-PI starts here)")
    atoms = client_atoms(load_model(args.model), args.structure, args.index)
    if args.input:
        n = run_ipi(atoms, args.input, wait=args.wait)
    else:
        n = run_client(atoms, args.address, port=args.port, wait=args.wait)
    print(f"i-PI ended the run after {n} force evaluations")
    return 0


def _ipi_parser(sub) -> None:
    ip = sub.add_parser("ipi-client", help="serve an i-PI simulation's forces (extra [ipi])")
    ip.add_argument("model", help="model directory")
    ip.add_argument("--structure", required=True, help="i-PI's atoms, same order (element symbols)")
    ip.add_argument("--index", type=int, default=-1, help="which frame of --structure")
    ip.add_argument("--address", help="ffsocket address: unix socket name, or host with --port")
    ip.add_argument("--input", help="i-PI input file: start i-PI on it (no --address)")
    ip.add_argument("--port", type=int, help="inet socket port (default: unix socket)")
    ip.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for i-PI's socket (default 60)"
    )
    ip.set_defaults(fn=_cmd_ipi_client)


def _cmd_lammps(args) -> int:
    from apax_core.lammps import open_lammps, run_script

    cmdargs = ["-log", args.log, *(w for pair in args.var or [] for w in ("-var", *pair))]
    lmp = open_lammps(cmdargs)
    try:
        run_script(
            lmp,
            args.script,
            args.model,
            args.elements,
            uncertainty_every=args.uncertainty_every,
            skin=args.skin,
        )
    finally:
        lmp.close()
    return 0


def _lammps_parser(sub) -> None:
    lm = sub.add_parser("lammps", help="run a LAMMPS input script with a model (extra [lammps])")
    lm.add_argument("model", help="model directory")
    lm.add_argument("script", help="LAMMPS input script (units metal); see docs/lammps.md")
    lm.add_argument(
        "--elements", nargs="+", required=True, help="element of each LAMMPS atom type, in order"
    )
    lm.add_argument(
        "--uncertainty-every",
        type=int,
        default=10,
        help="ensembles: steps between force-uncertainty evaluations (default 10)",
    )
    lm.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin in A")
    lm.add_argument("--log", default="log.lammps", help="LAMMPS log file (default log.lammps)")
    lm.add_argument(
        "--var", nargs=2, action="append", metavar=("NAME", "VALUE"), help="LAMMPS -var"
    )
    lm.set_defaults(fn=_cmd_lammps)


def _select_parser(sub) -> None:
    se = sub.add_parser("select", help="choose pool structures to label next (batch selection)")
    se.add_argument("model", help="model directory")
    se.add_argument("train", help="training structures (selection avoids their neighbourhood)")
    se.add_argument("pool", help="candidate structures")
    se.add_argument("-n", type=int, required=True, help="how many structures to select")
    _spec_flags(se.add_argument_group("selection spec (apax_core.config.select)"))
    se.add_argument("--batch-size", type=int, default=4)
    se.add_argument(
        "--no-curve", action="store_true", help="skip ranking the whole pool (no distance curve)"
    )
    se.add_argument("--out", default="selection", help="output directory (default: selection)")
    se.set_defaults(fn=_cmd_select)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apax-core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a config file; print every error")
    v.add_argument("kind", choices=["train", "md"])
    v.add_argument("config")
    v.add_argument("--structure", help="md: the start structure file (overrides `structure`)")
    v.add_argument("--model", help="md: also check the start structure against this model")
    v.set_defaults(fn=_cmd_validate)

    t = sub.add_parser("template", help="print a config template")
    t.add_argument("kind", choices=["train", "md"])
    t.add_argument("--full", action="store_true", help="every option with its default")
    t.set_defaults(fn=_cmd_template)

    tr = sub.add_parser("train", help="train (or resume) a model")
    tr.add_argument("config")
    tr.set_defaults(fn=_cmd_train)

    e = sub.add_parser("eval", help="errors of a model on a labelled file")
    e.add_argument("model", help="model directory")
    e.add_argument("data", help="labelled structures")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--json", help="where to write the metrics (default: MODEL/eval_DATA.json)")
    e.set_defaults(fn=_cmd_eval)

    c = sub.add_parser("calibrate", help="fit an ensemble's uncertainty calibration (NLL)")
    c.add_argument("model", help="model directory (its calibration.json is updated)")
    c.add_argument("data", help="labelled validation structures")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument(
        "--family",
        choices=["auto", "global", "per_element", "power"],
        default="auto",
        help="calibration law; auto (default): lowest held-out force NLL",
    )
    c.set_defaults(fn=_cmd_calibrate)

    m = sub.add_parser("md", help="molecular dynamics with the JAX engine (resumes if interrupted)")
    m.add_argument("model", help="model directory")
    m.add_argument("config", help="MD config (YAML); see `apax-core template md`")
    m.add_argument("--structure", help="file holding the initial structure (overrides config)")
    m.add_argument("--index", type=int, help="which frame of the structure file (default -1)")
    m.add_argument("--directory", help="run directory: trajectory, checkpoint (default md)")
    m.set_defaults(fn=_cmd_md)

    _select_parser(sub)
    _ipi_parser(sub)
    _lammps_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command. Bad input (an :class:`~apax_core.errors.InputError`: a config, data,
    file, element or cell problem) is one line on stderr naming the file, structure or field,
    and exit code 2; any other exception is a bug and keeps its traceback.
    ``APAX_TRACEBACK=1`` shows the traceback of bad input too."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except InputError as err:
        if show_traceback():
            raise
        print(f"apax-core {args.command}: {err}", file=sys.stderr)
        return BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
