"""Training configuration: data, model, objective, optimiser, warm start."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Discriminator, Field, PositiveInt, Tag, model_validator

from apax_core.config.common import Strict
from apax_core.labels import Label

# ----------------------------------------------------------------------------------------- data


class PadToMax(Strict):
    """Pad every structure to the largest atom and pair count of the dataset: one compiled shape."""

    kind: Literal["max"] = "max"
    neighbour_bin: PositiveInt = 8
    """The largest neighbour count is rounded up to a multiple of this: a training set grown by
    an active-learning iteration keeps its shape, and so its compiled steps, unless a denser
    structure joins it (1: the exact maximum)."""


class PadBinned(Strict):
    """Pad each batch up to the next multiple of the bin sizes: a few shapes for mixed sizes."""

    kind: Literal["binned"] = "binned"
    atom_bin: PositiveInt = 10
    """Atom counts are rounded up to a multiple of this."""
    neighbour_bin: PositiveInt = 8
    """Neighbour slots per atom are rounded up to a multiple of this (the dense neighbour layout's
    counterpart of a pair-count bin)."""


Padding = Annotated[PadToMax | PadBinned, Field(discriminator="kind")]


class Screening(Strict):
    """Which labelled structures are implausible, and what happens to them. Every flagged
    structure is reported by index and reason; ``action`` decides whether it is dropped, kept,
    or stops the run."""

    action: Literal["drop", "keep", "error"] = "drop"
    min_distance: float = Field(0.5, ge=0.0)
    """Atoms closer than this (A) make a structure implausible (0: no check)."""
    max_robust_z: float = Field(20.0, gt=0.0)
    """Per-atom energy residuals and largest force norms farther than this many robust standard
    deviations (1.4826 x median absolute deviation) from the data's median are outliers."""
    min_structures: PositiveInt = 8
    """The energy and force outlier checks need at least this many structures."""
    keep_trained: bool = True
    """Under a warm start, a flagged structure the base model trained on (or validated on) is
    kept, so the training set does not move between iterations of a loop; False screens every
    structure anew (any frame the base model had that this run lacks is then warned about)."""


class DataConfig(Strict):
    """How the structures are batched (which structures: see :class:`TrainRun`).

    The neighbour-list cutoff is the model's ``r_max``: one number, one place.
    """

    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Fraction of the training structures held out when no validation structures are given."""
    batch_size: PositiveInt = 8
    val_batch_size: PositiveInt = 16
    padding: Padding = PadToMax()
    labels: list[Label] = ["energy", "forces"]
    """Labels every training and validation structure must carry."""
    screening: Screening = Screening()
    shuffle_seed: int = 0
    prefetch: int = Field(2, ge=0)
    """Batches prepared ahead in a background thread (0: prepare in the training thread)."""


# ---------------------------------------------------------------------------------------- model


class ZBLConfig(Strict):
    """Ziegler-Biersack-Littmark screened nuclear repulsion, switched off smoothly at ``r_max``."""

    r_max: float = Field(1.5, gt=0.0)


class ShallowEnsemble(Strict):
    """M outputs of the last readout layer on one shared network (paper sec. 2.2)."""

    kind: Literal["shallow"] = "shallow"
    n_members: int = Field(8, ge=2)
    chunk_size: PositiveInt | None = None
    """Members per chunk of the force-uncertainty jacobian (bounds memory); None: all at once."""


class FullEnsemble(Strict):
    """M independently initialised parameter sets, trained together and evaluated by vmap."""

    kind: Literal["full"] = "full"
    n_members: int = Field(4, ge=2)


Ensemble = Annotated[ShallowEnsemble | FullEnsemble, Field(discriminator="kind")]


class ModelBase(Strict):
    """What every model kind shares: cutoff, readout, elements, precision, ensemble."""

    r_max: float = Field(5.0, gt=0.0)
    """Cutoff radius in Angstrom (also the neighbour-list cutoff)."""
    hidden: list[PositiveInt] = [128, 128]
    """Hidden layer widths of the readout MLP."""
    activation: Literal["swish", "tanh", "gelu", "softplus"] = "swish"
    zbl: ZBLConfig | None = None
    """Optional ZBL repulsion added to the learned energy."""
    elements: list[str] | None = None
    """Chemical symbols the model knows; default: the elements of the training data."""
    precision: Literal["fp32", "fp64"] = "fp32"
    """Dtype of representation and readout; scale/shift and energy sums are always fp64."""
    ensemble: Ensemble | None = None
    """None: a single model; or a shallow or full ensemble for uncertainties."""

    @property
    def n_members(self) -> int:
        return 1 if self.ensemble is None else self.ensemble.n_members

    @property
    def member_chunk(self) -> int | None:
        """Members per chunk of the member-force jacobian (shallow ensembles); None: all."""
        return self.ensemble.chunk_size if isinstance(self.ensemble, ShallowEnsemble) else None


class GMNNConfig(ModelBase):
    """Gaussian-moment neural network (paper eq. 1-4)."""

    kind: Literal["gmnn"] = "gmnn"
    r_min: float = Field(0.5, ge=0.0)
    """Centre of the first Gaussian (Gaussian basis only)."""
    basis: Literal["gaussian", "bessel"] = "gaussian"
    n_basis: PositiveInt = 7
    """Number of radial basis functions."""
    n_radial: PositiveInt = 5
    """Number of learned radial channels (element-pair contractions of the basis)."""
    n_contr: int = Field(8, ge=1, le=8)
    """How many of the eight Gaussian-moment contraction groups enter the descriptor."""

    @model_validator(mode="after")
    def _radii(self) -> GMNNConfig:
        if self.r_min >= self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be smaller than r_max ({self.r_max})")
        return self


class EquivMPConfig(ModelBase):
    """Equivariant message passing (paper sec. 2.1, NequIP-like): node features of degree
    0..l_max, tensor-product messages with element-dependent radial weights, gated
    nonlinearities. The receptive field is n_layers x r_max."""

    kind: Literal["equivmp"] = "equivmp"
    r_max: float = Field(6.0, gt=0.0)
    hidden: list[PositiveInt] = [32]
    n_basis: PositiveInt = 7
    """Number of Bessel radial basis functions."""
    l_max: int = Field(2, ge=0, le=3)
    """Highest degree of the spherical harmonics and of the node features."""
    n_channels: PositiveInt = 32
    """Channels per degree of the node features."""
    n_layers: PositiveInt = 2
    """Message-passing steps."""
    radial_hidden: list[PositiveInt] = [32]
    """Hidden widths of the MLP that maps (basis, element pair) to the weight of each path."""
    avg_neighbours: float = Field(30.0, gt=0.0)
    """Summed messages are divided by the square root of this (a typical neighbour count)."""


def _model_kind(value) -> str:
    """The ``kind`` of a model section; a section without one is a GMNN (older configs)."""
    if isinstance(value, dict):
        return value.get("kind", "gmnn")
    return getattr(value, "kind", "gmnn")


ModelConfig = Annotated[
    Annotated[GMNNConfig, Tag("gmnn")] | Annotated[EquivMPConfig, Tag("equivmp")],
    Discriminator(
        _model_kind,
        custom_error_type="model_kind",
        custom_error_message="unknown model kind; expected 'gmnn' or 'equivmp'",
    ),
]
"""The model kinds, discriminated by ``kind`` (default gmnn)."""


# ---------------------------------------------------------------------------------------- train

log = logging.getLogger(__name__)

RENAMED_GROUPS = {"radial": "representation"}
"""Former names of parameter groups, still accepted with a deprecation warning ("radial" also
held EquivMP's message-passing weights)."""


def current_group_name(name):
    """``name`` of a parameter group as it is called now; a former name logs a warning."""
    if isinstance(name, str) and name in RENAMED_GROUPS:
        new = RENAMED_GROUPS[name]
        log.warning("parameter group %r is deprecated: it is called %r now", name, new)
        return new
    return name


Group = Annotated[
    Literal["representation", "nn", "scale", "shift"], BeforeValidator(current_group_name)
]
"""Parameter groups: the representation (GMNN's radial coefficients, EquivMP's message-passing
layers), readout network, per-element scale, per-element shift ("radial": deprecated name of
"representation")."""


class LossTerm(Strict):
    """One weighted term of the training objective.

    ``mse``/``huber`` compare the prediction (for a full ensemble: every member, averaged) with
    the label; ``nll``/``crps`` score the ensemble mean and standard deviation as a Gaussian
    (paper eq. 7 and 8) and need an ensemble.
    """

    quantity: Label
    kind: Literal["mse", "huber", "nll", "crps"] = "mse"
    weight: float = Field(1.0, ge=0.0)
    atoms_exponent: float = Field(0.0, ge=0.0)
    """The error of a structure is divided by n_atoms**atoms_exponent (1 for energy: per atom)."""
    huber_delta: float = Field(0.01, gt=0.0)
    """Transition between quadratic and linear (huber only), in the unit of the error."""

    @property
    def probabilistic(self) -> bool:
        return self.kind in ("nll", "crps")


def default_loss() -> list[LossTerm]:
    """Per-atom energy MSE x 25 + force MSE (a lower energy weight trades energy accuracy for
    force accuracy; measurements: bench/README.md)."""
    return [
        LossTerm(quantity="energy", weight=25.0, atoms_exponent=1.0),
        LossTerm(quantity="forces", weight=1.0),
    ]


class LearningRates(Strict):
    """Peak learning rate of each parameter group; 0 freezes a group exactly."""

    representation: float = Field(0.01, ge=0.0)
    """GMNN's radial coefficients, EquivMP's message-passing layers ("radial": deprecated)."""
    nn: float = Field(0.003, ge=0.0)
    scale: float = Field(0.001, ge=0.0)
    shift: float = Field(0.003, ge=0.0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw):
        if not isinstance(raw, dict):
            return raw
        renamed = {current_group_name(k): v for k, v in raw.items()}
        if len(renamed) < len(raw):
            raise ValueError("a learning rate is given under its current and its former name")
        return renamed


class ConstantSchedule(Strict):
    kind: Literal["constant"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)


class LinearSchedule(Strict):
    """Linear decay from the peak to ``end_factor`` times the peak over the run."""

    kind: Literal["linear"] = "linear"
    end_factor: float = Field(0.01, ge=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0)


class CyclicCosineSchedule(Strict):
    """Cosine cycles of ``period_epochs``; each cycle's peak is ``decay_factor`` times the last."""

    kind: Literal["cyclic_cosine"] = "cyclic_cosine"
    period_epochs: float = Field(20.0, gt=0.0)
    decay_factor: float = Field(0.9, gt=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0)


Schedule = Annotated[
    ConstantSchedule | LinearSchedule | CyclicCosineSchedule, Field(discriminator="kind")
]


def optax_optimizer(name: str):
    """The optax constructor behind an optimizer name (optax, and with it JAX, is imported here:
    a config is read by processes that never train)."""
    import optax
    import optax.contrib

    return {
        "adam": optax.adam,
        "adamw": optax.adamw,
        "sgd": optax.sgd,
        "ademamix": optax.contrib.ademamix,
    }[name]


class OptimizerConfig(Strict):
    name: Literal["adam", "adamw", "sgd", "ademamix"] = "adam"
    kwargs: dict[str, float | int | bool] = {}
    """Extra keyword arguments of the optax optimiser (e.g. b1, b2, weight_decay)."""
    learning_rates: LearningRates = LearningRates()
    schedule: Schedule = LinearSchedule()
    grad_clip: float | None = Field(100.0, gt=0.0)
    """Clip the global gradient norm to this value (None: no clipping)."""

    @model_validator(mode="after")
    def _kwargs_known(self) -> OptimizerConfig:
        if not self.kwargs:
            return self
        allowed = set(inspect.signature(optax_optimizer(self.name)).parameters) - {"learning_rate"}
        unknown = sorted(set(self.kwargs) - allowed)
        if unknown:
            raise ValueError(
                f"unknown kwargs {unknown} for optimizer {self.name!r}; allowed: {sorted(allowed)}"
            )
        return self


class EMAConfig(Strict):
    """Exponential moving average of the weights: validated, and saved as the model."""

    decay: float = Field(0.99, gt=0.0, lt=1.0)
    start_epoch: int = Field(0, ge=0)


ResetGroup = Annotated[
    Literal["representation", "nn", "scale_shift"], BeforeValidator(current_group_name)
]
"""Groups a warm start can re-initialise (scale_shift: both)."""


class WarmStart(Strict):
    """How a run continues from a base model (continuous or transfer learning); the base model
    itself is a run argument (:class:`TrainRun`). The optimiser section applies as it stands:
    warm starts usually want lower learning rates than a scratch run (bench/README.md)."""

    reset: list[ResetGroup] = []
    """Groups re-initialised instead of loaded; scale_shift comes from the new data's statistics."""
    freeze: list[Group] = []
    """Groups kept bit-identical to the base model."""


class TrainConfig(Strict):
    """The spec of a training run: model, objective, optimiser, epochs. It is saved in the model
    directory and is the run's resume identity; where data and outputs live is a
    :class:`TrainRun`."""

    n_epochs: PositiveInt
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = GMNNConfig()
    loss: list[LossTerm] = Field(default_factory=default_loss, min_length=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    ema: EMAConfig | None = EMAConfig()
    patience: PositiveInt | None = None
    """Stop after this many epochs without a better validation loss (None: never)."""
    warm_start: WarmStart | None = None
    """Settings of a warm start; used when the run is given a base model (default: WarmStart())."""
    calibrate: bool = True
    """Ensembles: after training, fit the NLL calibration of the spreads on the validation
    structures and store it with the model (every consumer then reports calibrated spreads)."""
    calibration_family: Literal["auto", "global", "per_element", "power"] = "auto"
    """Law of the calibration: one force factor, one per element, or a power law sigma' =
    a sigma^b (see apax_core.transforms.calibration); "auto" takes the family with the lowest
    held-out force NLL (5-fold over the calibration structures; global below two of them).
    The default, since one global factor that fixes the mean z^2 over-covers the bulk of the
    atoms (its miscalibration area exceeds the uncalibrated one; see the calibration-family
    tables in docs/results.md, where "auto" picks the power law)."""
    n_devices: PositiveInt = 1
    """Data-parallel training on this many local devices: each batch is split over them, the
    parameters are replicated. Batch sizes must be divisible by it."""

    @model_validator(mode="after")
    def _batches_split_evenly(self) -> TrainConfig:
        for name in ("batch_size", "val_batch_size"):
            size = getattr(self.data, name)
            if size % self.n_devices:
                raise ValueError(
                    f"data.{name} ({size}) must be divisible by n_devices ({self.n_devices}): "
                    "each device gets an equal share of every batch"
                )
        return self

    @model_validator(mode="after")
    def _probabilistic_needs_ensemble(self) -> TrainConfig:
        bad = [t.quantity for t in self.loss if t.probabilistic and self.model.ensemble is None]
        if bad:
            raise ValueError(f"nll/crps loss on {bad} needs model.ensemble (shallow or full)")
        return self


class TrainRun(Strict):
    """The arguments of one training run from the command line: inputs, output, display.
    None of them enters the spec or its resume identity."""

    directory: Path
    """The model directory this run writes (and resumes from)."""
    train_file: Path
    """Training structures: any ASE-readable file, or H5MD (.h5, .h5md, .hdf5)."""
    val_file: Path | None = None
    """Validation structures; if absent, ``data.val_fraction`` of the training file is held out."""
    base_model: Path | None = None
    """Warm-start from this model directory (settings: ``warm_start``)."""
    progress_bar: bool = True
