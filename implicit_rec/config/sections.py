"""The sections of the configuration, one frozen dataclass each: every key with its default, doc and range.

This is the one file where a key is added: declare it with :func:`~.fields._field` in its section;
the validation, the TOML output and the reference page follow (regenerate docs/configuration.md with
``implicit-rec config --markdown > docs/configuration.md``). Checks within one section are its ``_check``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dsgd.topology import TOPOLOGIES

from .fields import _AUTO, ConfigError, _field, _plain, _Section, _table, _typed_fields
from .names import (
    ARCHS,
    BASELINE_MATCHES,
    EXPLICIT_ARCHS,
    IMPLICIT_ARCHS,
    METHODS,
    OPTIMIZERS,
    PARAMETERIZATIONS,
    RELEASES,
    SHARDINGS,
    SOURCES,
    TRANSFERS,
    Z0_MODES,
)


def _check_window(cfg, name: str) -> None:
    if len(cfg.days) != 2 or cfg.days[0] >= cfg.days[1]:
        raise ConfigError(f"{name}.days must be [start, end) with start < end, got {list(cfg.days)}.", f"{name}.days")


def _check_lists(cfg, *fields: str, unique: bool = True) -> None:
    """Each list field non-empty and (``unique``) without repeats."""
    for field in fields:
        values, key = getattr(cfg, field), f"{cfg._name}.{field}"
        if not values:
            raise ConfigError(f"{key} must not be empty.", key)
        repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
        if unique and repeated:
            raise ConfigError(f"{key} lists {', '.join(map(repr, repeated))} more than once.", key)


_DEVICES_DOC = (
    "data-parallel training on this many JAX devices (a mesh: the batch_size rows split evenly over them); "
    "1 = one device, 0 = every device JAX sees (every process's under jax.distributed). One key per model "
    "section, as the FM and the VMs differ in size; see docs/scaling.md"
)


def _check_devices(cfg) -> None:
    """A data-parallel batch splits evenly over the devices (0 = all: checked when the mesh is built)."""
    if cfg.devices > 1 and cfg.batch_size % cfg.devices:
        key = f"{cfg._name}.batch_size"
        raise ConfigError(
            f"{key}={cfg.batch_size} is not divisible by {cfg._name}.devices={cfg.devices}: every device "
            "takes batch_size / devices rows.",
            key,
        )


@dataclasses.dataclass(frozen=True)
class LoaderOptions(_Section):
    """Options of the dataset loader; unset ('auto') = the loader's own default for data.source.

    Each option applies to the sources whose loader takes it (``sources`` in its metadata); setting
    one for another source is an error.
    """

    _name = "data.options"

    user_col: str | None = _field(None, "column of the user id", sources=("interactions",))
    item_col: str | None = _field(None, "column of the item id", sources=("interactions",))
    time_col: str | None = _field(
        None, "column of the timestamp (integers, ISO-8601 datetimes or numbers)", sources=("interactions",)
    )
    label_col: str | None = _field(None, "column of the 0/1 label", sources=("interactions",))
    rating_col: str | None = _field(
        None, "column of the rating (read when rating_threshold is set)", sources=("interactions",)
    )
    rating_threshold: float | None = _field(
        None, "label = rating >= threshold (instead of label_col)", sources=("interactions",)
    )
    categorical: tuple[str, ...] | None = _field(
        None, "extra user or context columns (no history)", sources=("interactions",)
    )
    item_categorical: tuple[str, ...] | None = _field(
        None, "extra columns describing the item (get a history sequence)", sources=("interactions",)
    )
    history: str | None = _field(
        None, "earlier events in the histories", choices=("all", "positive"), sources=("interactions",)
    )
    min_count: int | dict[str, int] | None = _field(
        None, "rarer ids map to OOV; an int or a table {column = count}", min=1, sources=(*RELEASES, "interactions")
    )
    max_len: int | None = _field(
        None, "behaviour-sequence length of the table", min=1, sources=(*RELEASES, "interactions")
    )
    test_fraction: float | None = _field(
        None, "last fraction of the events by time held out for testing", min=0, below=1, sources=("interactions",)
    )
    valid_fraction: float | None = _field(
        None,
        "fraction of the events before the test split used for validation",
        min=0,
        below=1,
        sources=(*RELEASES, "interactions"),
    )
    n_train_days: int | None = _field(
        None, "equal-count day windows of the train + validation events", min=1, sources=(*RELEASES, "interactions")
    )
    visual_embeddings: bool | None = _field(
        None, "load DIR/item_visual_emb_dim64.h5 (auto: when present)", sources=("kuaivideo",)
    )
    chunk_rows: int | None = _field(
        None,
        "rows read per chunk (memory bound; not part of the cache key)",
        min=1,
        sources=(*RELEASES, "interactions"),
    )

    def given(self) -> dict[str, Any]:
        """The options that are set (not 'auto'), as loader keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """Where the events come from."""

    _name = "data"

    source: str = _field("synthetic", "where the events come from", choices=SOURCES)
    path: str = _field(
        "",
        "interactions: a CSV or parquet file; taobaoad, kuaivideo, amazonelectronics: a directory "
        "holding train.csv and test.csv; synthetic: '' (none)",
    )
    preset: str = _field(
        "default",
        "synthetic data: tiny, default, large (sizes) or multihop (default size, a click that takes "
        "several steps to resolve; docs/multihop.md); ignored for files",
        choices=("tiny", "default", "large", "multihop"),
    )
    seed: int = _field(0, "seed of the synthetic data (ignored for files)", min=0)
    cache_dir: str = _field(_AUTO, "where prepared tables are cached; 'auto' = RUN/cache")
    options: LoaderOptions = _table(LoaderOptions, "options of the loader of data.source ([data.options])")

    @property
    def dataset(self) -> str:
        """The one-string form ``SOURCE:PATH`` (``"synthetic"``), as ``--dataset`` takes it."""
        return f"{self.source}:{self.path}" if self.path else self.source

    def _check(self) -> None:
        if self.source == "synthetic" and self.path:
            raise ConfigError(
                f"data.source='synthetic' takes no path, got data.path={self.path!r}; remove data.path "
                "or choose the source that reads it (e.g. data.source='interactions').",
                "data.path",
            )
        if self.source != "synthetic" and not self.path:
            target = "FILE" if self.source == "interactions" else "DIR"
            raise ConfigError(
                f"data.source={self.source!r} needs a path: set data.path = {target} "
                f"(or --dataset {self.source}:{target}).",
                "data.path",
            )
        for name in self.options.given():
            sources = LoaderOptions.__dataclass_fields__[name].metadata["sources"]
            if self.source not in sources:
                raise ConfigError(
                    f"data.options.{name} does not apply to data.source={self.source!r} (only to "
                    f"{', '.join(sources)}); remove it.",
                    f"data.options.{name}",
                )


@dataclasses.dataclass(frozen=True)
class FMConfig(_Section):
    """The foundation model: trained on an early window, then it logs an embedding per event."""

    _name = "fm"

    size: str = _field("small", "FM size", choices=("small", "medium", "large"))
    days: tuple[int, ...] = _field((0, 4), "[start, end) days the FM trains on", min=0)
    log_from_day: int | None = _field(None, "first day the FM logs; 'auto' = end of fm.days", min=0)
    max_len: int | None = _field(None, "behaviour-sequence length of the FM; 'auto' = min(100, data's)", min=1)
    embedding: str = _field(
        "interaction",
        "logged representation: the FM's top hidden layer (interaction), its item embedding, or its "
        "candidate-free user representation (user)",
        choices=("interaction", "item", "user"),
    )
    store_dtype: str = _field("float16", "dtype of the logged embeddings", choices=("float16", "float32"))
    out_of_fold: int = _field(
        2, "K >= 2: also log the FM-window events, each by an FM trained on the other K-1 user folds; 0 = off", min=0
    )
    epochs: int = _field(
        1, "training epochs (early stopping on validation AUC); CTR models overfit after one pass", min=1
    )
    batch_size: int = _field(256, "training batch size", min=1)
    learning_rate: float = _field(2e-3, "Adam learning rate", positive=True)
    patience: int = _field(2, "epochs without validation improvement before stopping", min=1)
    devices: int = _field(1, _DEVICES_DOC, min=0)

    def _check(self) -> None:
        _check_window(self, "fm")
        _check_devices(self)
        if self.out_of_fold == 1:
            raise ConfigError("fm.out_of_fold=1 is not a fold count: use 0 (off) or K >= 2 folds.", "fm.out_of_fold")


@dataclasses.dataclass(frozen=True)
class VMConfig(_Section):
    """The vertical models: every arch x transfer x seed is trained and tested."""

    _name = "vm"

    archs: tuple[str, ...] = _field(("din", "implicit"), "architectures", choices=ARCHS)
    transfers: tuple[str, ...] = _field(TRANSFERS, "transfer variants", choices=TRANSFERS)
    seeds: int = _field(1, "seeds per variant (mean and std are reported)", min=1)
    days: tuple[int, ...] = _field((4, 7), "[start, end) days the VMs train on", min=0)
    max_len: int = _field(25, "behaviour-sequence length of the VMs", min=1)
    history_len: int = _field(20, "L: logged FM embeddings per LoopFM feature", min=1)
    hidden: tuple[int, ...] = _field((64, 32), "hidden widths of the explicit VMs' MLP", min=1)
    d_state: int = _field(32, "state size of the implicit VMs implicit and implicit-seq", min=1)
    node_dim: int = _field(8, "implicit-graph: state size per node (one node per id of graph_field)", min=1)
    graph_field: str = _field(
        "cate_id", "implicit-graph: the candidate field (shared by a behaviour sequence) whose ids are the nodes"
    )
    epochs: int = _field(5, "training epochs (early stopping on validation AUC)", min=1)
    batch_size: int = _field(256, "training batch size", min=1)
    learning_rate: float = _field(3e-3, "Adam learning rate", positive=True)
    patience: int = _field(1, "epochs without validation improvement before stopping", min=1)
    devices: int = _field(1, _DEVICES_DOC, min=0)
    kd_weight: float = _field(1.0, "weight of the distillation loss", min=0)
    kd_on_main: bool = _field(False, "distill into the main head instead of an auxiliary head")
    method: str = _field("anderson", "fixed-point solver of the implicit VM", choices=METHODS)
    train_max_iter: int = _field(10, "solver iteration cap of the implicit VM while training", min=1)
    train_tol: float = _field(1e-4, "solver tolerance (relative residual) while training", min=0)
    eval_max_iter: int = _field(30, "solver iteration cap of the implicit VM when testing", min=1)
    eval_tol: float = _field(1e-5, "solver tolerance (relative residual) when testing", min=0)
    # -- the implicit VMs' cell and the training for test-time compute --------------------------
    parameterization: str = _field(
        "spectral",
        "state map of the implicit cells: spectral (||W|| = gamma, hard cap), weight or none (unconstrained: "
        "pair with jacobian_weight and watch the per-epoch convergence monitor)",
        choices=PARAMETERIZATIONS,
    )
    gamma: float = _field(0.9, "spectral cap ||W||_2 of parameterization = spectral", positive=True, below=1)
    train_grad: str = _field(
        "ift", "gradient of the implicit VMs: ift (implicit), phantom or unroll", choices=("ift", "phantom", "unroll")
    )
    train_iterations: tuple[int, ...] | None = _field(
        None,
        "random-k training: [lo, hi], each step runs exactly k ~ U{lo..hi} iterations (train_grad phantom or "
        "unroll); 'auto' = off (solve to train_tol within train_max_iter)",
        min=1,
    )
    z0: str = _field(
        "zeros", "initial state of the implicit VMs (learned: tanh(A c) of the injection)", choices=Z0_MODES
    )
    z0_noise: float = _field(0.0, "path independence: training starts at z0 + z0_noise * U(-1, 1); 0 = off", min=0)
    correction_states: int = _field(
        0, "states along the training solve scored by the fixed-point-correction loss", min=0
    )
    correction_weight: float = _field(1.0, "weight of the fixed-point-correction loss (correction_states > 0)", min=0)
    jacobian_weight: float = _field(0.0, "weight of the Jacobian penalty ||df/dz||_F^2 / d at z*; 0 = off", min=0)
    warmup_steps: int = _field(0, "warm-up curriculum: the first steps train warmup_iters unrolled iterations", min=0)
    warmup_iters: int = _field(6, "unrolled iterations of the warm-up steps", min=1)

    def _check(self) -> None:
        _check_window(self, "vm")
        _check_devices(self)
        _check_lists(self, "archs", "transfers")
        if self.train_iterations is not None:
            lo_hi = list(self.train_iterations)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ConfigError(
                    f"vm.train_iterations must be [lo, hi] with 1 <= lo <= hi, got {lo_hi}.", "vm.train_iterations"
                )
            if self.train_grad == "ift":
                raise ConfigError(
                    "vm.train_iterations (random-k training) runs exactly k iterations, not a solve: set "
                    "vm.train_grad = 'phantom' or 'unroll'.",
                    "vm.train_grad",
                )
        if not self.hidden:
            raise ConfigError("vm.hidden must list at least one hidden width, e.g. [64, 32].", "vm.hidden")


@dataclasses.dataclass(frozen=True)
class SweepConfig(_Section):
    """Test-time iteration sweep of every implicit VM, explicit baselines, Lipschitz diagnostic."""

    _name = "sweep"

    iterations: tuple[int, ...] = _field((0, 1, 2, 4, 8, 16, 32), "iteration counts k", min=0)
    methods: tuple[str, ...] = _field(("anderson",), "solvers swept (add picard to compare)", choices=METHODS)
    baseline_archs: tuple[str, ...] = _field(
        ("din", "transformer"),
        "explicit baselines: din (DIN front end + an MLP of depth hidden layers) and transformer (depth "
        "encoder layers over what implicit-seq reads); [] = none",
        choices=EXPLICIT_ARCHS,
    )
    baseline_depths: tuple[int, ...] = _field((1, 2, 4, 8), "depths D of the explicit baselines (layers)", min=1)
    baseline_match: tuple[str, ...] = _field(
        ("params",),
        "what each baseline's width matches: the match_arch VM's parameters (params) and/or its FLOPs per "
        "example at match_iterations (flops; experiments/configs/test_time_compute.toml runs both)",
        choices=BASELINE_MATCHES,
    )
    match_arch: str = _field("implicit-seq", "implicit VM whose cost the baselines match", choices=IMPLICIT_ARCHS)
    match_iterations: int = _field(8, "k at which the match_arch VM's FLOPs per example are matched", min=1)
    baseline_transfer: str = _field(
        "loopfm+kd", "transfer variant of the explicit baselines (and of the VM they match)", choices=TRANSFERS
    )
    lipschitz_examples: int = _field(256, "test examples for the Lipschitz estimate", min=1)
    lipschitz_perturbations: int = _field(8, "random perturbations per example", min=1)
    lipschitz_scale: float = _field(1e-2, "perturbation norm relative to the input's norm", positive=True)
    timing_repeats: int = _field(3, "timed passes per k (median reported) of every swept VM", min=1)
    timing_rows: int = _field(
        8192,
        "test rows scored by each timed pass (the first ones; seconds = the time to score them); 0 = every test row",
        min=0,
    )

    def _check(self) -> None:
        _check_lists(self, "methods")
        _check_lists(self, "iterations", unique=False)
        if list(self.iterations) != sorted(set(self.iterations)):
            raise ConfigError(
                f"sweep.iterations must be increasing without repeats, got {list(self.iterations)}.",
                "sweep.iterations",
            )
        if self.baseline_archs:  # [] = no baselines
            _check_lists(self, "baseline_archs", "baseline_depths", "baseline_match")


@dataclasses.dataclass(frozen=True)
class DSGDConfig(_Section):
    """Decentralized training of one VM (`implicit-rec train-decentralized`); data and model from [data], [vm]."""

    _name = "dsgd"

    agents: int = _field(6, "number of agents (JAX devices)", min=1)
    topology: str = _field("ceca-2p", "communication topology", choices=TOPOLOGIES)
    arch: str = _field("mlp", "architecture of the VM trained", choices=ARCHS)
    transfer: str = _field("none", "transfer variant of the VM trained", choices=TRANSFERS)
    shards: str = _field("iid", "how agents split the training rows", choices=SHARDINGS)
    steps: int = _field(400, "DSGD iterations", min=1)
    optimizer: str = _field("adam", "local update rule of every agent (plain DSGD: sgd)", choices=OPTIMIZERS)
    learning_rate: float = _field(3e-3, "learning rate of every agent", positive=True)
    batch_size: int = _field(64, "batch size of every agent", min=1)
    seed: int = _field(0, "seed of the model and the batch order", min=0)
    log_every: int = _field(10, "iterations between log records (consensus, loss, bytes)", min=1)
    eval_every: int = _field(100, "iterations between validation AUCs", min=1)
    eval_agent: int = _field(0, "agent whose own model is also evaluated", min=0)
    max_valid: int = _field(20000, "validation events used for the AUC", min=1)
    unroll_period: bool = _field(False, "one compiled call per period (static permutations, no lax.switch)")

    def _check(self) -> None:
        if self.eval_agent >= self.agents:
            raise ConfigError(
                f"dsgd.eval_agent must be < dsgd.agents={self.agents}, got {self.eval_agent}.", "dsgd.eval_agent"
            )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The whole configuration: one object per section."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    fm: FMConfig = dataclasses.field(default_factory=FMConfig)
    vm: VMConfig = dataclasses.field(default_factory=VMConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    dsgd: DSGDConfig = dataclasses.field(default_factory=DSGDConfig)

    def __post_init__(self):
        for f, tp in _typed_fields(type(self)):
            if not isinstance(getattr(self, f.name), tp):
                raise ConfigError(f"RunConfig.{f.name} must be a {tp.__name__}, got {getattr(self, f.name)!r}.")

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists, None as 'auto', sub-tables as dicts) — what ``config.toml`` holds."""
        return {s.name: _plain(getattr(self, s.name)) for s in dataclasses.fields(self)}

    def replace(self, **sections) -> RunConfig:
        return dataclasses.replace(self, **sections)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}
DEFAULT = RunConfig()
