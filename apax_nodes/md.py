"""Sampling MD with a model (optionally uncertainty-driven), stopped on uncertainty."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase
import pandas as pd
import znflow
import zntrack
from zntrack.config import NodeStatusEnum

from apax_core.config import Executor, MDConfig, validate
from apax_core.files import atomic_write
from apax_core.lammps_input import check_engine, check_lammps_start
from apax_core.md.io import STATUS, TRACE_COLUMNS, TRAJECTORY, WALKER, trace
from apax_core.md.walkers import Indices, check_start, plan_walkers
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import read_h5
from apax_nodes.model import local_model_dir, require_apax_model
from apax_nodes.paths import checkpoint_dir

WALKERS = "walkers.json"


def md_config(config: dict) -> MDConfig:
    """The validated MD spec of a node's ``config`` param (errors name the field)."""
    return validate(MDConfig, config, "config")


def check_start_structures(
    frames: list[ase.Atoms],
    config: MDConfig,
    indices: Indices,
    n_walkers: int | None,
    source: str,
    engine: str = "jax",
) -> None:
    """The engine's checks that need no model (:func:`~apax_core.md.walkers.check_start`,
    and LAMMPS's periodicity) on every walker's start structure; InputError names ``source``
    and the structure index."""
    for k in sorted({w.start for w in plan_walkers(len(frames), indices, n_walkers, 0)}):
        check_start(frames[k], config, f"{source} structure {k}")
        if engine == "lammps":
            check_lammps_start(frames[k], f"{source} structure {k}")


def frames_at_build(data) -> tuple[list[ase.Atoms], str] | None:
    """(frames, source name) of ``data`` if they exist while the graph is built: a list of
    Atoms, or a connection to the frames of a node loaded from a revision
    (``zntrack.from_rev``). None while they are still to be computed (they are checked when
    the node runs)."""
    if isinstance(data, list) and data and all(isinstance(a, ase.Atoms) for a in data):
        return data, "data"
    node = data
    while isinstance(node, znflow.Connection):
        node = node.instance
    if not isinstance(node, zntrack.Node) or node.state.state != NodeStatusEnum.FINISHED:
        return None
    return data.result, node.name


def first_stop(walkers: list[tuple]) -> str | None:
    """The ``stop_detail`` message of the walker that stopped earliest in simulated time, e.g.
    ``energy_uncertainty 0.081 eV/atom > 0.05 eV/atom at 840 fs`` (``walker002: `` before it
    with several walkers); None if none stopped on a check or a non-finite frame."""
    stops = [
        (s["stop_detail"]["time_fs"], w.name, s["stop_detail"]["message"])
        for w, s in walkers
        if s.get("stop_detail")
    ]
    if not stops:
        return None
    _, name, message = min(stops)
    return message if len(walkers) == 1 else f"{name}: {message}"


@one_line_errors
class MD(zntrack.Node):
    """MD with ``model`` from ``data[indices]``: one walker per index (or ``n_walkers``,
    cycling through the indices), seeded ``seed + walker``, run on ``executor``. ``config`` is an
    apax_core MD spec (dynamics, temperature schedule, UDD, stop checks). ``frames`` are the
    walkers' frames in walker order, tagged ``atoms.info["walker"]``; ``status`` says how many
    walkers stopped early and why (each walker's ``stop_detail`` in ``walkers``, with units);
    ``engine`` integrates: ``jax`` (ours) or ``lammps`` (docs/lammps.md; fully periodic
    structures, no UDD), both writing the same frames with their uncertainties;
    ``temperature_trace`` is one row per frame, columns named with their units (``time_fs``,
    ``temperature_K``, ``energy_uncertainty_eV_per_atom``...: :func:`apax_core.md.io.trace`).
    Any cell, slab, wire or molecule runs; start structures with
    atoms closer than 0.5 A are refused (``allow_close_contacts`` in ``config`` lifts it), when
    the graph is built if they exist then (``zntrack.from_rev``), else before the first walker
    runs."""

    model: zntrack.Node = zntrack.deps()
    data: list[ase.Atoms] = zntrack.deps()
    indices: int | list[int] | str = zntrack.params(-1)
    """Start structures: an index, a list of indices or "all"."""
    n_walkers: int | None = zntrack.params(None)
    config: dict = zntrack.params(default_factory=dict)
    executor: dict = zntrack.params(default_factory=lambda: {"kind": "serial"})
    """Where the walkers run: serial, processes or dask (see apax_core.config.executor)."""
    engine: str = zntrack.params("jax")
    """Who integrates: "jax" (our engine) or "lammps" (LAMMPS's fixes with the model
    attached); "ipi" is refused (run apax-core ipi-client instead)."""
    md_dir: Path = zntrack.outs_path(zntrack.nwd / "md")
    status: dict = zntrack.metrics()
    """Walkers stopped early and why: n_walkers, n_stopped, reason (the commonest), reasons,
    n_frames, time_fs (summed over walkers), step and, if any stopped, first_stop (the
    earliest stop with its value and threshold in their units, :func:`first_stop`)."""
    temperature_trace: pd.DataFrame = zntrack.plots(x="time_fs", y="temperature_K")
    """Per frame: time_fs, temperature_K, walker and, where the run has them, volume_A3,
    pressure_bar, energy_uncertainty_eV, energy_uncertainty_eV_per_atom and
    max_forces_uncertainty_eV_per_A."""

    def __post_init__(self):
        super().__post_init__()
        require_apax_model(self)
        if znflow.get_graph() is not znflow.empty_graph:  # building the graph
            self._check_inputs()

    def _check_inputs(self) -> None:
        """At graph build: the config and, where they exist already, the start structures."""
        with znflow.disable_graph():
            config = md_config(self.config)
            check_engine(self.engine, config)
            found = frames_at_build(self.data)
            if found is not None:
                frames, source = found
                check_start_structures(
                    frames, config, self.indices, self.n_walkers, source, self.engine
                )

    def run(self) -> None:
        # Imported here: jax_md starts the XLA backend on import, and `zntrack run` forks (to
        # hash the stage) after importing the node module; a fork after that can deadlock.
        from apax_core.md.walkers import run_walkers, summary

        work = checkpoint_dir(self.name)  # survives `dvc repro` deleting md_dir before a rerun
        config = md_config(self.config)
        executor = validate(Executor, self.executor, "executor")
        walkers = run_walkers(
            local_model_dir(self.model),
            self.data,
            config,
            work,
            executor,
            indices=self.indices,
            n_walkers=self.n_walkers,
            engine=self.engine,
        )
        records = []
        for walker, status in walkers:
            out = self.md_dir / walker.name
            out.mkdir(parents=True, exist_ok=True)
            for name in (TRAJECTORY, STATUS):
                if (work / walker.name / name).is_file():
                    shutil.copy2(work / walker.name / name, out / name)
            records.append(
                {"walker": walker.number, "start": walker.start, "seed": walker.seed, **status}
            )
        atomic_write(self.md_dir / WALKERS, json.dumps(records, indent=2))
        shutil.rmtree(work)
        status = summary([s for _, s in walkers]) | {"first_stop": first_stop(walkers)}
        self.status = {k: v for k, v in status.items() if v is not None}
        rows = [{**row, "walker": f.info["walker"]} for f in self.frames for row in trace([f])]
        columns = None if rows else [*TRACE_COLUMNS, "walker"]
        self.temperature_trace = pd.DataFrame(rows, columns=columns)

    @property
    def walkers(self) -> list[dict]:
        """Per walker: number, start index, seed and its status (stopped, reason, n_frames...,
        stop_detail with units once stopped)."""
        with self.state.fs.open((self.md_dir / WALKERS).as_posix()) as fh:
            return json.load(fh)

    @property
    def frames(self) -> list[ase.Atoms]:
        frames = []
        for record in self.walkers:
            path = (self.md_dir / WALKER.format(record["walker"]) / TRAJECTORY).as_posix()
            for atoms in read_h5(self, path) if self.state.fs.exists(path) else []:
                atoms.info["walker"] = record["walker"]
                frames.append(atoms)
        return frames
