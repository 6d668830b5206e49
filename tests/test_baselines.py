"""Partial fine-tuning, adapters and prefix methods on tiny random models (hidden 32, 2 layers)."""
import pytest
import torch
import torch.nn.functional as F

import lora
from lora.adapters import BLOCK_ADAPTER, Adapter, AfterAddNorm, WithAdapter, default_drop_layers
from lora.targets import blocks_of
from tests import tiny

D, L, R = 32, 2, 8
EXCLUDE = lora.MethodConfig().train_also  # the task head: classifier, score, pooler
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
    _randomise_adapters(model)
    assert not torch.allclose(model(input_ids=ids, attention_mask=mask).logits, want, atol=1e-4)


def _randomise_adapters(model, seed=1):
    """Non-zero up-projections (they start at zero) and LayerNorm weights away from 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Adapter):
                for p in m.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_placement(family):
    fam = lora.targets.family_of(tiny.FAMILIES[family]())

    def where(**kw):
        model = _apply(family, adapter_r=4, **kw)
        wrapped = {n for n, m in model.named_modules() if isinstance(m, (WithAdapter, AfterAddNorm))}
        on_blocks = {f"{root}.{i}" for i, b in enumerate(blocks_of(model)) if hasattr(b, BLOCK_ADAPTER)}
        return wrapped, on_blocks

    root = lora.targets.blocks_path(tiny.FAMILIES[family]())
    every = {f"{root}.{i}.{s}" for i in range(L) for s in (fam.attn_out, fam.mlp_out)}
    blocks = {f"{root}.{i}" for i in range(L)}
    assert where(name="adapter_h") == (every, set())
    assert where(name="adapter_d", drop_layers=1) == ({p for p in every if p.startswith(f"{root}.1.")}, set())
    assert where(name="adapter_l") == (set(), blocks)  # Lin et al.: on the block output
    post_ln = {f"{root}.{i}.output" for i in range(L)}  # Pfeiffer et al.: after the MLP's Add & Norm
    assert where(name="adapter_p") == ((post_ln, set()) if family == "bert" else (set(), blocks))


def test_adapter_drop_default_depth_and_count():
    assert [default_drop_layers(n) for n in (1, 2, 6, 12, 24, 48)] == [0, 1, 2, 5, 10, 20]
    for family in FAMILIES:
        h = lora.count_parameters(_apply(family, name="adapter_h", adapter_r=R), exclude=EXCLUDE).method
        d = lora.count_parameters(_apply(family, name="adapter_d", adapter_r=R), exclude=EXCLUDE).method
        assert h - d == default_drop_layers(L) * 2 * ADAPTER  # exactly the dropped blocks' two adapters


def _f(adapter, h):
    """An adapter's f(h) = up(relu(down(norm(h)))) with plain functionals, from its weights."""
    if isinstance(adapter.norm, torch.nn.LayerNorm):
        h = F.layer_norm(h, (h.shape[-1],), adapter.norm.weight, adapter.norm.bias, adapter.norm.eps)
    return F.linear(F.relu(F.linear(h, adapter.down.weight, adapter.down.bias)), adapter.up.weight, adapter.up.bias)


def _reference(base, adapted, kind, family):
    """Hooks on the unadapted `base` that compute each paper's placement by hand, with `adapted`'s adapter weights."""
    fam = lora.targets.family_of(base)
    root = lora.targets.blocks_path(base)
    first = default_drop_layers(L) if kind == "d" else 0
    for i in range(first, L):
        block, twin = blocks_of(base)[i], blocks_of(adapted)[i]
        if kind in ("h", "d"):  # Houlsby: y + f(y) on both projections' outputs, before the residual add
            for sub in (fam.attn_out, fam.mlp_out):
                a = adapted.get_submodule(f"{root}.{i}.{sub}").adapter
                base.get_submodule(f"{root}.{i}.{sub}").register_forward_hook(
                    lambda m, args, y, a=a: y + _f(a, y))
        elif kind == "p" and family == "bert":  # LN(x + y + f(LN(x + y))): the authors' RobertaOutput
            a = twin.output.adapter

            def after_add_norm(m, args, out, a=a):
                hidden, x = args
                y = m.dense(hidden)  # dropout is 0 in the tiny models
                return m.LayerNorm(x + y + _f(a, out))  # out = LN(x + y)
            block.output.register_forward_hook(after_add_norm)
        else:  # Lin (with its LN) and pre-LN Pfeiffer (without): H + f(H) on the block output H
            a = getattr(twin, BLOCK_ADAPTER)

            def on_output(m, args, out, a=a):
                h = out[0] if isinstance(out, tuple) else out
                h = h + _f(a, h)
                return (h, *out[1:]) if isinstance(out, tuple) else h
            block.register_forward_hook(on_output)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["h", "d", "l", "p"])
def test_each_adapter_equals_its_papers_placement_by_hand(family, kind):
    import copy

    torch.manual_seed(0)
    base = tiny.FAMILIES[family]().eval()
    adapted = copy.deepcopy(base)
    lora.apply_method(adapted, lora.MethodConfig(name=f"adapter_{kind}", adapter_r=4))
    _randomise_adapters(adapted)
    ids, mask = tiny.batch()
    before = base(input_ids=ids, attention_mask=mask).logits
    _reference(base, adapted, kind, family)
    want = base(input_ids=ids, attention_mask=mask).logits
    got = adapted(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(want, before, atol=1e-3)  # the adapters do change the output
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def _decoder_classifier(family, num_labels=3):
    from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    if family == "gpt2":
        return GPT2ForSequenceClassification(GPT2Config(vocab_size=tiny.VOCAB, n_embd=D, n_layer=L, n_head=2,
                                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                                        pad_token_id=0, num_labels=num_labels))
    return LlamaForSequenceClassification(LlamaConfig(vocab_size=tiny.VOCAB, hidden_size=D, num_hidden_layers=L,
                                                      num_attention_heads=2, num_key_value_heads=1,
                                                      intermediate_size=64, pad_token_id=0, num_labels=num_labels))


HEAD_METHODS = [dict(name="ft_top", top_k=1), dict(name="bitfit"), dict(name="adapter_h", adapter_r=4),
                dict(name="adapter_d", adapter_r=4), dict(name="adapter_l", adapter_r=4),
                dict(name="adapter_p", adapter_r=4), dict(name="prefix_embed", l_p=2, l_i=1),
                dict(name="prefix_layer", l_p=2, l_i=1), dict(name="lora", r=4), dict(name="lora_pe", r=4, l_p=2),
                dict(name="lora_pl", r=4, l_p=2), dict(name="full")]


@pytest.mark.parametrize("kw", HEAD_METHODS, ids=lambda kw: kw["name"])
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_the_whole_task_head_trains_for_every_method(family, kw):
    """The paper trains the new head whole: BERT's pooler (dense + tanh) and classifier, a decoder's score."""
    if family == "llama" and kw["name"] == "bitfit":
        pytest.skip("Llama has no biases")
    torch.manual_seed(0)
    model = tiny.bert() if family == "bert" else _decoder_classifier(family)
    lora.apply_method(model, lora.MethodConfig(**kw))
    head = [n for n in dict(model.named_parameters()) if n.startswith(("classifier.", "score.", "bert.pooler."))]
    assert len(head) == (4 if family == "bert" else 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids, mask = tiny.batch()
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2])).loss.backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(not torch.equal(params[n], before[n]) for n in head), [n for n in head if torch.equal(params[n],
                                                                                                     before[n])]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_decoder_classifier_with_a_prefix_pools_each_rows_last_token(family, method):
    """Rows of uneven length (7 and 5 real tokens, right-padded): each row's class logits are what it gets alone,
    read at its last attended position (the last infix slot), not at the padded batch's last position."""
    model = _decoder_classifier(family).eval()
    lora.apply_method(model, lora.MethodConfig(name=method, l_p=3, l_i=2))
    ids, mask = tiny.batch()
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    alone = [model(input_ids=ids[i:i + 1, :n]).logits[0] for i, n in enumerate((7, 5))]
    assert torch.allclose(out.logits[0], alone[0], atol=1e-5) and torch.allclose(out.logits[1], alone[1], atol=1e-5)
    last = out.hidden_states[-1]  # (batch, 7 + 5, d), after the final norm
    by_hand = model.score(last[torch.arange(2), torch.tensor([7 + 3 + 2 - 1, 5 + 3 + 2 - 1])])
    assert torch.allclose(out.logits, by_hand, atol=1e-5)


def test_partial_fine_tuning_trainable_sets():
    model = _apply("bert", name="ft_top", top_k=1)
    for n, p in model.named_parameters():
        assert p.requires_grad == (".layer.1." in n or n.startswith(("classifier.", "bert.pooler."))), n
    block = sum(p.numel() for p in blocks_of(model)[1].parameters())
    assert lora.count_parameters(model, exclude=EXCLUDE).method == block

    model = _apply("gpt2", name="ft_top", top_k=2)
    for n, p in model.named_parameters():
        assert p.requires_grad == n.startswith("transformer.h."), n

    model = _apply("bert", name="bitfit")
    for n, p in model.named_parameters():
        assert p.requires_grad == (n.endswith(".bias") or n.startswith(("classifier.", "bert.pooler."))), n
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias") and "classifier" not in n and "pooler" not in n)
    assert lora.count_parameters(model, exclude=EXCLUDE).method == biases

    model = _apply("gpt2", name="bitfit")
    assert all(p.requires_grad == n.endswith(".bias") for n, p in model.named_parameters())

    model = _apply("bert", name="full")
    assert all(p.requires_grad for p in model.parameters())


def test_task_head_trains_only_where_there_is_one():
    model = _apply("bert", name="lora")
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert model.bert.pooler.dense.weight.requires_grad
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


def test_a_new_method_is_one_module(tmp_path, monkeypatch):
    """A module with METHODS = (Method(...),) beside lora's own is found, validated and applied by name alone."""
    import lora.methods

    (tmp_path / "toy_method.py").write_text(
        "from lora.methods import Method\n"
        "def inject(model, cfg):\n"
        "    model.get_input_embeddings().weight.requires_grad_(True)\n"
        "def check(cfg):\n"
        "    if cfg.top_k != 2:\n"
        "        raise ValueError('toy needs method.top_k=2')\n"
        "METHODS = (Method('toy', 'the input embeddings only', ('top_k',), inject, check),)\n")
    monkeypatch.setattr(lora, "__path__", [*lora.__path__, str(tmp_path)])
    lora.methods.registry.cache_clear()
    try:
        model = _apply("gpt2", name="toy", top_k=2)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {"transformer.wte.weight"}
        with pytest.raises(ValueError, match="toy needs method.top_k=2"):
            _apply("gpt2", name="toy", top_k=3)
    finally:
        monkeypatch.undo()
        lora.methods.registry.cache_clear()
    with pytest.raises(ValueError, match="unknown method 'toy'"):
        _apply("gpt2", name="toy")
