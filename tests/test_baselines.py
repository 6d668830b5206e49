"""Partial fine-tuning, adapters and prefix methods on tiny random models (hidden 32, 2 layers)."""
import pytest
import torch
import torch.nn.functional as F

import lora
from lora.adapters import WithAdapter
from lora.targets import blocks_of
from tests import tiny

D, L, R = 32, 2, 8
EXCLUDE = ["classifier", "score"]
FAMILIES = ["bert", "gpt2", "llama"]


def _apply(family, **kw):
    torch.manual_seed(0)
    model = tiny.FAMILIES[family]()
    lora.apply_method(model, lora.MethodConfig(**kw))
    return model


def _labels(family, ids, mask):
    return torch.tensor([0, 2]) if family == "bert" else ids.masked_fill(mask == 0, -100)


def _loss(model, family):
    ids, mask = tiny.batch()
    return model(input_ids=ids, attention_mask=mask, labels=_labels(family, ids, mask))


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


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", list(EXPECTED))
def test_counts_and_only_trainable_parameters_move(family, method):
    kw, expected = EXPECTED[method]
    model = _apply(family, **kw)
    assert lora.count_parameters(model, exclude=EXCLUDE).method == expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _loss(model, family).loss.backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["adapter_h", "adapter_l", "adapter_p", "adapter_d"])
def test_adapters_start_as_identity_and_then_change_the_output(family, kind):
    torch.manual_seed(0)
    model = tiny.FAMILIES[family]().eval()
    ids, mask = tiny.batch()
    want = model(input_ids=ids, attention_mask=mask).logits
    lora.apply_method(model, lora.MethodConfig(name=kind, adapter_r=4, drop_layers=1))
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, want, atol=1e-6)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WithAdapter):
                m.adapter.up.weight.normal_()
    assert not torch.allclose(model(input_ids=ids, attention_mask=mask).logits, want, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_placement(family):
    fam = lora.targets.family_of(tiny.FAMILIES[family]())

    def wrapped(**kw):
        return {n for n, m in _apply(family, adapter_r=4, **kw).named_modules() if isinstance(m, WithAdapter)}

    root = lora.targets.blocks_path(tiny.FAMILIES[family]())
    every = {f"{root}.{i}.{s}" for i in range(L) for s in (fam.attn_out, fam.mlp_out)}
    assert wrapped(name="adapter_h") == every
    assert wrapped(name="adapter_d", drop_layers=1) == {p for p in every if p.startswith(f"{root}.1.")}
    assert wrapped(name="adapter_p") == wrapped(name="adapter_l") == {f"{root}.{i}.{fam.mlp_out}" for i in range(L)}


def test_partial_fine_tuning_trainable_sets():
    model = _apply("bert", name="ft_top", top_k=1)
    for n, p in model.named_parameters():
        assert p.requires_grad == (".layer.1." in n or n.startswith("classifier.")), n
    block = sum(p.numel() for p in blocks_of(model)[1].parameters())
    assert lora.count_parameters(model, exclude=EXCLUDE).method == block

    model = _apply("gpt2", name="ft_top", top_k=2)
    for n, p in model.named_parameters():
        assert p.requires_grad == n.startswith("transformer.h."), n

    model = _apply("bert", name="bitfit")
    for n, p in model.named_parameters():
        assert p.requires_grad == (n.endswith(".bias") or n.startswith("classifier.")), n
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias") and "classifier" not in n)
    assert lora.count_parameters(model, exclude=EXCLUDE).method == biases

    model = _apply("gpt2", name="bitfit")
    assert all(p.requires_grad == n.endswith(".bias") for n, p in model.named_parameters())

    model = _apply("bert", name="full")
    assert all(p.requires_grad for p in model.parameters())


def test_task_head_trains_only_where_there_is_one():
    model = _apply("bert", name="lora")
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert not model.bert.pooler.dense.weight.requires_grad
    model = _apply("gpt2", name="lora")  # LM head is the tied embedding: nothing named classifier/score
    assert not model.lm_head.weight.requires_grad


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="top_k=3 but the model has 2 transformer blocks"):
        _apply("bert", name="ft_top", top_k=3)
    with pytest.raises(ValueError, match="no bias parameters"):
        _apply("llama", name="bitfit")
    with pytest.raises(ValueError, match="drop_layers=2 must be in 0..1"):
        _apply("bert", name="adapter_d", drop_layers=2)
    model = _apply("bert", name="adapter_h", adapter_r=4)
    with pytest.raises(ValueError, match="already has an adapter"):
        lora.adapters.inject_adapters(model, "p", r=4)
    with pytest.raises(ValueError, match="already carries prefix positions"):
        lora.prefix.inject_prefix_embed(_apply("gpt2", name="prefix_embed", l_p=2, l_i=1), 2, 1)


def test_prefix_input_errors():
    model = _apply("gpt2", name="prefix_embed", l_p=2, l_i=1)
    ids, mask = tiny.batch()
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=ids, attention_mask=mask.flip(1))
    with pytest.raises(ValueError, match="by keyword"):
        model(ids, None, mask)
    with pytest.raises(ValueError, match="needs `input_ids`"):
        model(inputs_embeds=torch.zeros(2, 7, D), attention_mask=mask)
    with pytest.raises(ValueError, match="exceeds the model's 1024 positions"):
        model(input_ids=torch.ones(1, 1023, dtype=torch.long))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_prefix_methods_on_right_padded_batches(family, method):
    model = _apply(family, name=method, l_p=3, l_i=2)
    out = _loss(model, family)
    # classification: (batch, labels); causal LM: logits at the caller's tokens, (batch, T, vocab)
    assert out.logits.shape == ((2, 3) if family == "bert" else (2, 7, tiny.VOCAB))
    pos = model.prefix_positions.positions
    k = 1 if family == "bert" else 0  # encoders keep [CLS] first
    assert pos[0].tolist() == [k, k + 1, k + 2, 7 + 3, 7 + 4]
    assert pos[1].tolist() == [k, k + 1, k + 2, 5 + 3, 5 + 4]  # infix right after the 5 real tokens
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_padding_does_not_change_a_rows_output(family, method):
    """Row 1 of the padded batch (5 real tokens) gives what it gives alone: infix and padding are placed right."""
    model = _apply(family, name=method, l_p=3, l_i=2).eval()
    ids, mask = tiny.batch()
    batched = model(input_ids=ids, attention_mask=mask).logits[1]
    alone = model(input_ids=ids[1:, :5], attention_mask=mask[1:, :5]).logits[0]
    assert torch.allclose(batched if family == "bert" else batched[:5], alone, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_prefix_embed_equals_hand_inserted_embeddings(family):
    torch.manual_seed(0)
    base = tiny.FAMILIES[family]().eval()
    model = _apply(family, name="prefix_embed", l_p=3, l_i=2).eval()
    ids = tiny.batch()[0][:1]  # one unpadded row of 7 tokens
    emb = model.prefix_positions.embeddings.detach()  # (l_p + l_i, d)
    tok = base.get_input_embeddings()(ids)[0]
    k = 1 if family == "bert" else 0
    by_hand = torch.cat([tok[:k], emb[:3], tok[k:], emb[3:]])[None]  # (1, 12, d)
    want = base(inputs_embeds=by_hand).logits
    got = model(input_ids=ids).logits
    if family == "gpt2":
        want = want[:, 3:3 + 7]  # the real tokens' positions
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_decoder_loss_is_the_loss_of_the_returned_logits(family, method):
    model = _apply(family, name=method, l_p=3, l_i=2)
    ids, mask = tiny.batch()
    labels = _labels(family, ids, mask)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    want = F.cross_entropy(out.logits[:, :-1].reshape(-1, tiny.VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, want, atol=1e-5)


def test_prefix_layer_replaces_every_blocks_input_and_every_layer_learns():
    model = _apply("llama", name="prefix_layer", l_p=2, l_i=1)
    seen = {}
    for i, block in enumerate(blocks_of(model)):  # registered after the method's hooks, so they see its result
        block.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0].detach()))
    ids, mask = tiny.batch()
    out = model(input_ids=ids, attention_mask=mask, labels=_labels("llama", ids, mask))
    pos = model.prefix_positions.positions
    acts = model.prefix_layer.activations  # (L, l_p + l_i, d)
    for i in range(L):
        for row in range(2):
            assert torch.equal(seen[i][row, pos[row]], acts[i].detach())
    out.loss.backward()
    assert (acts.grad.abs().sum(dim=(1, 2)) > 0).all()  # no layer's activations are dead parameters
