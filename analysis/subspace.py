"""Section G/H of the paper: subspace similarity φ, ΔW versus W (Table 7), the amplification factor (H.4).

Conventions (the paper's ΔW = BA, B ∈ R^{d×r}, A ∈ R^{r×k}; our adapter keys `.lora_A` (r × in), `.lora_B`
(out × r) have exactly those shapes):

- φ(A, B, i, j) = ‖U_A^iᵀ U_B^j‖²_F / min(i, j), U_A^i the first i columns of the LEFT singular matrix of the matrix
  A given (Section G). Figures 3/4/6/7 compare "A_{r=8}" and "A_{r=64}" through their right-singular matrices
  (Section 7.2): the directions of the input space R^k that the r rows of lora_A read. Those are the left singular
  vectors of lora_Aᵀ (in × r), so `lora_directions(lora_A)` = lora_Aᵀ is what goes into φ; i ≤ r1, j ≤ r2.
- Table 7: ‖UᵀWVᵀ‖_F in the paper's notation is ‖U_rᵀ W V_r‖_F here with U_r (out × r), V_r (in × r) the top-r
  left/right singular vectors of ΔW (or of W itself, or of a random Gaussian matrix of W's shape). ΔW = (alpha/r)·BA,
  alpha and r from the run's config. Every matrix is out × in, in float64.
- The base weight W is not in the adapter: pass a mapping of tensors, a safetensors file, or a callable
  (module path, role) -> W; a run may save `base_weights.safetensors` beside its adapter, keyed `<module>.weight`
  in the model's own layout (nn.Linear out × in; GPT-2's Conv1D in × out, q, k, v fused along out), which
  `base_weight` transposes and slices to the adapted role.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from analysis.collect import targets_key
from paper.published import DeltaVsW

# ------------------------------------------------------------------------------------------ adapter key names
# `<module>.lora_A`, `<module>.lora_A_<role>` (a slice of a fused projection), PEFT's `<module>.lora_A.default.weight`
KEY = re.compile(r"^(?P<module>.+?)\.lora_(?P<kind>[AB])(?:_(?P<role>[A-Za-z0-9_]+?))?(?:\.default)?(?:\.weight)?$")
LAYER = re.compile(r"\.(?:layer|layers|h|blocks|block)\.(\d+)\.")
# the last component of a module path -> role (attention.output.dense is W_o in BERT)
ROLE_OF_MODULE = {"query": "q", "q_proj": "q", "q": "q", "key": "k", "k_proj": "k", "k": "k",
                  "value": "v", "v_proj": "v", "v": "v", "o_proj": "o", "out_proj": "o", "c_proj": "o",
                  "o": "o", "dense": "o"}
FUSED_ORDER = ("q", "k", "v")  # GPT-2's c_attn: output features are [q | k | v]


@dataclass(frozen=True)
class LoRAPair:
    module: str  # module path, e.g. bert.encoder.layer.3.attention.self.query
    layer: Optional[int]
    role: str  # q, k, v, o, or the module's own name when unknown
    A: np.ndarray  # r × in
    B: np.ndarray  # out × r (out of the adapted slice)

    def delta(self, scaling: float) -> np.ndarray:
        """ΔW = scaling · B A (out × in)."""
        return scaling * (self.B @ self.A)


def parse_key(key: str) -> Optional[tuple[str, Optional[int], str, str]]:
    """`…layer.3.attention.self.query.lora_A` -> (module, 3, "q", "A"); None for a non-LoRA key."""
    m = KEY.match(key)
    if not m:
        return None
    module = m.group("module")
    layer = LAYER.search(module + ".")
    last = module.rsplit(".", 1)[-1]
    if "attention.output.dense" not in module and last == "dense":
        role = last  # a BERT MLP dense (intermediate/output.dense) is not W_o
    else:
        role = m.group("role") or ROLE_OF_MODULE.get(last, last)
    return module, int(layer.group(1)) if layer else None, role, m.group("kind")


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        return t.detach().float().cpu().numpy().astype(np.float64)
    return np.asarray(t, dtype=np.float64)


def read_tensors(path: Union[str, Path]) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file  # torch loads bf16/fp16 too; numpy gets float64 copies

    return {k: _to_numpy(v) for k, v in load_file(str(path)).items()}


def load_lora(source: Union[str, Path, Mapping[str, Any]]) -> dict[tuple[Optional[int], str], LoRAPair]:
    """Every LoRA (A, B) pair of an adapter file (or a mapping of tensors), keyed (layer, role)."""
    tensors = read_tensors(source) if isinstance(source, (str, Path)) else {k: _to_numpy(v) for k, v in
                                                                            source.items()}
    halves: dict[tuple[str, Optional[int], str], dict[str, np.ndarray]] = {}
    for key, t in tensors.items():
        parsed = parse_key(key)
        if parsed:
            module, layer, role, kind = parsed
            halves.setdefault((module, layer, role), {})[kind] = t
    return {(layer, role): LoRAPair(module, layer, role, h["A"], h["B"])
            for (module, layer, role), h in sorted(halves.items(), key=lambda kv: (kv[0][1] or 0, kv[0][2]))
            if "A" in h and "B" in h}


# ---------------------------------------------------------------------------------------------- base weights
BaseSource = Union[str, Path, Mapping[str, Any], Callable[[str, str], Any]]


def base_weight(source: BaseSource, pair: LoRAPair) -> np.ndarray:
    """The pretrained W (out × in) of the slice `pair` adapts, from a safetensors file, a mapping or a callable."""
    if callable(source) and not isinstance(source, Mapping):
        return _to_numpy(source(pair.module, pair.role))
    tensors = read_tensors(source) if isinstance(source, (str, Path)) else source
    for key in (f"{pair.module}.weight", f"{pair.module}.base.weight", f"{pair.module}.base_layer.weight",
                pair.module):
        if key in tensors:
            w = _to_numpy(tensors[key])
            break
    else:
        raise KeyError(f"no base weight for {pair.module} (looked for {pair.module}.weight)")
    out, inp = pair.B.shape[0], pair.A.shape[1]
    if w.shape[1] != inp and w.shape[0] == inp:  # Conv1D stores in × out
        w = w.T
    if w.shape[0] != out and pair.role in FUSED_ORDER and w.shape[0] % out == 0:  # fused q,k,v: take the slice
        i = FUSED_ORDER.index(pair.role)
        w = w[i * out:(i + 1) * out]
    if w.shape != (out, inp):
        raise ValueError(f"base weight of {pair.module} has shape {w.shape}, ΔW has {(out, inp)}")
    return w


# ------------------------------------------------------------------------------------------ Section G: φ
def top_left(M: np.ndarray, k: Optional[int] = None) -> np.ndarray:
    """The first k columns of M's left singular matrix (by decreasing singular value)."""
    U, _, _ = np.linalg.svd(np.asarray(M, dtype=np.float64), full_matrices=False)
    return U[:, :k] if k is not None else U


def psi(U1: np.ndarray, U2: np.ndarray) -> float:
    """ψ(U1, U2) = ‖U1ᵀU2‖²_F / min(i, j) for column-orthonormal U1 (d × i), U2 (d × j): 1 same span, 0 orthogonal."""
    return float(np.sum((U1.T @ U2) ** 2) / min(U1.shape[1], U2.shape[1]))


def phi(A: np.ndarray, B: np.ndarray, i: int, j: int) -> float:
    """φ(A, B, i, j) of Section G: ψ of the top-i left singular vectors of A and the top-j of B."""
    return psi(top_left(A, i), top_left(B, j))


def phi_grid(A: np.ndarray, B: np.ndarray, imax: Optional[int] = None, jmax: Optional[int] = None) -> np.ndarray:
    """G[i-1, j-1] = φ(A, B, i, j) for i ≤ imax, j ≤ jmax, from one SVD each (cumulative sums of (U_AᵀU_B)²)."""
    UA, UB = top_left(A, imax), top_left(B, jmax)
    cum = np.cumsum(np.cumsum((UA.T @ UB) ** 2, axis=0), axis=1)
    i = np.arange(1, cum.shape[0] + 1)[:, None]
    j = np.arange(1, cum.shape[1] + 1)[None, :]
    return cum / np.minimum(i, j)


def lora_directions(lora_A: np.ndarray) -> np.ndarray:
    """The matrix whose left singular vectors are the paper's U_{A_r}: lora_Aᵀ (in × r); see the module doc."""
    return np.asarray(lora_A, dtype=np.float64).T


# -------------------------------------------------------------------------------- Table 7 / H.4: ΔW vs W
def top_singular(M: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(U_r, V_r): the top-r left (out × r) and right (in × r) singular vectors of M."""
    U, _, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64), full_matrices=False)
    return U[:, :r], Vt[:r].T


def projection_norm(W: np.ndarray, U: np.ndarray, V: np.ndarray) -> float:
    """‖UᵀWV‖_F: the size of W inside the r-dimensional subspaces U (outputs) and V (inputs)."""
    return float(np.linalg.norm(U.T @ W @ V))


def numerical_rank(M: np.ndarray) -> int:
    s = np.linalg.svd(M, compute_uv=False)
    return int(np.sum(s > s[0] * max(M.shape) * np.finfo(np.float64).eps)) if s.size and s[0] > 0 else 0


def amplification_factor(W: np.ndarray, dW: np.ndarray, r: Optional[int] = None) -> float:
    """H.4: ‖ΔW‖_F / ‖UᵀWVᵀ‖_F with U, V the top-r singular vectors of ΔW (r: ΔW's rank by default)."""
    U, V = top_singular(dW, r or numerical_rank(dW))
    return float(np.linalg.norm(dW) / projection_norm(W, U, V))


def delta_vs_w(W: np.ndarray, dW: np.ndarray, r: int, seed: int = 1234) -> DeltaVsW:
    """Table 7's row for one matrix: ‖UᵀWV‖_F with U, V from ΔW, from W, from a random Gaussian matrix (seeded)."""
    W, dW = np.asarray(W, dtype=np.float64), np.asarray(dW, dtype=np.float64)
    rand = np.random.default_rng(seed).standard_normal(W.shape)
    return DeltaVsW(r=r, delta=projection_norm(W, *top_singular(dW, r)), w=projection_norm(W, *top_singular(W, r)),
                    random=projection_norm(W, *top_singular(rand, r)), norm_w=float(np.linalg.norm(W)),
                    norm_delta=float(np.linalg.norm(dW)))


# --------------------------------------------------------------------------------------- from run directories


def lora_runs(frame, r: Optional[int] = None, role: Optional[str] = None, seed: Optional[int] = None,
              roles: Optional[tuple[str, ...]] = None, methods: tuple[str, ...] = ("lora",), variants: bool = False):
    """Successful runs of `methods` (plain LoRA by default: LoRA+PE/PL train a prefix too) in collect's frame with
    rank r whose targets include `role` (or are exactly `roles`) and that saved an adapter, sorted by seed; the
    paper's alpha / r without LoRA+ unless `variants` (rank_scaling's rsLoRA and LoRA+ runs)."""
    if frame.empty:
        return frame
    keep = frame["status"].eq("success") & frame["method"].isin(methods)
    if not variants:
        for column, plain in (("scaling", "standard"), ("lr_ratio_b", 1.0)):
            if column in frame:
                keep &= frame[column].map(lambda v, plain=plain: v is None or v != v or v == plain)
    if r is not None:
        keep &= frame["r"].map(lambda v: v is not None and v == v and int(v) == r)
    if role is not None:
        keep &= frame["targets"].map(lambda t: isinstance(t, str) and role in t.split(","))
    if roles is not None:
        keep &= frame["targets"].eq(targets_key(roles))
    if seed is not None:
        keep &= frame["seed"].eq(seed)
    keep &= frame["run_dir"].map(lambda d: (Path(d) / "adapter.safetensors").exists())
    return frame[keep].sort_values(["seed", "run_dir"])


def scaling_of(run) -> float:
    """alpha / r from the run's config (LoRA's scaling of BA)."""
    return float(run["alpha"]) / float(run["r"])


def pick_layer(pairs: Mapping, role: str, layer: Optional[int]) -> int:
    layers = sorted({l for (l, ro) in pairs if ro == role and l is not None})
    if not layers:
        raise KeyError(f"the adapter has no {role} matrices")
    if layer is None:
        return layers[len(layers) // 2]  # the middle layer, as the paper's 48th of 96
    if layer not in layers:
        raise KeyError(f"the adapter has no {role} matrix in layer {layer} (it has {layers})")
    return layer


def delta_vs_w_of_run(run, layer: Optional[int] = None, role: str = "q", base: Optional[BaseSource] = None,
                      seed: int = 1234) -> DeltaVsW:
    """Table 7's numbers for one run (a row of collect's frame): its adapter, its base_weights.safetensors."""
    run_dir = Path(run["run_dir"])
    pairs = load_lora(run_dir / "adapter.safetensors")
    pair = pairs[(pick_layer(pairs, role, layer), role)]
    if base is None:
        base = run_dir / "base_weights.safetensors"
        if not base.exists():
            raise FileNotFoundError(f"{run_dir.name} has no base_weights.safetensors")
    W = base_weight(base, pair)
    return delta_vs_w(W, pair.delta(scaling_of(run)), int(run["r"]), seed=seed)
