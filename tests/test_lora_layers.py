import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import lora
from lora.layers import LoRALinear, dropout_keep_mask, lora_modules, merge_lora, unmerge_lora
from tests import tiny


def _close(a, b, rel=1e-5):
    return torch.allclose(a, b, rtol=rel, atol=rel * b.abs().max().item())


@pytest.mark.parametrize("make_base", [lambda: nn.Linear(24, 16), lambda: Conv1D(16, 24)], ids=["linear", "conv1d"])
def test_merge_equals_unmerged_with_nonzero_b(make_base):
    torch.manual_seed(0)
    base = make_base()
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, r=4, alpha=8, dropout=0.0).eval()
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 5, 24)
    unmerged = layer(x)
    assert not torch.allclose(unmerged, base(x))  # the update is really there
    layer.merge()
    assert _close(layer(x), unmerged)
    layer.merge()  # idempotent
    assert _close(layer(x), unmerged)
    layer.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-6)


def test_fused_qkv_adapts_only_named_slices():
    torch.manual_seed(0)
    base = Conv1D(3 * 16, 16)  # GPT-2 c_attn: 16 → [q | k | v]
    layer = LoRALinear(base, r=2, alpha=4, slices={"q": (0, 16), "v": (32, 48)}).eval()
    for role in ("q", "v"):
        nn.init.normal_(layer.pair(role)[1])
    delta = layer.delta_weight()  # Conv1D layout: (in, out)
    assert delta.shape == (16, 48)
    assert torch.count_nonzero(delta[:, 16:32]) == 0  # k untouched
    assert torch.count_nonzero(delta[:, :16]) > 0 and torch.count_nonzero(delta[:, 32:]) > 0
    x = torch.randn(2, 3, 16)
    unmerged = layer(x)
    assert torch.equal(unmerged[..., 16:32], base(x)[..., 16:32])
    layer.merge()
    assert _close(layer(x), unmerged)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_model_merge_equivalence(family):
    torch.manual_seed(0)
    model = tiny.FAMILIES[family]().eval()
    lora.apply_method(model, lora.MethodConfig(name="lora", r=4, alpha=8, targets=["q", "v", "o", "mlp"]))
    tiny.randomise_lora_b(model)
    ids, mask = tiny.batch()
    before = model(input_ids=ids, attention_mask=mask).logits
    merge_lora(model)
    assert _close(model(input_ids=ids, attention_mask=mask).logits, before)
    unmerge_lora(model)
    assert _close(model(input_ids=ids, attention_mask=mask).logits, before)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_only_lora_and_head_parameters_move(family):
    torch.manual_seed(0)
    model = tiny.FAMILIES[family]()
    cfg = lora.MethodConfig(name="lora", r=4, targets=["q", "v"])
    lora.apply_method(model, cfg)
    tiny.randomise_lora_b(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids, mask = tiny.batch()
    labels = torch.tensor([0, 2]) if family == "bert" else ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        trainable = "lora_" in name or name.startswith(("classifier", "bert.pooler"))
        assert p.requires_grad == trainable, name
        changed = not torch.equal(p, before[name])
        assert changed == trainable, name


@pytest.mark.parametrize("family,d", [("bert", 32), ("llama", 32)])
def test_lora_parameter_count(family, d):
    model = tiny.FAMILIES[family]()
    lora.apply_method(model, lora.MethodConfig(name="lora", r=4, targets=["q", "o"]))
    # q and o are d × d in both families: 2 matrices (A, B) · L · d · r per target role
    assert lora.count_parameters(model, exclude=lora.MethodConfig().train_also).method == 2 * 2 * 2 * d * 4


def test_gpt2_qv_uses_two_slices_of_c_attn():
    model = tiny.gpt2()
    lora.apply_method(model, lora.MethodConfig(name="lora", r=4, targets=["q", "v"]))
    modules = lora_modules(model)
    assert sorted(modules) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert set(modules["transformer.h.0.attn.c_attn"].slices) == {"q", "v"}
    assert lora.count_parameters(model).method == 2 * 2 * 2 * 32 * 4


@pytest.mark.parametrize("family,role", [("bert", "mlp_gate"), ("llama", "query"), ("gpt2", "x")])
def test_unknown_role_lists_the_roles_the_model_has(family, role):
    with pytest.raises(ValueError, match=rf"{role}.*it has: q, k, v, o"):
        lora.apply_method(tiny.FAMILIES[family](), lora.MethodConfig(name="lora", targets=[role]))


def test_bad_method_configs_are_rejected_with_the_way_out():
    with pytest.raises(ValueError, match="known methods: full, ft_top"):
        lora.MethodConfig(name="lora2").validate()
    with pytest.raises(ValueError, match="r must be >= 1"):
        lora.MethodConfig(name="lora", r=0).validate()
    with pytest.raises(ValueError, match="alpha must be > 0"):
        lora.MethodConfig(name="lora", alpha=0).validate()
    with pytest.raises(ValueError, match="l_p and method.l_i must be >= 0"):
        lora.MethodConfig(name="prefix_embed", l_p=-1).validate()


def test_applying_lora_twice_is_an_error():
    model = tiny.bert()
    lora.apply_method(model, lora.MethodConfig(name="lora"))
    with pytest.raises(ValueError, match="already carries LoRA"):
        lora.apply_method(model, lora.MethodConfig(name="lora"))


@pytest.mark.parametrize("slices,match", [({"q": (0, 20)}, "outside"), ({"q": (0, 10), "k": (8, 16)}, "overlap"),
                                          ({}, "empty")])
def test_bad_slices_are_rejected(slices, match):
    with pytest.raises(ValueError, match=match):
        LoRALinear(nn.Linear(8, 16), r=2, alpha=2, slices=slices)


def test_dropout_is_on_the_lora_path_only():
    torch.manual_seed(0)
    base = nn.Linear(8, 8)
    layer = LoRALinear(base, r=2, alpha=2, dropout=0.5).train()
    x = torch.randn(4, 8)
    assert torch.equal(layer(x), base(x))  # B = 0: whatever dropout does to the LoRA input, the base output is intact
    nn.init.normal_(layer.lora_B)
    assert not torch.equal(layer(x), layer(x))  # a fresh dropout mask per call on the LoRA path
    layer.eval()
    assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_drops_each_entry_with_probability_p_independently(p):
    torch.manual_seed(0)
    drop = ~dropout_keep_mask(torch.empty(1001, 999), p)  # odd count: the last int64 gives one entry
    n, sigma = drop.numel(), (p * (1 - p) / drop.numel()) ** 0.5
    assert drop.shape == (1001, 999) and drop.dtype == torch.bool
    assert abs(drop.float().mean().item() - p) < 5 * sigma
    flat = drop.flatten()[: n - n % 2].view(-1, 2)  # the two entries drawn from one int64
    both_dropped = (flat[:, 0] & flat[:, 1]).float().mean().item()
    assert abs(both_dropped - p * p) < 5 * (p * p * (1 - p * p) / len(flat)) ** 0.5
    assert not torch.equal(drop, ~dropout_keep_mask(torch.empty(1001, 999), p))


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_training_output_and_gradients_are_inverted_dropout_on_the_lora_input(dropout):
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(12, 10), r=3, alpha=6, dropout=dropout).train()
    nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 7, 12, requires_grad=True)
    torch.manual_seed(1)
    out = layer(x)
    out.square().sum().backward()
    torch.manual_seed(1)
    keep = dropout_keep_mask(x, dropout) if dropout else torch.ones_like(x, dtype=torch.bool)
    a, b = (t.detach().clone().requires_grad_() for t in (layer.lora_A, layer.lora_B))
    x2 = x.detach().clone().requires_grad_()
    expected = layer.base(x2) + (x2 * keep / (1 - dropout)) @ a.T @ b.T * layer.scaling
    expected.square().sum().backward()
    assert _close(out, expected)
    assert _close(layer.lora_A.grad, a.grad) and _close(layer.lora_B.grad, b.grad) and _close(x.grad, x2.grad)


def test_merged_layer_refuses_to_train():
    layer = LoRALinear(nn.Linear(8, 8), r=2, alpha=2).train()
    layer.merge()
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        layer(torch.randn(2, 8))
    with torch.no_grad():
        layer(torch.randn(2, 8))  # inference under no_grad is fine even in train mode
    layer.unmerge()
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.lora_B.grad is not None


def test_inject_lora_freezes_the_wrapped_base_and_sizes_c_attn_slices_from_n_embd():
    from lora.layers import inject_lora

    model = tiny.gpt2()  # every parameter trainable: inject_lora alone must still freeze W0
    paths = inject_lora(model, ["q", "v"], r=2, alpha=4, dropout=0.0)
    assert paths == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    layer = lora_modules(model)[paths[0]]
    d = model.config.n_embd
    assert layer.slices == {"q": (0, d), "v": (2 * d, 3 * d)}
    assert not layer.base.weight.requires_grad and not layer.base.bias.requires_grad
    assert layer.lora_A_q.shape == (2, d) and layer.lora_B_v.shape == (d, 2)
    assert all(p.requires_grad for n, p in layer.named_parameters() if "lora_" in n)
    assert "transformer.h.0.attn.c_attn.base.weight" in model.state_dict()


def test_injected_layers_follow_the_models_train_or_eval_mode():
    model = tiny.llama().eval()
    lora.apply_method(model, lora.MethodConfig(name="lora", r=2, dropout=0.5))
    assert all(not m.training for m in lora_modules(model).values())  # no LoRA dropout at evaluation
    tiny.randomise_lora_b(model)
    ids, mask = tiny.batch()
    first, second = (model(input_ids=ids, attention_mask=mask).logits for _ in range(2))
    assert torch.equal(first, second)
