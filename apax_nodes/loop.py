"""The active-learning loop as a ZnTrack graph: one group per iteration, stable stage names.

    iter i:  Train (warm start from iter i-1) -> Evaluate (test data)
                   -> MD (UDD, stop on uncertainty) -> Select -> Label -> Dataset (+1 file)
    Report:  one row per iteration (``apax-nodes report`` prints it)

Every knob is an argument; every config is validated here, when the graph is built, so a typo
fails before any stage runs. Start structures that exist already (a node loaded with
``zntrack.from_rev``) get the MD engine's start checks here too (each MD node runs them when it
is added): any cell and periodicity runs, close contacts and constraints do not. Building
again with more iterations adds stages; the existing ones keep their names and parameters, so
``dvc repro`` runs only the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import zntrack
from pydantic import TypeAdapter

from apax_core.config import ConfigError, Executor
from apax_nodes.dataset import Dataset
from apax_nodes.evaluate import Evaluate
from apax_nodes.grow import Until
from apax_nodes.label import Label
from apax_nodes.md import MD, md_config
from apax_nodes.report import Report
from apax_nodes.select import Select, selection_method
from apax_nodes.train import Train, train_spec


@dataclass
class LoopSettings:
    """The knobs of the loop (the per-stage configs are apax_core config dicts)."""

    n_iterations: int = 4
    """Iterations of train -> MD -> select -> label; one more Train + Evaluate follows."""
    train: dict = field(default_factory=dict)
    """Training config of iteration 0 (from scratch)."""
    warm_train: dict | None = None
    """Training config of later iterations (warm start); default: ``train``."""
    md: dict = field(default_factory=dict)
    n_walkers: int = 1
    """MD walkers per iteration, cycling through the start structures (seeds differ)."""
    md_executor: dict = field(default_factory=lambda: {"kind": "serial"})
    """Where the walkers run (serial, processes or dask)."""
    n_select: int = 8
    val_fraction: float = 0.25
    """Share of each iteration's labelled frames that joins the validation set (the paper adds
    20 training + 10 validation frames per iteration). These frames of the loop's own MD are
    also the calibration set of every later model; iteration 0 calibrates on the initial
    validation data."""
    max_calibration: int | None = None
    """Calibrate on at most this many of those frames, the newest; None: all of them."""
    select_method: dict = field(default_factory=lambda: {"kind": "max_distance"})
    label_executor: dict = field(default_factory=lambda: {"kind": "serial"})
    """Where each iteration's reference calculations run (serial, processes or dask)."""

    def validate(self) -> None:
        """A :class:`ConfigError` naming the field, before any stage is written."""
        checks = (
            ("n_iterations", self.n_iterations >= 1, "must be at least 1"),
            ("n_walkers", self.n_walkers >= 1, "must be at least 1"),
            ("n_select", self.n_select >= 1, "must be at least 1"),
            ("val_fraction", 0.0 <= self.val_fraction < 1.0, "must be in [0, 1)"),
            (
                "max_calibration",
                self.max_calibration is None or self.max_calibration >= 1,
                "must be at least 1",
            ),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"LoopSettings.{name} {rule}, got {getattr(self, name)!r}")
        for name, check in (
            ("train", lambda: train_spec(self.train)),
            ("warm_train", lambda: train_spec(self.warm_train or self.train)),
            ("md", lambda: md_config(self.md)),
            ("select_method", lambda: selection_method(self.select_method)),
            *(
                (n, lambda n=n: TypeAdapter(Executor).validate_python(getattr(self, n)))
                for n in ("label_executor", "md_executor")
            ),
        ):
            try:
                check()
            except ValueError as err:
                raise ConfigError(f"LoopSettings.{name}: {err}") from None


def build_loop(
    project: zntrack.Project,
    settings: LoopSettings,
    *,
    initial_data: zntrack.Node,
    test_data: zntrack.Node,
    start_structures: zntrack.Node,
    labeller,
    name: str | None = None,
    until: Until | dict | None = None,
) -> list[dict[str, zntrack.Node]]:
    """Add the loop's stages to ``project``; returns the nodes of every iteration.

    ``name`` prefixes the stages (``cu_iter3_Train``), so several loops live in one project
    with names that do not depend on the order they are built in; None: ``iter3_Train``.
    ``until`` is the criterion by which the Report judges the loop done (see
    :func:`apax_nodes.grow.grow`, which appends iterations until it holds).

    Nodes, not frames, are passed in: a ``frames`` connection exists only inside a graph
    context, so it is made here, inside each iteration's group. ``initial_data`` has labelled
    ``frames`` and ``val_frames`` (a Split); ``test_data`` and ``start_structures`` have
    ``frames``. Each iteration's Dataset grows both sets; each Train validates on the current
    validation set and calibrates its ensemble on the validation frames from the loop's own MD
    (iteration 0, which has none, on the initial validation data).
    """
    settings.validate()
    prefix = loop_prefix(project, name)
    iterations, dataset, model = [], initial_data, None
    for i in range(settings.n_iterations + 1):
        with project.group(*prefix, f"iter{i}"):
            config = settings.train if model is None else settings.warm_train or settings.train
            train = Train(
                data=dataset.frames,
                validation_data=dataset.val_frames,
                calibration_data=dataset.calibration_frames if model is not None else None,
                model=model,
                config=config,
            )
            nodes = {"train": train, "evaluate": Evaluate(model=train, data=test_data.frames)}
            if i < settings.n_iterations:
                nodes |= _sampling(settings, i, train, dataset, start_structures, labeller)
                dataset = nodes["dataset"]
        model = train
        iterations.append(nodes)
    with project.group(*prefix) if prefix else project:
        Report(
            **{
                f"{key}s": [it[key] for it in iterations if key in it]
                for key in ("train", "evaluate", "md", "select", "label")
            },
            until=None if until is None else Until.model_validate(until).model_dump(),
        )
    return iterations


def loop_prefix(project: zntrack.Project, name: str | None) -> tuple[str, ...]:
    """The group prefix of a loop's stages; a ConfigError when the name is malformed or a loop
    of that name (or a second unnamed one) is in ``project`` already: ZnTrack would rename
    the second loop's stages with ``_1`` suffixes that depend on the build order."""
    if name is not None and (not name or "_" in name):
        raise ConfigError(
            f"loop name {name!r}: use a non-empty name without '_' (stage names join with '_')"
        )
    prefix = () if name is None else (name,)
    if (*prefix, "iter0") in project.groups:
        which = "an unnamed loop" if name is None else f"a loop named {name!r}"
        raise ConfigError(f"this project has {which} already; give each loop its own name=")
    return prefix


def _sampling(settings: LoopSettings, i: int, train, dataset, start_structures, labeller):
    """MD with the iteration's model, selection, labelling and the grown dataset."""
    md = MD(
        model=train,
        data=start_structures.frames,
        indices="all",
        n_walkers=settings.n_walkers,
        config=settings.md,
        executor=settings.md_executor,
    )
    select = Select(
        model=train,
        pool=md.frames,
        train_data=dataset.frames,
        n=settings.n_select,
        method=settings.select_method,
    )
    label = Label(data=select.frames, labeller=labeller, executor=settings.label_executor)
    grown = Dataset(
        previous=dataset,
        new=label.frames,
        val_fraction=settings.val_fraction,
        max_calibration=settings.max_calibration,
        seed=i,
    )
    return {"md": md, "select": select, "label": label, "dataset": grown}
