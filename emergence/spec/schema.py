"""The spec schema: one pydantic model per section, unknown keys forbidden, every field defaulted or required.

A measure's own options (``sites``, ``layers``, ``features`` ...) are checked by that measure's
``Options`` model, looked up in the measure registry, so a plugin measure validates like a built-in.
Validation imports no torch: a built-in measure's options come from its declaration (``registry.info``),
task classes are torch-free, and a tracker or executor is checked by name without importing its plugin.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from emergence import registry
from emergence.numbers import NoTrueOrFalseForNumbers
from emergence.registry import Registry, UnknownNameError, did_you_mean
from emergence.spec.jacobian_checks import JacobianSpecProblem, check_jacobian_spec


class MeasureOptionsError(ValueError):
    """A measure's own options failed; carries the inner errors so the loader can give each its path."""

    def __init__(self, errors: list[dict[str, Any]], allowed_fields: list[str]) -> None:
        self.errors = errors
        self.allowed_fields = allowed_fields
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


class FieldError(ValueError):
    """A cross-field problem found by a model validator, pinned to the field a user should change; ``given``
    and ``allowed``, when known, reach the ``SpecProblem`` for programs that read them."""

    def __init__(self, path: str, message: str, given: Any = None, allowed: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.given = given
        self.allowed = allowed
        super().__init__(message)


class UnknownName(ValueError):
    """A registry miss as a validator may raise it (only ValueError): the message lists the allowed names."""

    def __init__(self, error: UnknownNameError) -> None:
        self.allowed = error.allowed
        super().__init__(str(error))


def known_name(kind_registry: Registry, name: str) -> str:
    """``name`` if a built-in or an installed plugin provides it; no plugin is imported to find out."""
    if name not in kind_registry:
        raise UnknownName(UnknownNameError(kind_registry.kind, name, kind_registry.names()))
    return name


class Strict(NoTrueOrFalseForNumbers):
    # No inf or nan: `lr: .inf` is a typo's result, never a setting (nan already fails every bound).
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# A spec's name is a folder of the run directory (<output_dir>/<name>/<run_key>/): one path component, so it
# can never climb out (`..`, `/`), and short enough for every file system and tracker.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_MAX_LENGTH = 100
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?|mps)$"
PATTERN_MEANINGS = {  # what a person reads instead of the regular expression
    NAME_PATTERN: "letters, digits, '_', '.' and '-', starting with a letter or digit (it names a folder: no '/', no '..')",
    DEVICE_PATTERN: "auto, cpu, cuda, cuda:N or mps",
}
# torch.manual_seed takes at most 2^64 - 1, and measures seed their own streams with seed * 1_000_003 + step.
MAX_SEED = 2**32 - 1


class TaskSpec(Strict):
    name: str = Field(description="a registered task; `emergence ls tasks` lists them")
    level: int | list[int] = Field(1, description="difficulty level, or a list of levels to train on as a mixture")
    params: dict[str, Any] = Field(default_factory=dict, description="explicit task parameters; override the level's")
    train_size: PositiveInt = 20_000
    test_size: PositiveInt = 1_000
    diagnostic_size: PositiveInt = Field(200, description="fixed examples every measure sees at every step")
    # How a checkpoint series (model.source: checkpoints) sees the task: as text for its tokenizer.
    format: Literal["tokens", "text"] = Field("tokens", description="text: the task as prose for a pretrained tokenizer (checkpoint series)")
    shots: NonNegativeInt = Field(0, description="text: solved examples before each question (few-shot)")
    scoring: Literal["exact", "choice"] = Field(
        "exact", description="text: exact = greedy exact match of the continuation; choice = the most likely of the task's answer set"
    )
    # The null control (analysis.control) is this run with shuffle_answers: true; only the training split is
    # shuffled, so the test set still asks the real question and its exact match must stay at chance.
    shuffle_answers: bool = Field(
        False, description="permute the training answers across examples (inputs kept): the shuffled-label control's task"
    )
    difficulty: str | dict[int, str] | None = Field(
        None,
        description="the difficulty class a sweep groups this run under (easy, hard ...), or one per level ({1: easy, 3: hard}); "
        "null = the level (L1, L2 ...)",
    )

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        return known_name(registry.tasks, name)

    @model_validator(mode="after")
    def _text_options(self) -> TaskSpec:
        if self.format == "tokens" and (self.shots or self.scoring != "exact"):
            field = "shots" if self.shots else "scoring"
            raise FieldError(field, f"{field} applies to a task rendered as text; set task.format: text (a checkpoint series)")
        if self.scoring == "choice" and not hasattr(registry.tasks.get(self.name), "text_choices"):
            offering = [name for name in registry.tasks.names() if hasattr(registry.tasks.get(name), "text_choices")]
            raise FieldError(
                "scoring", f"given 'choice', but task {self.name!r} has no finite answer set; tasks that do: {', '.join(offering)}"
            )
        return self

    @model_validator(mode="after")
    def _task_can_supply(self) -> TaskSpec:
        """Levels, params and sizes the task can honour: checked from the task's counts, no data is made."""
        from emergence.tasks.base import TaskInputError
        from emergence.tasks.build import plan_levels

        try:
            plan_levels(registry.tasks.get(self.name)(), self.level, self.params, self.train_size, self.test_size, self.diagnostic_size)
        except TaskInputError as error:
            raise FieldError(error.field, str(error)) from None
        except (TypeError, ValueError, ArithmeticError) as error:  # a task (a plugin's) that does not check its params
            raise FieldError(
                "params", f"task {self.name!r} cannot use params {self.params!r} ({type(error).__name__}: {error}); allowed: "
                "the values its levels use (`emergence sample TASK --level N` shows them)", self.params,
            ) from None
        return self


# Named model sizes spanning the studies' range (405K to 85M parameters), with the shapes of the BERT
# miniatures (Turc et al. 2019): d_model / n_heads = 64 except tiny, d_mlp = 4 d_model. `micro` sits below
# the range, so that a sweep over sizes finishes on a laptop CPU. The count is
# 12 n_layers d_model^2, without embeddings (which depend on the task's vocabulary and context).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "micro": {"n_layers": 2, "d_model": 64, "n_heads": 4},  # 0.10M: below the studies, for CPU-sized sweeps
    "tiny": {"n_layers": 2, "d_model": 128, "n_heads": 2},  # 0.39M
    "mini": {"n_layers": 4, "d_model": 256, "n_heads": 4},  # 3.1M
    "small": {"n_layers": 4, "d_model": 512, "n_heads": 8},  # 12.6M
    "medium": {"n_layers": 8, "d_model": 512, "n_heads": 8},  # 25.2M
    "base": {"n_layers": 12, "d_model": 768, "n_heads": 12},  # 84.9M
}


def preset_parameters(name: str) -> int:
    """Parameters of a preset's blocks (attention 4 d^2 + MLP 8 d^2 per layer), without embeddings."""
    shape = MODEL_PRESETS[name]
    return 12 * shape["n_layers"] * shape["d_model"] ** 2


class ModelSpec(Strict):
    # Excluded from dumps: a transformer spec's canonical form (and so its run key) is what it was before
    # model kinds existed.
    kind: Literal["transformer"] = Field("transformer", exclude=True, description="transformer (default) or mlp")
    preset: str | None = Field(
        None, description=f"a named size ({', '.join(MODEL_PRESETS)}): sets n_layers, d_model, n_heads; fields given beside it win"
    )
    n_layers: PositiveInt = 2
    d_model: PositiveInt = 128
    n_heads: PositiveInt = 4
    d_head: PositiveInt | None = Field(None, description="null = d_model / n_heads")
    d_mlp: PositiveInt | None = Field(None, description="null = 4 * d_model")
    act_fn: Literal["relu", "gelu", "gelu_new", "silu"] = "relu"
    normalization: Literal["LN", "LNPre", "RMS", "RMSPre"] | None = "LN"
    positional_embedding: Literal["standard", "rotary"] = "standard"

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        """A preset is the whole shape: it sets n_layers, d_model and n_heads (d_mlp and d_head follow from
        them), and a shape field beside it must agree. A grid over ``model.preset`` then sweeps sizes
        whatever the base spec says, and the run key sees only the concrete shape."""
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        name = data["preset"]
        if name not in MODEL_PRESETS:
            raise FieldError("preset", f"unknown model preset {name!r}{did_you_mean(str(name), MODEL_PRESETS)}; allowed: {', '.join(MODEL_PRESETS)}")
        shape: dict[str, int | None] = {**MODEL_PRESETS[name], "d_mlp": None, "d_head": None}
        for key, value in shape.items():
            if data.get(key) is not None and data[key] != value:
                raise FieldError(
                    key,
                    f"{data[key]!r} conflicts with model.preset {name!r} ({key} = {value}); "
                    "a preset sets the whole shape: remove one of them",
                )
        return {**data, **shape}

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.d_head is None and self.d_model % self.n_heads:
            raise FieldError("n_heads", f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; set d_head explicitly")
        return self


class MLPModelSpec(Strict):
    """A plain MLP on a task that offers its examples as vectors (``digits``): the training-Jacobian study's model."""

    kind: Literal["mlp"]
    sizes: list[PositiveInt] = Field(min_length=2, description="layer widths: the task's input width first, its classes last")
    act: Literal["relu", "gelu", "gelu_new", "tanh", "silu"] = Field("gelu", description="gelu_new: the tanh approximation (Flax's gelu)")


CHOICE_METRIC = "behavior/test/choice_accuracy"  # a task scored by choice (task.scoring: choice)
PYTHIA_STEPS = "pythia"  # Pythia's 154 checkpoints: 0, the powers of two 1 ... 512, then every 1,000 to 143,000


class CheckpointSeriesSpec(Strict):
    """A pretrained model's training history: one Hugging Face checkpoint per step, measured in turn.

    ``name`` (a Hub repository, a revision per step, read from the local cache) or ``path`` (a folder with one
    Hugging Face checkpoint folder per step, ``path/step{N}``): exactly one of them.
    """

    source: Literal["checkpoints"]
    name: str | None = Field(None, description="a Hugging Face repository (EleutherAI/pythia-160m); revisions from the HF cache")
    path: str | None = Field(None, description="a folder of checkpoint folders, one per step (path/step1000/)")
    steps: Literal["pythia"] | Annotated[list[NonNegativeInt], Field(min_length=2)] | None = Field(
        None, description="pythia (its 154 steps), a list of steps, or null: every step found under path"
    )
    revision_format: str = Field("step{step}", description="the revision (or folder) name of a step; {step} is replaced")
    keep_cache: bool = Field(True, description="false: delete each revision from the HF cache once measured (series larger than the disk)")
    integrity: Literal["flag", "strict"] = Field(
        "flag", description="flag: a checkpoint whose weights equal another step's is left out of the analysis; strict: the run fails"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="the dtype checkpoints are loaded in")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto = CUDA when present")

    @model_validator(mode="after")
    def _one_place(self) -> CheckpointSeriesSpec:
        if (self.name is None) == (self.path is None):
            raise FieldError("name", "give the series as name (a Hugging Face repository) or as path (a local folder), not both or neither")
        if self.name is not None and self.steps is None:
            raise FieldError("steps", "a repository's steps cannot be listed offline: give steps (pythia, or a list)")
        if "{step}" not in self.revision_format:
            raise FieldError("revision_format", f"given {self.revision_format!r}; it must contain {{step}}")
        parts = self.revision_format.replace("\\", "/").split("/")
        if self.revision_format.startswith(("/", "\\")) or ".." in parts:
            # A local step's folder is path/<revision>: it must stay inside the series' folder.
            raise FieldError(
                "revision_format", f"given {self.revision_format!r}, which leads out of the series' folder; allowed: "
                "a relative name with {step} and no '..' part (step{step}, checkpoint-{step})", self.revision_format,
            )
        if isinstance(self.steps, list) and len(set(self.steps)) != len(self.steps):
            raise FieldError("steps", f"steps repeat: {sorted(s for s in set(self.steps) if self.steps.count(s) > 1)}")
        return self


def _model_kind(data: Any) -> str:
    if (data.get("source") if isinstance(data, dict) else getattr(data, "source", None)) is not None:
        return "checkpoints"  # an unknown source is reported by CheckpointSeriesSpec's Literal
    kind = data.get("kind", "transformer") if isinstance(data, dict) else getattr(data, "kind", "transformer")
    return "mlp" if kind == "mlp" else "transformer"  # an unknown kind is reported by ModelSpec's Literal


AnyModelSpec = Annotated[
    Annotated[ModelSpec, Tag("transformer")] | Annotated[MLPModelSpec, Tag("mlp")] | Annotated[CheckpointSeriesSpec, Tag("checkpoints")],
    Discriminator(_model_kind),
]


class OptimizerSpec(Strict):
    name: Literal["adamw", "sgd", "muon"] = Field(
        "adamw", description="muon: torch.optim.Muon for the hidden 2-D matrices, AdamW (betas) for embeddings, unembedding, biases and norms"
    )
    lr: PositiveFloat = Field(1e-3, description="muon: one rate for both parts (Muon's is scaled to match AdamW's update RMS)")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd (default 0) and muon (default 0.95, Nesterov) only")

    @model_validator(mode="before")
    @classmethod
    def _muon_momentum(cls, data: Any) -> Any:
        # Muon without momentum is a different optimizer; its usual 0.95 is the default where none is given.
        if isinstance(data, dict) and data.get("name") == "muon" and "momentum" not in data:
            return data | {"momentum": 0.95}
        return data


class LRScheduleSpec(Strict):
    name: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="linear warmup from 0, before the named schedule")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine/linear decay floor as a fraction of lr")


class TrainingSpec(Strict):
    steps: PositiveInt = 3000
    batch_size: PositiveInt | None = Field(256, description="null = full batch")
    optimizer: OptimizerSpec = OptimizerSpec()
    lr_schedule: LRScheduleSpec = LRScheduleSpec()
    grad_clip: PositiveFloat | None = 1.0
    checkpoint_every: PositiveInt = 500
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto = CUDA when present")
    autocast: Literal["bf16"] | None = Field(None, description="bf16 autocast for forward passes on CUDA")


class MeasureSpec(NoTrueOrFalseForNumbers):
    """``name`` plus the measure's own options, validated by the measure's ``Options`` model."""

    model_config = ConfigDict(extra="allow")
    name: str
    every: PositiveInt | Literal["schedule"] | None = Field(
        None,
        description="this measure's own cadence in steps; schedule = the spec's schedule, also for a measure with a "
        "cadence of its own (the expensive ones: every 500 or 1,000 steps); null = the measure's own, else the schedule",
    )

    def cadence(self, default_every: int | None) -> int | None:
        """The steps between this measure's calls, or None for the spec's schedule."""
        if self.every == "schedule":
            return None
        return self.every or default_every

    @field_validator("name")
    @classmethod
    def _known_measure(cls, name: str) -> str:
        return known_name(registry.measures, name)

    @model_validator(mode="after")
    def _check_options(self) -> MeasureSpec:
        if self.name not in registry.measures:
            return self  # the name's own error is already reported
        options_model = registry.measures.info(self.name).Options
        try:
            validated = options_model.model_validate(self.model_extra or {})
        except ValidationError as error:
            allowed = sorted({"name", "every", *options_model.model_fields})
            raise MeasureOptionsError(error.errors(include_url=False), allowed) from None
        # Store the defaults filled in, so the run key and the resolved spec are canonical.
        for key, value in validated.model_dump(mode="json").items():
            setattr(self, key, value)
        return self

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ScheduleSpec(Strict):
    every: PositiveInt = 50
    log_spaced_until: int = Field(0, ge=0, description="also measure at powers of two up to this step")
    # Early collapse can finish within a few dozen steps (every layer of a 4-layer model on modular addition
    # at p = 59 reaches its floor by step 25); ordering the layers' collapses needs measurements that close.
    dense_until: int = Field(0, ge=0, description="also measure every dense_every steps up to this step (0 = no dense start)")
    dense_every: PositiveInt = Field(5, description="the cadence before dense_until")


class EmergenceSpec(Strict):
    metric: str = "behavior/test/exact_match"
    threshold: float = Field(0.5, gt=0, le=1, description="fraction of the way from chance to 1.0")
    persistence: PositiveInt = Field(3, description="consecutive measurements that must stay above threshold")
    chance: float | None = Field(None, ge=0, lt=1, description="null = the task's chance exact match")


class CollapseSpec(Strict):
    collapse_fraction: float = Field(0.05, gt=0, lt=1, description="collapse step: first step within this fraction of the floor's depth")
    recovery_fraction: float = Field(0.10, gt=0, lt=1, description="recovery: rise above floor + this fraction of (initial - floor)")
    persistence: PositiveInt = 3


class PrecursorSpec(Strict):
    min_lead_intervals: PositiveFloat = Field(2, description="precursor when the lead is at least this many measurement intervals")
    signals: list[str] | None = Field(
        None,
        description="metric keys judged as signals: a prefix ending in /, a glob (gradient/*_rank) or an exact key; "
        "null = every measured key but behaviour (behavior/, the emergence metric), train/, cost/ and what measures "
        "declare as bookkeeping about their own estimates",
    )
    change_point_alpha: float = Field(
        0.05, gt=0, lt=1, description="onset of a signal without collapse and recovery: its Pettitt change point, when significant at this level"
    )


class RobustnessSpec(Strict):
    """The grid of analysis settings every verdict is decided again over (analysis/robustness.py)."""

    thresholds: Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0.3, 0.5, 0.7, 0.9], description="emergence thresholds, as fractions of the way from chance to 1.0"
    )
    persistence: Annotated[list[PositiveInt], Field(min_length=1)] = Field(
        default_factory=lambda: [2, 3, 5], description="measurements an event and an onset must hold (emergence and collapse persistence)"
    )
    margins: Annotated[list[PositiveFloat], Field(min_length=1)] = Field(
        default_factory=lambda: [1.0, 2.0, 3.0], description="precursor margins: the least lead, in measurement intervals"
    )


CONTROL_KINDS = ("shuffled_labels",)


class AnalysisSpec(Strict):
    emergence: EmergenceSpec = EmergenceSpec()
    collapse: CollapseSpec = CollapseSpec()
    precursor: PrecursorSpec = PrecursorSpec()
    robustness: RobustnessSpec | None = Field(RobustnessSpec(), description="null = no robustness grid")
    control: Literal["shuffled_labels"] | None = Field(
        None, description="shuffled_labels: also train a twin on permuted training answers, and flag onsets it shares as nonspecific"
    )


class TrackingSpec(Strict):
    backend: str
    experiment: str = Field("emergence", description="mlflow experiment")
    tracking_uri: str | None = Field(None, description="mlflow: null = sqlite:///mlflow.db; or http://host:port")
    project: str | None = Field(None, description="wandb project")
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    run_id: str | None = Field(
        None, description="log into this existing tracker run (made and ended by someone else: a Trainer's MLflow run) "
        "instead of one found or made by run key; the emergence Trainer callbacks set it"
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, backend: str) -> str:
        return known_name(registry.trackers, backend)


class ResourcesSpec(Strict):
    cpus: PositiveFloat = Field(1, description="CPU cores each run asks for (ray); also its torch threads")
    gpus: float = Field(0, ge=0, description="GPUs each run asks for (ray); a fraction (0.25) packs tiny models onto one GPU")


class ExecutionSpec(Strict):
    executor: str = Field("local", description="local, or an installed executor plugin (ray); `emergence ls executors`")
    workers: PositiveInt | None = Field(
        None,
        description="runs at once. local: null or 1 = one after another in this process, N = a pool of N processes, "
        "one per run; ray: the CPUs of a new local instance in units of resources.cpus (null = all cores)",
    )
    threads_per_worker: PositiveInt | None = Field(None, description="torch threads per run in a pool; null = cores / workers")
    address: str | None = Field(None, description="ray: null = start a local instance; auto = the running cluster; or host:port, ray://host:10001")
    resources: ResourcesSpec = ResourcesSpec()
    output_dir: str = "runs"

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, executor: str) -> str:
        if executor == "local":
            return executor  # built in; looking it up would import the executors (and torch) at schema import
        return known_name(registry.executors, executor)


class RetrainSpec(Strict):
    subspaces: list[Literal["chaotic", "bulk", "stable"]] = Field(
        default_factory=lambda: ["chaotic", "bulk", "stable"], description="which top-k subspaces to retrain in (sketch: chaotic only, its default)"
    )
    dims: list[PositiveInt] | None = Field(None, description="subspace sizes k; null = `points` sizes from n/48 to n")
    points: PositiveInt = Field(10, description="how many sizes when dims is null")


class JacobianSpec(Strict):
    """The training Jacobian J = dθ_T/dθ_0 of the whole run (docs/jacobian.md)."""

    mode: Literal["exact", "sketch"] = Field("exact", description="exact: every column by JVPs; sketch: randomized SVD")
    max_exact_params: PositiveInt = Field(10_000, description="exact mode refuses bigger models unless force")
    force: bool = Field(False, description="exact mode above max_exact_params (J is n x n floats)")
    chunk_size: PositiveInt = Field(1024, description="tangents per forward-mode pass (memory ~ chunk x state)")
    rank: PositiveInt = Field(100, description="sketch: singular values kept")
    oversample: NonNegativeInt = Field(10, description="sketch: extra random directions")
    power_iterations: NonNegativeInt = Field(1, description="sketch: each adds a VJP and a JVP pass")
    tolerances: list[PositiveFloat] = Field(default_factory=lambda: [1e-3, 1e-2, 1e-1], min_length=1, description="δ for the counts")
    retrain: RetrainSpec | None = Field(RetrainSpec(), description="subspace-restricted retraining; null = none")

    @model_validator(mode="after")
    def _sketch_knows_only_the_top(self) -> JacobianSpec:
        if self.mode == "sketch" and self.retrain is not None and "subspaces" not in self.retrain.model_fields_set:
            self.retrain.subspaces = ["chaotic"]  # the default a sketch can honour
        if self.mode == "sketch" and self.retrain is not None:
            unknown = [s for s in self.retrain.subspaces if s != "chaotic"]
            if unknown:
                raise FieldError(
                    "retrain.subspaces",
                    f"given {unknown}: a sketch knows only the top singular directions; allowed in sketch mode: chaotic",
                )
        return self


SITES = ("embed", "resid_pre", "resid_mid", "resid_post")  # the hook sites of the models `emergence run` builds

DEFAULT_MEASURES: list[dict[str, Any]] = [
    {"name": "rankme"},
    {"name": "participation_ratio"},
    {"name": "stable_rank"},
]


class Spec(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    task: TaskSpec
    model: AnyModelSpec = ModelSpec()
    training: TrainingSpec = TrainingSpec()
    measures: list[MeasureSpec] = Field(default_factory=lambda: [MeasureSpec(**m) for m in DEFAULT_MEASURES])
    schedule: ScheduleSpec = ScheduleSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    tracking: list[TrackingSpec] = Field(default_factory=lambda: [TrackingSpec(backend="mlflow")])
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict, description="dotted path -> values; the product is the sweep")
    execution: ExecutionSpec = ExecutionSpec()
    jacobian: JacobianSpec | None = Field(None, description="run the training-Jacobian study instead of measuring steps")

    @model_validator(mode="before")
    @classmethod
    def _study_measures_nothing(cls, data: Any) -> Any:
        """The Jacobian study and an MLP measure no steps: their measures default to none."""
        if isinstance(data, dict) and "measures" not in data:
            model = data.get("model")
            if data.get("jacobian") is not None or (isinstance(model, dict) and model.get("kind") == "mlp"):
                return {**data, "measures": []}
        return data

    @model_validator(mode="after")
    def _jacobian_study(self) -> Spec:
        try:
            check_jacobian_spec(self)
        except JacobianSpecProblem as problem:
            raise FieldError(problem.path, str(problem)) from None
        return self

    @property
    def planned_steps(self) -> int:
        """The last step this run reaches: the training's steps, or a checkpoint series' last step (0 when only
        the series' folder knows it)."""
        if isinstance(self.model, CheckpointSeriesSpec):
            steps = self.model.steps
            return 143_000 if steps == PYTHIA_STEPS else max(steps) if isinstance(steps, list) else 0
        return self.training.steps

    @model_validator(mode="after")
    def _series_reads_text(self) -> Spec:
        """A checkpoint series trains nothing and reads the task as text; text is only for a series."""
        series = isinstance(self.model, CheckpointSeriesSpec)
        if series and self.task.format != "text":
            raise FieldError("task.format", "given 'tokens': a checkpoint series reads the task as text for its own tokenizer; set task.format: text")
        if not series and self.task.format == "text":
            raise FieldError("task.format", "given 'text': only a checkpoint series (model.source: checkpoints) reads a task as text")
        if series and "training" in self.model_fields_set:
            raise FieldError("training", "a checkpoint series trains nothing: remove the training section")
        if series and self.jacobian is not None:
            raise FieldError("jacobian", "the Jacobian study trains a model; a checkpoint series cannot give it one")
        if self.task.scoring == "choice" and "metric" not in self.analysis.emergence.model_fields_set:
            # The score the spec asked for is the one that emerges (copies: a default instance may be shared).
            emergence = self.analysis.emergence.model_copy(update={"metric": CHOICE_METRIC})
            self.analysis = self.analysis.model_copy(update={"emergence": emergence})
        return self

    @model_validator(mode="after")
    def _control_can_be_made(self) -> Spec:
        """A shuffled-label control needs a model that ``emergence run`` trains, and a task with more than one
        possible answer: with one (chance exact match 1), permuting answers changes nothing and the "control"
        would be the run itself, so every onset would count as nonspecific."""
        if self.analysis.control is None:
            return self
        given, allowed = self.analysis.control, ("null", *CONTROL_KINDS)
        if isinstance(self.model, CheckpointSeriesSpec) or self.jacobian is not None or isinstance(self.model, MLPModelSpec):
            what = "a checkpoint series" if isinstance(self.model, CheckpointSeriesSpec) else "the training-Jacobian study or an MLP"
            raise FieldError(
                "analysis.control", f"given {given!r}, but {what} has no measured training for a control twin to repeat; allowed: null",
                given, ("null",),
            )
        from emergence.tasks.build import resolve_params

        task = registry.tasks.get(self.task.name)()
        for level in [self.task.level] if isinstance(self.task.level, int) else self.task.level:
            params = resolve_params(task, level, self.task.params)
            if task.chance_exact_match(params) >= 1.0:
                raise FieldError(
                    "analysis.control",
                    f"given {given!r}, but task {self.task.name!r} at level {level} ({params}) has one possible answer "
                    "(chance exact match 1), so permuting its answers changes nothing; allowed: null, or a task "
                    "and level with more than one possible answer",
                    given, allowed,
                )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        names = [m.name for m in self.measures]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FieldError("measures", f"measure(s) listed twice: {', '.join(duplicates)}")
        for index, measure in enumerate(self.measures):
            sites = (measure.model_extra or {}).get("sites")
            for at, site in enumerate(sites if isinstance(sites, list) else []):
                if site not in SITES:  # a module path is for a Monitor; a model we build has these sites
                    raise FieldError(
                        f"measures.{index}.sites.{at}", f"given {site!r}{did_you_mean(str(site), SITES)}; allowed: {', '.join(SITES)}"
                    )
            layers = (measure.model_extra or {}).get("layers")
            n_layers = getattr(self.model, "n_layers", None)  # a checkpoint series' depth is known once loaded
            if isinstance(layers, list) and n_layers is not None and any(not 0 <= layer < n_layers for layer in layers):
                raise FieldError(
                    f"measures.{index}.layers",
                    f"measure {measure.name!r} asks for layers {layers}, but the model has layers 0..{n_layers - 1}"
                )
            features = (measure.model_extra or {}).get("features")
            if isinstance(features, list) and self.task.name in registry.tasks:
                offered = registry.tasks.get(self.task.name).feature_names
                unknown = [f for f in features if str(f).split("/", 1)[0] not in offered]
                if unknown:
                    raise FieldError(
                        f"measures.{index}.features",
                        f"measure {measure.name!r} asks for feature(s) {unknown}; task {self.task.name!r} has {list(offered)}",
                    )
            # What only the measure knows it needs of the task or model (MeasureOptions.check_spec); options
            # without the method (a plugin's plain pydantic model) accept every spec.
            options = registry.measures.info(measure.name).Options.model_validate(measure.options())
            try:
                getattr(options, "check_spec", lambda spec: None)(self)
            except ValueError as error:
                raise FieldError(f"measures.{index}", f"measure {measure.name!r}: {error}") from None
        return self


class MonitorSpec(Strict):
    """A spec for a run someone else trains (``emergence.Monitor`` in their own loop, or a Trainer callback):
    what to measure and when, how to analyse and where to log; no task, model or training. ``kind: monitor``
    tells it from a spec that ``emergence run`` trains."""

    kind: Literal["monitor"]
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds what measures draw at random (projections, SGLD chains)")
    measures: list[MeasureSpec] = Field(default_factory=lambda: [MeasureSpec(**m) for m in DEFAULT_MEASURES])
    schedule: ScheduleSpec = ScheduleSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    tracking: list[TrackingSpec] = Field(default_factory=lambda: [TrackingSpec(backend="mlflow")])
    execution: ExecutionSpec = Field(ExecutionSpec(), description="a monitor uses only output_dir")

    @model_validator(mode="after")
    def _consistent(self) -> MonitorSpec:
        names = [m.name for m in self.measures]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FieldError("measures", f"measure(s) listed twice: {', '.join(duplicates)}")
        if self.analysis.control is not None:
            raise FieldError(
                "analysis.control",
                f"given {self.analysis.control!r}, but a monitored run is trained by its user's loop, which emergence "
                "cannot repeat on shuffled answers; allowed: null (train a shuffled-label twin yourself to compare)",
                self.analysis.control, ("null",),
            )
        return self


MONITOR_KIND = "monitor"

# Fields that change where results go or how they are computed in parallel, never what they are.
NON_RESULT_FIELDS = ("name", "description", "tracking", "grid", "execution")
