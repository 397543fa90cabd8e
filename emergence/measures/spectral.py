"""Spectral edge (Xu, arXiv 2603.28964): the gap structure of the rolling window of parameter updates.

Definitions in METHODS.md, section "Spectral edge". The measure keeps state across calls: the last
parameter snapshot and the last W update vectors, so memory is O(W * P) (O(P + W * d) with a projection
to d dimensions). Its deltas are between consecutive *calls*, i.e. consecutive schedule steps; with a
log-spaced schedule the early deltas span unequal numbers of optimizer steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from emergence.measures.base import Measure, MeasureContext, MeasureOptions, MeasureSetup
from emergence.measures.builtin import AUTO_PROJECTION_MIN_PARAMETERS
from emergence.measures.parameters import matches_prefix, readable_name

# The projection matrix is generated in fixed blocks of rows, each from its own seed, so holding it and
# streaming it give the same matrix, and a resumed run regenerates it exactly.
PROJECTION_CHUNK_ROWS = 65_536
# Hold the P x d matrix (float32) when it is at most this many numbers (128 MiB); stream it otherwise.
HELD_PROJECTION_MAX_ELEMENTS = 2**25
# Inner products in float64 over column blocks of this width, so no float64 copy of the window exists.
DOT_CHUNK = 2**18
# Singular values are floored at this fraction of sigma_1: deltas stored in float32 carry relative
# rounding ~6e-8, so anything below ~1e-7 sigma_1 is numerically zero. Ratios of ~1e7 mean "exactly
# rank-deficient window" rather than an infinite gap.
SIGMA_RELATIVE_FLOOR = 1e-7
PROJECTION_SEED_TAG = 0x5EC7  # separates this measure's random stream from others seeded by the run seed


def flatten_parameters(parameters: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Detached copy of the parameters, concatenated in sorted-name order, at least float32."""
    with torch.no_grad():
        parts = [parameters[name].detach().reshape(-1) for name in sorted(parameters)]
        dtype = torch.promote_types(parts[0].dtype, torch.float32)
        return torch.cat([part.to(dtype) for part in parts])


def dot_rows(rows: list[torch.Tensor], vector: torch.Tensor) -> torch.Tensor:
    """[r . vector for r in rows] accumulated in float64, one column block at a time."""
    out = torch.zeros(len(rows), dtype=torch.float64, device=vector.device)
    for start in range(0, vector.numel(), DOT_CHUNK):
        block = torch.stack([row[start : start + DOT_CHUNK] for row in rows]).double()  # W x chunk: 8 * W * 2^18 bytes
        out += block @ vector[start : start + DOT_CHUNK].double()
    return out


def projection_chunk(seed: int, chunk: int, rows: int, dim: int) -> torch.Tensor:
    """Rows [chunk * PROJECTION_CHUNK_ROWS, +rows) of the Gaussian matrix, entries N(0, 1/dim), on CPU.

    Generated on CPU so the matrix is the same whatever device the run uses (a resumed run may move).
    """
    chunk_seed = int(np.random.SeedSequence([PROJECTION_SEED_TAG, seed, chunk]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator().manual_seed(chunk_seed)
    return torch.randn(rows, dim, generator=generator) / math.sqrt(dim)


class GaussianProjection:
    """v -> R^T v for a fixed P x d Gaussian R (E ||R^T v||^2 = ||v||^2), output in float64.

    Memory: the whole R (4 * P * d bytes) when P * d <= HELD_PROJECTION_MAX_ELEMENTS, otherwise one block
    of PROJECTION_CHUNK_ROWS rows (4 * 65,536 * d bytes) at a time, regenerated at every call.
    """

    def __init__(self, n_parameters: int, dim: int, seed: int, device: torch.device, hold: bool | None = None) -> None:
        self.n_parameters, self.dim, self.seed, self.device = n_parameters, dim, seed, device
        self.hold = n_parameters * dim <= HELD_PROJECTION_MAX_ELEMENTS if hold is None else hold
        self._held = torch.cat(list(self._chunks())).to(device) if self.hold else None

    def _chunks(self):  # noqa: ANN202  (a generator of CPU blocks)
        for chunk, start in enumerate(range(0, self.n_parameters, PROJECTION_CHUNK_ROWS)):
            yield projection_chunk(self.seed, chunk, min(PROJECTION_CHUNK_ROWS, self.n_parameters - start), self.dim)

    def _blocks(self):  # noqa: ANN202  (row blocks of R, held slices or freshly generated)
        if self._held is not None:
            yield from self._held.split(PROJECTION_CHUNK_ROWS)
        else:
            yield from self._chunks()

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        if vector.numel() != self.n_parameters:
            raise ValueError(f"projection built for {self.n_parameters} parameters, got a vector of {vector.numel()}")
        # float64 products one row block at a time: never a float64 copy of all of R.
        out = torch.zeros(self.dim, dtype=torch.float64, device=vector.device)
        for chunk, block in enumerate(self._blocks()):
            start = chunk * PROJECTION_CHUNK_ROWS
            out += block.to(vector.device).double().T @ vector[start : start + block.shape[0]].double()
        return out


class UpdateWindow:
    """The last ``size`` update vectors (oldest first) and their Gram matrix, kept up to date in O(W * P).

    ``previous_gram`` is the full W x W Gram before the latest append (None until two full windows exist).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.deltas: list[torch.Tensor] = []
        self.gram = torch.zeros(0, 0, dtype=torch.float64)
        self.previous_gram: torch.Tensor | None = None

    @property
    def full(self) -> bool:
        return len(self.deltas) == self.size

    def append(self, delta: torch.Tensor) -> None:
        self.previous_gram = self.gram.clone() if self.full else None
        keep = self.deltas[1:] if self.full else self.deltas
        kept_gram = self.gram[1:, 1:] if self.full else self.gram
        inner = dot_rows(keep + [delta], delta).cpu()
        m = len(keep)
        gram = torch.zeros(m + 1, m + 1, dtype=torch.float64)
        gram[:m, :m] = kept_gram
        gram[m, :] = inner
        gram[:, m] = inner
        self.deltas, self.gram = keep + [delta], gram

    def state_dict(self) -> dict[str, Any]:
        return {
            "deltas": [d.detach().cpu().clone() for d in self.deltas],
            "gram": self.gram.clone(),
            "previous_gram": None if self.previous_gram is None else self.previous_gram.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        if len(state["deltas"]) > self.size:
            raise ValueError(f"saved window holds {len(state['deltas'])} deltas, this one keeps {self.size}")
        self.deltas = [d.clone().to(device) for d in state["deltas"]]
        self.gram = state["gram"].clone().double()
        self.previous_gram = None if state["previous_gram"] is None else state["previous_gram"].clone().double()


def singular_values_from_gram(gram: np.ndarray) -> np.ndarray:
    """sigma_j = sqrt(eig(G)) descending; tiny negative eigenvalues (rounding) clipped to 0."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(gram, dtype=np.float64))[::-1]
    return np.sqrt(np.clip(eigenvalues, 0.0, None))


def spectral_statistics(gram: np.ndarray) -> dict[str, float]:
    """Gap position k* (1-based), gap ratio, sigma1/sigma2, sigma2/sigma3, g23, the gap at k* in eigenvalue
    units and sigma1, from the W x W Gram of the update window. All NaN when nothing moved (sigma1 = 0)."""
    sigma = singular_values_from_gram(gram)
    names = ("k_star", "gap_ratio", "sigma1_sigma2", "sigma2_sigma3", "g23", "gap", "sigma1")
    if sigma.size < 3 or not np.isfinite(sigma).all() or sigma[0] == 0:
        return {name: float("nan") for name in names} | ({"sigma1": float(sigma[0])} if sigma.size else {})
    floored = np.maximum(sigma, sigma[0] * SIGMA_RELATIVE_FLOOR)
    ratios = floored[:-1] / floored[1:]  # j = 1..W-1
    k = int(np.argmax(ratios))  # 0-based; ties go to the first (smallest) position
    eigenvalues = sigma**2
    return {
        "k_star": float(k + 1),
        "gap_ratio": float(ratios[k]),
        "sigma1_sigma2": float(ratios[0]),
        "sigma2_sigma3": float(ratios[1]),
        "g23": float(eigenvalues[1] - eigenvalues[2]),
        "gap": float(eigenvalues[k] - eigenvalues[k + 1]),
        "sigma1": float(sigma[0]),
    }


def adiabatic_parameter(gram: np.ndarray, previous_gram: np.ndarray, lr: float, gap: float) -> float:
    """A = ||G(t) - G(t-1)||_F / (lr * gap^2); NaN when the denominator is 0 (lr = 0 in warmup, no gap).

    The study states A in two forms: ||dK/dt|| / (eta g^2) with K the neural tangent kernel (its v1 text)
    and ||Delta G||_F / (eta g^2) with G the Gram matrix of the update window (its abstract). This is the
    second. It is not scale-free: G = X X^T is quadratic in the update size |delta|, so ||Delta G|| is
    quadratic and g^2 quartic, and A grows like 1 / (eta |delta|^2); with eta = 1e-3 and small updates it
    is many orders of magnitude above 1 (issue 4 found about 1e7 on the addition spec). The default bands
    (0.5, 2) then put nearly every measurement of a real run in band 2: set
    ``adiabatic_transition_at`` / ``adiabatic_unstable_at`` from the run's own A (the README lists the
    range the grokking spec gives) rather than read the default bands as the study's regimes."""
    denominator = lr * gap**2
    if not math.isfinite(denominator) or denominator == 0:
        return float("nan")
    return float(np.linalg.norm(np.asarray(gram) - np.asarray(previous_gram), "fro") / denominator)


def adiabatic_band(value: float, transition_at: float, unstable_at: float) -> float:
    """0 plateau-like (A < transition_at), 1 transition, 2 unstable (A > unstable_at); NaN stays NaN."""
    if math.isnan(value):
        return float("nan")
    return 0.0 if value < transition_at else 2.0 if value > unstable_at else 1.0


def is_attention_weight(name: str, parameter: torch.Tensor) -> bool:
    """A weight matrix (not a bias or norm scale) inside an attention block: ``layers.i.attn.*``."""
    return "attn" in readable_name(name).split(".") and parameter.ndim >= 2


class SpectralEdge(Measure, declared="spectral_edge"):
    """Deltas are between consecutive *calls* (so it runs on every schedule step: ``default_every = None``).
    Nothing is logged (``{}``) until W deltas exist, i.e. for the first W calls; ``spectral/adiabatic``
    and ``spectral/adiabatic_band`` appear one call later, when G(t-1) is a full window too. A second
    call at the same step returns the same values without moving the window. A step earlier than the
    last one (a resume without ``load_state_dict``) starts the window afresh.
    """

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        self._reset()

    def _reset(self) -> None:
        self._snapshot: torch.Tensor | None = None
        self._window = UpdateWindow(self.options.window)
        self._projection: GaussianProjection | None = None
        self._last_step: int | None = None
        self._last_values: dict[str, float] = {}

    def _selected(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Frozen parameters are kept (their delta is 0, so G is unchanged): the flattened length must not
        change when a training phase toggles ``requires_grad``."""
        named = {n: p for n, p in model.named_parameters() if n not in self.setup.unused_parameters}
        option = self.options.parameters
        if option == "all":
            return named
        if option == "attention":
            selected = {n: p for n, p in named.items() if is_attention_weight(n, p)}
            if not selected:
                raise ValueError("parameters: 'attention' found no attention weight matrices in the model")
            return selected
        selected = {n: p for n, p in named.items() if any(matches_prefix(n, prefix) for prefix in option)}
        unused = [prefix for prefix in option if not any(matches_prefix(n, prefix) for n in named)]
        if unused:
            raise ValueError(f"parameters: prefixes {unused} match no parameter; names look like {readable_name(next(iter(named)))}")
        return selected

    def _projection_dim(self, n_parameters: int) -> int | None:
        dim = self.options.projection_dim
        if dim == "auto":
            return 10 * self.options.window if n_parameters > AUTO_PROJECTION_MIN_PARAMETERS else None
        return dim

    def compute(self, context: MeasureContext) -> dict[str, float]:
        if self._last_step is not None:
            if context.step == self._last_step:
                return dict(self._last_values)
            if context.step < self._last_step:
                self._reset()
        theta = flatten_parameters(self._selected(context.model))
        self._last_step = context.step
        if self._snapshot is None:
            self._snapshot, self._last_values = theta, {}
            return {}
        if theta.numel() != self._snapshot.numel():
            raise ValueError(f"spectral_edge: {theta.numel()} selected parameters now, {self._snapshot.numel()} at the last call")
        snapshot = self._snapshot.to(theta.device)  # after a load_state_dict the state sits on CPU
        delta = theta - snapshot
        self._snapshot = theta
        dim = self._projection_dim(theta.numel())
        if dim is not None:
            if self._projection is None:
                self._projection = GaussianProjection(theta.numel(), dim, self.setup.seed, theta.device)
            delta = self._projection(delta)
        self._window.deltas = [d.to(delta.device) for d in self._window.deltas]
        self._window.append(delta)
        self._last_values = self._values(context.lr) if self._window.full else {}
        return dict(self._last_values)

    def _values(self, lr: float) -> dict[str, float]:
        gram = self._window.gram.numpy()
        statistics = spectral_statistics(gram)
        values = {f"spectral/{key}": value for key, value in statistics.items()}
        if self._window.previous_gram is not None:
            adiabatic = adiabatic_parameter(gram, self._window.previous_gram.numpy(), lr, statistics["gap"])
            values["spectral/adiabatic"] = adiabatic
            values["spectral/adiabatic_band"] = adiabatic_band(
                adiabatic, self.options.adiabatic_transition_at, self.options.adiabatic_unstable_at
            )
        return values

    def state_dict(self) -> dict[str, Any]:
        """Everything the next call depends on, as CPU tensors, lists and numbers (for checkpoints).
        The projection matrix is not saved: it is regenerated from the run seed."""
        return {
            "window_size": self.options.window,
            "snapshot": None if self._snapshot is None else self._snapshot.detach().cpu().clone(),
            "window": self._window.state_dict(),
            "last_step": self._last_step,
            "last_values": dict(self._last_values),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["window_size"] != self.options.window:
            raise ValueError(f"saved spectral_edge state has window {state['window_size']}, options say {self.options.window}")
        self._reset()
        self._snapshot = None if state["snapshot"] is None else state["snapshot"].clone()
        self._window.load_state_dict(state["window"], torch.device("cpu"))  # moved to the model's device on use
        self._last_step = state["last_step"]
        self._last_values = dict(state["last_values"])
