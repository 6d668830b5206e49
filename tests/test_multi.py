"""Mixed-adapter batches (lora.multi): each row with its own adapter equals that row run alone with its adapter."""
import copy

import pytest
import torch

import lora
from lora.io import save_adapter
from lora.layers import LoRALinear, lora_modules, merge_lora
from lora.multi import MultiLoRALinear, adapter_bank, attach_adapters, lora_state, slot_names
from tests import tiny

torch.set_num_threads(1)

# adapters of different ranks, alphas and targets: ranks are zero-padded, a module an adapter leaves alone gets zeros
SPECS = {
    "a": dict(r=4, alpha=8, targets=["q", "v"]),
    "b": dict(r=2, alpha=4, targets=["q", "k", "v", "o", "mlp"]),
    "c": dict(r=8, alpha=16, targets=["v"]),
}
ROWS = ["a", "none", "b", "c", "a", "b"]


def _close(a, b, rel=1e-5):
    return torch.allclose(a, b, rtol=rel, atol=rel * b.abs().max().item())


def _base(family):
    torch.manual_seed(0)
    return (tiny.bert(head=False) if family == "bert" else tiny.FAMILIES[family]()).eval()


def _adapted(base, name, seed):
    """A copy of `base` with one ordinary LoRA (LoRALinear) adapter whose B is non-zero."""
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    lora.apply_method(model, lora.MethodConfig(name="lora", **SPECS[name]))
    tiny.randomise_lora_b(model, seed=seed)
    return model.eval()


def _models(family):
    base = _base(family)
    return base, {name: _adapted(base, name, seed) for seed, name in enumerate(SPECS, start=1)}


def _batch(n=len(ROWS), t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, tiny.VOCAB, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 5:] = 0  # right padding on two rows
    mask[3, 4:] = 0
    return ids, mask


def _out(model, ids, mask):
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_mixed_batch_equals_each_row_alone_with_its_adapter(family):
    base, adapted = _models(family)
    ids, mask = _batch()
    with torch.no_grad():
        expected = [_out(base if name == "none" else adapted[name], ids[i:i + 1], mask[i:i + 1])[0]
                    for i, name in enumerate(ROWS)]
        multi = copy.deepcopy(base)
        bank = attach_adapters(multi, {name: lora_state(m) for name, m in adapted.items()},
                               alpha={n: s["alpha"] for n, s in SPECS.items()})
        with bank.use(ROWS):
            got = _out(multi, ids, mask)
    for i, name in enumerate(ROWS):
        assert _close(got[i], expected[i]), (family, i, name)
    assert torch.equal(expected[1], _out(base, ids[1:2], mask[1:2])[0])  # the "none" row is the base model
    # the adapters really differ from the base and from each other on these rows
    assert not _close(expected[0], _out(base, ids[:1], mask[:1])[0], rel=1e-3)
    if family == "gpt2":  # fused c_attn: slices stacked per role, Wk untouched by the q/v-only adapter "a"
        assert set(SPECS["a"]["targets"]) < {"q", "k", "v"}
        assert any(isinstance(m, MultiLoRALinear) for n, m in multi.named_modules() if n.endswith("c_attn"))


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_adapters_from_models_and_files(family, tmp_path):
    base, adapted = _models(family)
    paths = {}
    for name, m in adapted.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        save_adapter(m, paths[name], metadata={"alpha": SPECS[name]["alpha"]})
    ids, mask = _batch()
    with torch.no_grad():
        from_models = copy.deepcopy(base)
        bank_m = attach_adapters(from_models, adapted)  # alpha read from the LoRA layers
        from_files = copy.deepcopy(base)
        bank_f = attach_adapters(from_files, paths, ignore_extra=True)  # alpha from the files' metadata
        with bank_m.use(ROWS), bank_f.use(ROWS):
            assert torch.equal(_out(from_models, ids, mask), _out(from_files, ids, mask))
    assert bank_f.names == list(SPECS)


def test_merged_equals_unmerged_equals_a_uniform_bank():
    base, adapted = _models("llama")
    ids, mask = _batch()
    multi = copy.deepcopy(base)
    bank = attach_adapters(multi, adapted)
    with torch.no_grad():
        for name, model in adapted.items():
            unmerged = _out(model, ids, mask)
            with bank.use([name] * len(ids)):  # every row the same adapter: the gather-free path
                assert _close(_out(multi, ids, mask), unmerged)
            with bank.use([name, "none"] * (len(ids) // 2)):  # the gathered path, same rows
                assert _close(_out(multi, ids, mask)[::2], unmerged[::2])
            merged = copy.deepcopy(model)
            merge_lora(merged)
            assert all(m.merged for m in lora_modules(merged).values())
            assert _close(_out(merged, ids, mask), unmerged)
        with bank.use(["none"] * len(ids)):
            assert torch.equal(_out(multi, ids, mask), _out(base, ids, mask))


def _padded(tokens, length):
    """A row generated alone stops at its EOS; in a batch it is padded (pad id 0) to the longest row."""
    return torch.cat([tokens, tokens.new_zeros(*tokens.shape[:-1], length - tokens.shape[-1])], dim=-1)


def _generate_alone(model, prompt, **kw):
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                          pad_token_id=0, **kw)


@pytest.mark.parametrize("beams", [1, 2], ids=["greedy", "beam2"])
def test_generate_with_a_kv_cache_follows_each_rows_adapter(beams):
    base, adapted = _models("llama")
    rows = ["b", "none", "a", "c"]
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(1, tiny.VOCAB, (len(rows), 5), generator=g)
    multi = copy.deepcopy(base)
    bank = attach_adapters(multi, adapted)
    with torch.no_grad():
        expected = [_generate_alone(base if name == "none" else adapted[name], prompts[i:i + 1], num_beams=beams)
                    for i, name in enumerate(rows)]
        with bank.use(rows):
            got = _generate_alone(multi, prompts, num_beams=beams)
    for i, name in enumerate(rows):
        assert torch.equal(got[i], _padded(expected[i][0], got.shape[1])), (beams, name, got[i], expected[i])
    # the adapters change what is generated, so the comparison above means something
    assert len({tuple(e[0].tolist()) for e in expected}) > 1


def test_beams_times_return_sequences_rows_follow_their_source_row():
    base, adapted = _models("llama")
    rows = ["a", "none", "c"]
    prompts = torch.randint(1, tiny.VOCAB, (len(rows), 4), generator=torch.Generator().manual_seed(2))
    multi = copy.deepcopy(base)
    bank = attach_adapters(multi, adapted)
    with torch.no_grad(), bank.use(rows):
        got = _generate_alone(multi, prompts, num_beams=2, num_return_sequences=2)
    with torch.no_grad():
        for i, name in enumerate(rows):
            alone = _generate_alone(base if name == "none" else adapted[name], prompts[i:i + 1], num_beams=2,
                                    num_return_sequences=2)
            assert torch.equal(got[2 * i:2 * i + 2], _padded(alone, got.shape[1])), name


def test_one_base_call_per_layer_whatever_the_number_of_adapters():
    """No loop over rows or adapters: each wrapped projection runs its base once and gathers A, B once."""
    base, adapted = _models("gpt2")
    multi = copy.deepcopy(base)
    bank = attach_adapters(multi, adapted)
    layer = bank.layers["transformer.h.0.attn.c_attn"]
    calls = []
    layer.base.register_forward_hook(lambda *_: calls.append(1))
    ids, mask = _batch()
    with torch.no_grad(), bank.use(ROWS):
        multi(input_ids=ids, attention_mask=mask)
    assert len(calls) == 1
    assert layer.a_t.shape[0] == len(SPECS) + 1 and torch.count_nonzero(layer.a_t[0]) == 0  # slot 0 = none
    # fused c_attn: every adapter's B is zero on the Wk columns unless it adapts k ("b" does)
    d = multi.config.n_embd
    assert torch.count_nonzero(layer.b_t[bank.names.index("a") + 1][:, d:2 * d]) == 0
    assert torch.count_nonzero(layer.b_t[bank.names.index("b") + 1][:, d:2 * d]) > 0


def test_rows_as_tensor_nesting_and_detach():
    base, adapted = _models("bert")
    ids, mask = _batch()
    multi = copy.deepcopy(base)
    bank = attach_adapters(multi, adapted)
    assert adapter_bank(multi) is bank
    slots = bank.slots(ROWS)
    assert slot_names(bank, slots) == ROWS
    with torch.no_grad():
        with bank.use(slots):
            by_slot = _out(multi, ids, mask)
            with bank.use(["none"] * len(ROWS)):
                assert torch.equal(_out(multi, ids, mask), _out(base, ids, mask))
            assert torch.equal(_out(multi, ids, mask), by_slot)  # the outer choice is back
        with bank.use(ROWS):
            assert torch.equal(_out(multi, ids, mask), by_slot)
        bank.detach()
        assert not any(isinstance(m, MultiLoRALinear) for m in multi.modules())
        assert torch.equal(_out(multi, ids, mask), _out(base, ids, mask))
    assert set(multi.state_dict()) == set(base.state_dict())


def test_mistakes_are_reported_with_the_way_out():
    base, adapted = _models("llama")
    ids, mask = _batch()
    multi = copy.deepcopy(base)
    bank = attach_adapters(multi, adapted)
    with pytest.raises(RuntimeError, match="bank.use"):
        multi(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="6 rows but 4 adapter rows"), bank.use(["a"] * 4):
        multi(input_ids=ids, attention_mask=mask)
    with pytest.raises(KeyError, match="no adapter named 'z'"):
        bank.set(["a", "z"])
    with pytest.raises(ValueError, match="out of range"):
        bank.set(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="already has adapters attached"):
        attach_adapters(multi, adapted)
    with pytest.raises(ValueError, match="reserved"):
        attach_adapters(copy.deepcopy(base), {"none": adapted["a"]})
    with pytest.raises(ValueError, match="plain base model"):
        attach_adapters(copy.deepcopy(adapted["a"]), {"b": adapted["b"]})
    with pytest.raises(ValueError, match="pass alpha="):
        attach_adapters(copy.deepcopy(base), {"a": lora_state(adapted["a"])})
    with pytest.raises(ValueError, match="PEFT's key format"):
        attach_adapters(copy.deepcopy(base), {"p": {"base_model.model.x.lora_A.weight": torch.zeros(2, 2)}}, alpha=2)
    head = tiny.bert()
    lora.apply_method(head, lora.MethodConfig(name="lora", r=2))
    state = {n: p.detach() for n, p in head.named_parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="ignore_extra=True"):
        attach_adapters(tiny.bert(), {"h": state}, alpha=2)
    bigger = tiny.llama().eval()  # same architecture, other width: shapes refuse
    wide = copy.deepcopy(adapted["a"])
    for m in wide.modules():
        if isinstance(m, LoRALinear):
            m.lora_A = torch.nn.Parameter(torch.zeros(m.r, m.in_features + 1))
    with pytest.raises(ValueError, match="another model size"):
        attach_adapters(bigger, {"w": wide})
