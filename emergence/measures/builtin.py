"""The built-in measures as the spec and ``emergence ls`` see them: name, implementation, options, cost and
default cadence, declared here once and readable without importing torch.

The registry imports this module on its first lookup and imports a measure's own module (``geometry.py``,
``llc.py`` ...) only when a run builds that measure. Each measure class names its declaration
(``class LLC(Measure, declared="llc")``) and takes its name, options, cost and cadence from it. A plugin
measure needs none of this: its class carries the same attributes itself (see ``base.Measure``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from emergence import registry
from emergence.measures.base import MeasureDeclaration, MeasureOptions, SummaryStatistic
from emergence.measures.onset_rules import (
    BaselineRatioRule,
    DeclaredRules,
    OnsetRule,
    PeakRule,
    ProbeRule,
    RecoveryRule,
    SigmaRule,
)

# -- options, one model per family ------------------------------------------------------------------


class GeometryOptions(MeasureOptions):
    sites: list[str] = Field(
        default_factory=lambda: ["resid_post"],
        description="trained runs: embed, resid_pre, resid_mid, resid_post; a Monitor: module paths, globs allowed "
        "(transformer.h.*), or those names on a TransformerLens model",
    )
    layers: Literal["all"] | list[int] = "all"
    position: Literal["last_input", "answer", "mean"] = Field(
        "last_input", description="answer: one value per answer position, keys end in /P{j}"
    )

    def onset_rules(self) -> DeclaredRules:
        return (("geometry/", RecoveryRule()),)  # representations collapse, then recover as the capability forms


# spectral_edge's "auto" projects only above this many selected parameters: below it W * P float32 deltas
# are <= 80 MB at W = 10 and the exact Gram costs a few W * P multiply-adds, so projecting would only add error.
AUTO_PROJECTION_MIN_PARAMETERS = 2_000_000


class SpectralEdgeOptions(MeasureOptions):
    parameters: Literal["all", "attention"] | list[str] = Field(
        "all", description="all; attention (attention weight matrices only); or a list of name prefixes"
    )
    window: int = Field(10, ge=3, description="W: update vectors in the window (>= 3 for sigma2/sigma3)")
    projection_dim: Literal["auto"] | PositiveInt | None = Field(
        None, description=f"null: exact; int: Gaussian projection to d dims; auto: 10 * W when P > {AUTO_PROJECTION_MIN_PARAMETERS}"
    )
    adiabatic_transition_at: float = Field(0.5, gt=0, description="A below this: band 0 (plateau-like)")
    adiabatic_unstable_at: float = Field(2.0, gt=0, description="A above this: band 2 (unstable)")

    def onset_rules(self) -> DeclaredRules:
        # METHODS.md: the gap ratio's onset is its peak; the other statistics get the change-point rule.
        return (("spectral/gap_ratio*", PeakRule()),)

    def bookkeeping_keys(self) -> tuple[str, ...]:
        return ("spectral/adiabatic_band",)  # a banding of spectral/adiabatic, which is judged itself

    def summaries(self) -> tuple[tuple[str, SummaryStatistic], ...]:
        # The study's claim about k* is its usual value (1 under Muon, 2 under AdamW), not a moment it changes.
        return (("spectral/k_star", "mode"),)

    @model_validator(mode="after")
    def _ordered(self) -> SpectralEdgeOptions:
        if self.adiabatic_transition_at >= self.adiabatic_unstable_at:
            raise ValueError("adiabatic_transition_at must be below adiabatic_unstable_at")
        if isinstance(self.parameters, list) and not self.parameters:
            raise ValueError("parameters: give at least one prefix, or 'all'")
        return self


class GradientOptions(MeasureOptions):
    n_examples: PositiveInt | None = Field(None, description="diagnostic examples used; null = all of them")
    chunk_size: PositiveInt = Field(32, description="examples per vmap call: bounds activation memory")

    def bookkeeping_keys(self) -> tuple[str, ...]:
        return ("gradient/*/trace",)  # the Gram's scale, logged beside the rank it normalises away


class GradCovOptions(GradientOptions):
    parameters: Literal["first"] | list[str] = Field(
        "first", description="first: the first max_parameters scalars in named_parameters() order; or parameter-name prefixes"
    )
    max_parameters: PositiveInt | None = Field(50_000, description="at most this many scalars, in order; null = no cap")

    def bookkeeping_keys(self) -> tuple[str, ...]:
        return (*super().bookkeeping_keys(), "gradient/*/n_parameters")


class CurvatureOptions(MeasureOptions):
    batch_size: int = Field(256, gt=0, description="training examples in the fixed batch (all of them if fewer)")
    parameters: Literal["all"] | Annotated[list[str], Field(min_length=1)] = Field(
        "all", description="'all' or parameter-name prefixes, matched at '.' boundaries against any alias name"
    )

    def bookkeeping_keys(self) -> tuple[str, ...]:
        return ("curvature/*/iterations", "curvature/*/residual", "curvature/*/standard_error", "curvature/*/n_probes")


class HessianTopOptions(CurvatureOptions):
    max_iterations: int = Field(20, gt=0, description="Lanczos steps (Hessian-vector products) at most")
    tolerance: float = Field(1e-3, gt=0, description="stop once the estimated relative residual is below this")


class HessianTraceOptions(CurvatureOptions):
    n_probes: int = Field(20, ge=2, description="Rademacher probes; two at least, for a standard error")


class ProbeOptions(MeasureOptions):
    features: list[str] | None = Field(
        None, description="feature families (carry, queue) or single components (queue/A); null: every feature of the task"
    )
    site: Literal["resid_pre", "resid_mid", "resid_post"] = "resid_post"
    sites: Annotated[list[str], Field(min_length=1, max_length=1)] | None = Field(
        None, description="a Monitor only: the one module path (globs allowed) whose outputs the probes read, as a one-item list"
    )
    layers: Literal["all"] | list[int] = "all"
    fit_size: PositiveInt = Field(2000, description="fresh examples the probes are fitted on")
    held_out_size: PositiveInt = Field(500, description="fresh examples the probes are scored on")
    C: float = Field(100.0, gt=0, description="inverse L2 strength of the logistic regression (the study's C = 100)")
    max_iter: PositiveInt = 200
    max_classes: PositiveInt = Field(32, description="labels with more distinct values are probed by linear regression")

    def onset_rules(self) -> DeclaredRules:
        return (("probe/*/accuracy", ProbeRule()),)

    def bookkeeping_keys(self) -> tuple[str, ...]:
        return ("probe/*/se", "probe/*/best_layer", "probe/*/baseline")


class AblationOptions(ProbeOptions):
    features: list[str] = Field(..., min_length=1, description="binary feature families (carry, queue) or components to ablate")  # type: ignore[assignment]
    at: Literal["end", "schedule"] = Field("end", description="end: once, at the last step; schedule: at every call")
    n_controls: PositiveInt = Field(5, description="random-direction control draws")
    n_bootstrap: PositiveInt = 1000
    confidence: float = Field(0.95, gt=0, lt=1)

    @field_validator("features")
    @classmethod
    def _distinct(cls, features: list[str]) -> list[str]:
        if len(set(features)) != len(features):
            raise ValueError(f"features repeat: {features}")
        return features

    def bookkeeping_keys(self) -> tuple[str, ...]:
        # Exact match under ablation is behaviour, usually read once at the end: no series to have an onset.
        return (*super().bookkeeping_keys(), "ablation/")


class LLCOptions(MeasureOptions):
    n_examples: int = Field(1024, gt=0, description="training examples in the fixed subset (all of them if fewer)")
    batch_size: int = Field(256, gt=0, description="SGLD minibatch size")
    lr: float = Field(1e-4, gt=0, description="SGLD step size epsilon")
    localization: float = Field(100.0, ge=0, description="gamma, the pull towards the current weights")
    nbeta: float | None = Field(
        None, gt=0, description="inverse temperature n*beta; unset: devinterp's default_nbeta(batch) = m / log m"
    )
    num_chains: int = Field(4, gt=0)
    num_draws: int = Field(100, ge=2)
    num_burnin_steps: int = Field(50, ge=0)
    rise_tolerance: float = Field(
        0.1, ge=0, description="unreliable when the loss climbs more than this fraction of the excess loss after burn-in"
    )

    def bookkeeping_keys(self) -> tuple[str, ...]:
        return ("llc/std", "llc/unreliable", "llc/rise", "llc/init_loss", "llc/nbeta", "llc/chain_*")


class CommutatorDefectOptions(MeasureOptions):
    pairs: PositiveInt = Field(5, description="K: pairs of fresh minibatches; the value is the median over them")
    batch_size: PositiveInt = Field(
        128, description="training examples in each of the minibatches A and B (two full batches would be the same batch: D = 0)"
    )
    lr: float = Field(1e-3, gt=0, description="eta, the size of the two plain SGD steps (D hardly depends on it)")
    parameters: Literal["all"] | Annotated[list[str], Field(min_length=1)] = Field(
        "all", description="'all' trainable parameters, or parameter-name prefixes"
    )
    onset: OnsetRule = Field(
        default_factory=BaselineRatioRule,
        description="how analysis finds its onset: baseline_ratio (10x the median of the first 3 and above 20) or sigma, ...",
    )

    def onset_rules(self) -> DeclaredRules:
        return (("commutator/defect", self.onset),)


class QKCommutatorOptions(MeasureOptions):
    layers: Literal["all"] | list[int] = "all"
    per_head: bool = Field(False, description="also each head's d_head x d_head diagonal block, keys .../H{h}")
    onset: OnsetRule = Field(
        default_factory=lambda: PeakRule(skip_first=3),
        description="how analysis finds its onset: by default the peak after the first 3 measurements",
    )

    def onset_rules(self) -> DeclaredRules:
        return (("commutator/qk/", self.onset),)


class FourierOptions(MeasureOptions):
    embed_key_share: float = Field(
        0.9, gt=0, lt=1, description="online: fourier/embed/n_key counts the fewest frequencies carrying this share of the embedding's energy"
    )
    key_share: float = Field(
        0.999, gt=0, lt=1, description="after the run: key frequencies are the fewest carrying this share of the final logits' "
        "energy in the cos/sin(w(a+b)) directions (one frequency often holds 99% of it)",
    )
    key_frequencies: Annotated[list[PositiveInt], Field(min_length=1)] | None = Field(
        None, description="after the run: these frequencies (1 .. (p-1)/2) instead of the final model's"
    )
    progress_losses: bool = Field(
        True, description="after the run: restricted and excluded loss at step 0 and every checkpoint (op + or - only)"
    )
    per_frequency: bool = Field(False, description="also the embedding's norm at each frequency k, keys fourier/embed/norm/k{k}")
    onset: OnsetRule = Field(
        default_factory=SigmaRule,
        description="how analysis finds the onset of fourier/embed/gini: by default 3 sd above its first 10 measurements, held 2",
    )
    excluded_loss_onset: OnsetRule = Field(
        default_factory=lambda: SigmaRule(baseline_measurements=3),
        description="the onset of fourier/excluded_loss/*, read at checkpoints: by default 3 sd above the first 3, held 2",
    )

    def onset_rules(self) -> DeclaredRules:
        # The embedding's spectrum concentrates as the algorithm forms, so its Gini coefficient rises from the
        # level of a random embedding; the excluded loss rises as the key frequencies start to carry the fit.
        # Both start flat. The other keys (counts, restricted loss) get the change-point rule.
        return (("fourier/embed/gini", self.onset), ("fourier/excluded_loss/", self.excluded_loss_onset))

    def bookkeeping_keys(self) -> tuple[str, ...]:
        # How many key frequencies were chosen, and the unmodified loss the restricted and excluded losses are
        # read against (the behaviour loss on the residues alone): references, not signals of their own.
        return ("fourier/n_key_frequencies", "fourier/loss/")

    @field_validator("key_frequencies")
    @classmethod
    def _distinct_frequencies(cls, frequencies: list[int] | None) -> list[int] | None:
        if frequencies is not None and len(set(frequencies)) != len(frequencies):
            raise ValueError(f"key_frequencies repeat: {frequencies}")
        return sorted(frequencies) if frequencies is not None else None

    def check_spec(self, spec: Any) -> None:
        """Modular arithmetic with tokens and one odd prime p (the Fourier basis of Z_p); + or - for the losses."""
        from emergence.tasks.base import TaskInputError  # torch-free; here so that `ls` does not pay for it
        from emergence.tasks.build import resolve_params

        task = spec.task
        if task.name != "modular_arithmetic":
            raise ValueError(f"reads the residues' Fourier spectrum and needs task modular_arithmetic; given task {task.name!r}")
        if task.format != "tokens":
            raise ValueError("reads the task's own residue tokens; given task.format 'text' (a pretrained tokenizer's)")
        modular = registry.tasks.get(task.name)()
        levels = [task.level] if isinstance(task.level, int) else list(task.level)
        try:
            resolved = [resolve_params(modular, level, task.params) for level in levels]
        except TaskInputError:
            return  # the task section's own error is reported
        moduli, ops = sorted({int(r["p"]) for r in resolved}), sorted({str(r["op"]) for r in resolved})
        if len(moduli) > 1:
            raise ValueError(f"needs one modulus; levels {levels} mix p = {moduli}: set task.params.p")
        if moduli[0] == 2:
            raise ValueError("needs an odd prime p; p = 2 has no frequency")
        if self.progress_losses and set(ops) - {"+", "-"}:
            raise ValueError(
                f"restricted and excluded loss read the logits along cos/sin(w(a +- b)), which op {ops} does not use: "
                "use op '+' or '-', or progress_losses: false"
            )
        top = (moduli[0] - 1) // 2
        if self.key_frequencies is not None and max(self.key_frequencies) > top:
            raise ValueError(f"key_frequencies {self.key_frequencies}: p = {moduli[0]} has frequencies 1 .. {top}")


# -- the built-in measures ------------------------------------------------------------------------

BUILTIN_MEASURES: tuple[MeasureDeclaration, ...] = (
    MeasureDeclaration(
        "rankme", "emergence.measures.geometry:RankMe", GeometryOptions, "cheap", None,
        "RankMe of residual-stream activations: exp of the entropy of the normalised singular values",
    ),
    MeasureDeclaration(
        "participation_ratio", "emergence.measures.geometry:ParticipationRatio", GeometryOptions, "cheap", None,
        "participation ratio of residual-stream activations: (sum of eigenvalues)^2 / sum of squares, centred covariance",
    ),
    MeasureDeclaration(
        "stable_rank", "emergence.measures.geometry:StableRank", GeometryOptions, "cheap", None,
        "stable rank of residual-stream activations: squared Frobenius over squared spectral norm",
    ),
    MeasureDeclaration(
        "spectral_edge", "emergence.measures.spectral:SpectralEdge", SpectralEdgeOptions, "cheap", None,
        "gap structure of the last W parameter updates; keys under spectral/",
    ),
    MeasureDeclaration(
        "commutator_defect", "emergence.measures.commutators:CommutatorDefect", CommutatorDefectOptions, "moderate", 100,
        "||theta_AB - theta_BA|| / (||eta g_A|| ||eta g_B||) for two SGD steps on fresh minibatches A, B; median over pairs",
    ),
    MeasureDeclaration(
        "qk_commutator", "emergence.measures.commutators:QKCommutator", QKCommutatorOptions, "cheap", None,
        "||W_Q W_K - W_K W_Q||_F per layer, heads stacked into d_model x d_model matrices",
    ),
    MeasureDeclaration(
        "fourier", "emergence.measures.fourier:FourierModes", FourierOptions, "cheap", None,
        "modular arithmetic: Fourier sparsity of the residue embedding; restricted and excluded loss after the run",
    ),
    MeasureDeclaration(
        "fisher_rank", "emergence.measures.gradients:FisherRank", GradientOptions, "moderate", 100,
        "RankMe of sqrt eig(g g^T / n), g the per-example answer log-likelihood gradients (all parameters)",
    ),
    MeasureDeclaration(
        "grad_cov_rank", "emergence.measures.gradients:GradCovRank", GradCovOptions, "moderate", 100,
        "the same on gradients centred over examples, restricted to a parameter subset",
    ),
    MeasureDeclaration(
        "hessian_top", "emergence.measures.curvature:HessianTop", HessianTopOptions, "expensive", 500,
        "largest Hessian eigenvalue of the training loss on a fixed batch, by Lanczos",
    ),
    MeasureDeclaration(
        "hessian_trace", "emergence.measures.curvature:HessianTrace", HessianTraceOptions, "expensive", 500,
        "Hessian trace of the training loss on a fixed batch, by Hutchinson's estimator",
    ),
    MeasureDeclaration(
        "probe", "emergence.measures.probes:Probe", ProbeOptions, "moderate", 100,
        "linear probes for the task's features per layer and answer position, against the untrained model",
    ),
    MeasureDeclaration(
        "ablation", "emergence.measures.ablation:Ablation", AblationOptions, "expensive", None,
        "exact match with each feature's probe directions removed, against random-direction controls",
    ),
    MeasureDeclaration(
        "llc", "emergence.measures.llc:LLC", LLCOptions, "expensive", 1000,
        "local learning coefficient by SGLD (devinterp's update rule) on a fixed training subset",
    ),
)

for _declaration in BUILTIN_MEASURES:
    registry.measures.declare(_declaration.name, _declaration.implementation, _declaration)

# The modules that implement the built-ins, for a process that will build measures and wants them imported in
# advance (a pool's fork server), since the registry imports each one only when a run first builds it.
IMPLEMENTATION_MODULES: tuple[str, ...] = tuple(dict.fromkeys(d.implementation.partition(":")[0] for d in BUILTIN_MEASURES))
