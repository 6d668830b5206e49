import pytest
import torch

import lora
from lora.adapters import WithAdapter
from tests import tiny

D, L, R = 32, 2, 8
EXCLUDE = ["classifier", "score"]


def _apply(family, **kw):
    torch.manual_seed(0)
    model = tiny.FAMILIES[family]()
    cfg = lora.MethodConfig(**kw)
    lora.apply_method(model, cfg)
    return model, cfg


def _loss(model, family):
    ids, mask = tiny.batch()
    labels = torch.tensor([0, 2]) if family == "bert" else ids.masked_fill(mask == 0, -100)
    return model(input_ids=ids, attention_mask=mask, labels=labels)


# method config -> exact count from the paper's conventions (tiny models: d=32, L=2)
ADAPTER = 2 * D * R + R + D  # down + up weights and biases
EXPECTED = {
    "adapter_h": (dict(name="adapter_h", adapter_r=R), 2 * L * ADAPTER),
    "adapter_d": (dict(name="adapter_d", adapter_r=R, drop_layers=1), 2 * (L - 1) * ADAPTER),
    "adapter_p": (dict(name="adapter_p", adapter_r=R), L * ADAPTER),
    "adapter_l": (dict(name="adapter_l", adapter_r=R), L * (ADAPTER + 2 * D)),
    "prefix_embed": (dict(name="prefix_embed", l_p=5, l_i=3), D * (5 + 3)),
    "prefix_layer": (dict(name="prefix_layer", l_p=5, l_i=3), L * D * (5 + 3)),
    "lora_pe": (dict(name="lora_pe", r=4, targets=["q", "o"], l_p=5, l_i=3), 2 * L * 2 * D * 4 + D * 8),
    "lora_pl": (dict(name="lora_pl", r=4, targets=["q", "o"], l_p=5, l_i=3), 2 * L * 2 * D * 4 + L * D * 8),
}


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("method", list(EXPECTED))
def test_counts_and_only_trainable_parameters_move(family, method):
    kw, expected = EXPECTED[method]
    model, cfg = _apply(family, **kw)
    assert lora.count_parameters(model, exclude=EXCLUDE).method == expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _loss(model, family).loss.backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("kind", ["adapter_h", "adapter_l", "adapter_p", "adapter_d"])
def test_adapters_start_as_identity(family, kind):
    torch.manual_seed(0)
    base = tiny.FAMILIES[family]().eval()
    ids, mask = tiny.batch()
    want = base(input_ids=ids, attention_mask=mask).logits
    lora.apply_method(base, lora.MethodConfig(name=kind, adapter_r=4, drop_layers=1))
    assert torch.allclose(base(input_ids=ids, attention_mask=mask).logits, want, atol=1e-6)


def test_adapter_d_drops_the_lowest_layers():
    model, _ = _apply("bert", name="adapter_d", adapter_r=4, drop_layers=1)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, WithAdapter)]
    assert wrapped and all(".layer.1." in n for n in wrapped)


def test_partial_fine_tuning_trainable_sets():
    model, _ = _apply("bert", name="ft_top", top_k=1)
    for n, p in model.named_parameters():
        assert p.requires_grad == (".layer.1." in n or n.startswith("classifier")), n
    model, _ = _apply("gpt2", name="bitfit")
    assert all(p.requires_grad == n.endswith(".bias") for n, p in model.named_parameters())
    model, _ = _apply("bert", name="full")
    assert all(p.requires_grad for p in model.parameters())


def test_partial_fine_tuning_errors():
    with pytest.raises(ValueError, match="top_k=3 but the model has 2 transformer blocks"):
        _apply("bert", name="ft_top", top_k=3)
    with pytest.raises(ValueError, match="no bias parameters"):
        _apply("llama", name="bitfit")
    with pytest.raises(ValueError, match="drop_layers=2 must be in 0..1"):
        _apply("bert", name="adapter_d", drop_layers=2)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_prefix_methods_on_right_padded_batches(family, method):
    model, _ = _apply(family, name=method, l_p=3, l_i=2)
    out = _loss(model, family)
    if family == "bert":
        assert out.logits.shape == (2, 3)
    else:  # causal LM: logits over the extended sequence, T + l_p + l_i
        assert out.logits.shape == (2, 7 + 5, tiny.VOCAB)
    pos = model.prefix_positions.positions
    keep_first = 1 if family == "bert" else 0
    assert pos[0].tolist() == [keep_first, keep_first + 1, keep_first + 2, 7 + 3, 7 + 4]
    assert pos[1].tolist() == [keep_first, keep_first + 1, keep_first + 2, 5 + 3, 5 + 4]  # infix after the 5 real tokens
    out.loss.backward()


def test_prefix_layer_replaces_block_outputs_at_inserted_positions():
    model, _ = _apply("llama", name="prefix_layer", l_p=2, l_i=1)
    ids, mask = tiny.batch()
    hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    pos = model.prefix_positions.positions
    acts = model.prefix_layer.activations  # (L, l_p + l_i, d)
    # hidden_states[i + 1] is block i's output (the last one after the final norm, so check block 0)
    assert torch.allclose(hidden[1][0, pos[0]], acts[0])
