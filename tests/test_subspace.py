"""Section G/H linear algebra on matrices whose answers are known by hand."""
import math

import numpy as np
import pytest
import torch

from analysis import subspace
from analysis.subspace import LoRAPair


def basis(d, *idx, scale=None):
    """d × len(idx) matrix of unit vectors e_idx, column k scaled by scale[k] (fixes the singular-value order)."""
    M = np.zeros((d, len(idx)))
    for k, i in enumerate(idx):
        M[i, k] = 1.0 if scale is None else scale[k]
    return M


def test_phi_identical_span_is_one():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((10, 3))
    B = A @ rng.standard_normal((3, 3))  # same column span, other basis
    assert subspace.phi(A, B, 3, 3) == pytest.approx(1.0)


def test_phi_orthogonal_is_zero():
    assert subspace.phi(basis(6, 0, 1), basis(6, 2, 3), 2, 2) == pytest.approx(0.0)


def test_phi_partial_overlap():
    A = basis(6, 0, 1, scale=[2, 1])  # top direction e0, then e1
    B = basis(6, 0, 2, scale=[2, 1])  # top direction e0, then e2
    assert subspace.phi(A, B, 1, 1) == pytest.approx(1.0)
    assert subspace.phi(A, B, 2, 2) == pytest.approx(0.5)  # share one of two dimensions
    assert subspace.phi(A, B, 2, 1) == pytest.approx(1.0)  # e0 lies in span{e0, e1}
    C = np.zeros((6, 1))
    C[0, 0] = C[2, 0] = 1 / math.sqrt(2)  # 45° between e0 and e2
    assert subspace.phi(A, C, 1, 1) == pytest.approx(0.5)
    assert subspace.phi(A, C, 2, 1) == pytest.approx(0.5)


def test_phi_grid_matches_phi():
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((12, 4)), rng.standard_normal((12, 6))
    grid = subspace.phi_grid(A, B)
    assert grid.shape == (4, 6)
    for i in range(1, 5):
        for j in range(1, 7):
            assert grid[i - 1, j - 1] == pytest.approx(subspace.phi(A, B, i, j))
    assert ((grid >= -1e-12) & (grid <= 1 + 1e-12)).all()


def test_lora_directions_are_the_input_space_of_lora_A():
    """A_{r=8}'s rows inside A_{r=64}'s row space: φ(A_8, A_64, i, 64) = 1 for every i (Figure 3's top row)."""
    rng = np.random.default_rng(2)
    A64 = rng.standard_normal((64, 100))  # lora_A: r × in
    A8 = rng.standard_normal((8, 64)) @ A64
    grid = subspace.phi_grid(subspace.lora_directions(A8), subspace.lora_directions(A64))
    assert grid.shape == (8, 64)
    np.testing.assert_allclose(grid[:, -1], 1.0, atol=1e-9)


W = np.diag([10.0, 5.0, 1.0, 0.5])


def test_amplification_factor_known_answer():
    dW = 3.0 * np.outer(np.eye(4)[3], np.eye(4)[3])  # rank 1 along W's weakest direction (σ = 0.5)
    assert subspace.amplification_factor(W, dW) == pytest.approx(3.0 / 0.5)
    assert subspace.amplification_factor(W, dW, r=1) == pytest.approx(6.0)


def test_delta_vs_w_projection_norms():
    e = np.eye(4)
    dW = 2.0 * np.outer(e[2], e[2]) + 1.0 * np.outer(e[3], e[3])  # rank 2: W's two weakest directions
    row = subspace.delta_vs_w(W, dW, r=2)
    assert row.delta == pytest.approx(math.sqrt(1.0 ** 2 + 0.5 ** 2))  # ‖U^T W V‖ with U = V = [e2, e3]
    assert row.w == pytest.approx(math.sqrt(10.0 ** 2 + 5.0 ** 2))  # W's own top-2
    assert row.norm_w == pytest.approx(math.sqrt(100 + 25 + 1 + 0.25))
    assert row.norm_delta == pytest.approx(math.sqrt(5.0))
    assert row.amplification == pytest.approx(math.sqrt(5.0) / math.sqrt(1.25))
    assert 0 < row.random < row.w


def test_projection_norm_rectangular():
    W = np.arange(12.0).reshape(3, 4)
    U = np.eye(3)[:, [1]]
    V = np.eye(4)[:, [2]]
    assert subspace.projection_norm(W, U, V) == pytest.approx(abs(W[1, 2]))


@pytest.mark.parametrize("key, expected", [
    ("bert.encoder.layer.3.attention.self.query.lora_A", ("bert.encoder.layer.3.attention.self.query", 3, "q", "A")),
    ("transformer.h.11.attn.c_attn.lora_B_v", ("transformer.h.11.attn.c_attn", 11, "v", "B")),
    ("model.layers.0.self_attn.o_proj.lora_A", ("model.layers.0.self_attn.o_proj", 0, "o", "A")),
    ("base_model.model.model.layers.2.self_attn.v_proj.lora_B.default.weight",
     ("base_model.model.model.layers.2.self_attn.v_proj", 2, "v", "B")),
    ("bert.encoder.layer.1.attention.output.dense.lora_A", ("bert.encoder.layer.1.attention.output.dense", 1, "o",
                                                           "A")),
    ("classifier.weight", None),
])
def test_parse_key(key, expected):
    assert subspace.parse_key(key) == expected


def test_load_lora_pairs_and_delta():
    A, B = torch.randn(2, 6), torch.randn(4, 2)
    pairs = subspace.load_lora({"x.layer.0.attention.self.query.lora_A": A,
                                "x.layer.0.attention.self.query.lora_B": B, "classifier.weight": torch.ones(3)})
    assert list(pairs) == [(0, "q")]
    np.testing.assert_allclose(pairs[(0, "q")].delta(0.5), 0.5 * (B @ A).numpy(), rtol=1e-6, atol=1e-6)


def test_base_weight_conv1d_fused_slice_and_callable():
    d, inp = 3, 5
    conv = np.arange(inp * 3 * d, dtype=float).reshape(inp, 3 * d)  # GPT-2 c_attn: in × (q|k|v)
    pair = LoRAPair("transformer.h.0.attn.c_attn", 0, "v", np.zeros((2, inp)), np.zeros((d, 2)))
    W = subspace.base_weight({"transformer.h.0.attn.c_attn.weight": conv}, pair)
    np.testing.assert_array_equal(W, conv.T[2 * d:3 * d])
    W2 = subspace.base_weight(lambda module, role: np.ones((d, inp)), pair)
    assert W2.shape == (d, inp)
    with pytest.raises(KeyError):
        subspace.base_weight({}, pair)
