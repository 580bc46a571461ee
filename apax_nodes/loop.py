"""The active-learning loop as a ZnTrack graph: one group per iteration, stable stage names.

    iter i:  Train (warm start from iter i-1) -> Evaluate (test data)
                   -> MD (UDD, stop on uncertainty) -> Select -> Label -> Dataset (+1 file)

Every knob is an argument; every config is validated here, when the graph is built, so a typo
fails before any stage runs. Building again with more iterations adds stages; the existing ones
keep their names and parameters, so ``dvc repro`` runs only the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import zntrack

from apax_nodes.dataset import Dataset
from apax_nodes.evaluate import Evaluate
from apax_nodes.label import Label
from apax_nodes.md import MD, md_config
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
    n_select: int = 8
    select_method: dict = field(default_factory=lambda: {"kind": "max_distance"})

    def validate(self) -> None:
        if self.n_iterations < 1:
            raise ValueError(f"n_iterations must be at least 1, got {self.n_iterations}")
        if self.n_select < 1:
            raise ValueError(f"n_select must be at least 1, got {self.n_select}")
        for name, spec in (("train", self.train), ("warm_train", self.warm_train or self.train)):
            try:
                train_spec(spec)
            except ValueError as err:
                raise ValueError(f"LoopSettings.{name}: {err}") from None
        md_config(self.md)
        selection_method(self.select_method)


def build_loop(
    project: zntrack.Project,
    settings: LoopSettings,
    *,
    initial_data: zntrack.Node,
    test_data: zntrack.Node,
    start_structures: zntrack.Node,
    labeller,
    validation: str = "val_frames",
) -> list[dict[str, zntrack.Node]]:
    """Add the loop's stages to ``project``; returns the nodes of every iteration.

    Nodes, not frames, are passed in: a ``frames`` connection exists only inside a graph
    context, so it is made here, inside each iteration's group. ``initial_data`` has labelled
    ``frames`` and the validation frames as attribute ``validation`` (a Split); ``test_data``
    and ``start_structures`` have ``frames``.
    """
    settings.validate()
    iterations, dataset, model = [], initial_data, None
    for i in range(settings.n_iterations + 1):
        last = i == settings.n_iterations
        with project.group(f"iter{i}"):
            config = settings.train if model is None else settings.warm_train or settings.train
            val = getattr(initial_data, validation)
            nodes = {
                "train": Train(data=dataset.frames, validation_data=val, model=model, config=config)
            }
            nodes["evaluate"] = Evaluate(model=nodes["train"], data=test_data.frames)
            if not last:
                nodes["md"] = MD(
                    model=nodes["train"], data=start_structures.frames, config=settings.md
                )
                nodes["select"] = Select(
                    model=nodes["train"],
                    pool=nodes["md"].frames,
                    train_data=dataset.frames,
                    n=settings.n_select,
                    method=settings.select_method,
                )
                nodes["label"] = Label(data=nodes["select"].frames, labeller=labeller)
                nodes["dataset"] = Dataset(previous=dataset, new=nodes["label"].frames)
                dataset = nodes["dataset"]
        model = nodes["train"]
        iterations.append(nodes)
    return iterations
