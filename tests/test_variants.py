"""LoRA variants (lora/dora.py, lora/pissa.py): each starts as the base model, merges exactly, saves and loads, and
exports to PEFT with PEFT's outputs equal to ours."""
from __future__ import annotations

import json

import pytest
import torch

import lora
from lora.io import export_peft, load_adapter, save_adapter
from lora.layers import lora_modules, merge_lora, unmerge_lora
from tests import tiny


def _dora(family="llama", seed=0, name="dora", **kw):
    torch.manual_seed(seed)
    model = tiny.FAMILIES[family]().eval()
    lora.apply_method(model, lora.MethodConfig(**{"name": name, "r": 4, "alpha": 8, **kw}))
    return model


def _trained(model):
    """Non-zero B and a magnitude moved off ‖W0‖: what training leaves."""
    tiny.randomise_lora_b(model)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_magnitude.mul_(1 + 0.3 * torch.rand_like(m.lora_magnitude))
    return model


def _logits(model):
    ids, mask = tiny.batch()
    return model(input_ids=ids, attention_mask=mask).logits


def test_dora_starts_as_the_base_model():
    torch.manual_seed(0)
    base = tiny.FAMILIES["llama"]().eval()
    assert torch.allclose(_logits(_dora()), _logits(base), atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_dora_merge_is_exact_and_unmerge_restores_w0(family):
    model = _trained(_dora(family))
    w0 = {p: m.base.weight.clone() for p, m in lora_modules(model).items()}
    before = _logits(model)
    merge_lora(model)
    assert torch.allclose(_logits(model), before, atol=1e-5)
    unmerge_lora(model)
    for path, m in lora_modules(model).items():
        assert torch.allclose(m.base.weight, w0[path], atol=1e-6)
    assert torch.allclose(_logits(model), before, atol=1e-6)


def test_dora_trains_a_b_and_the_magnitude_only():
    model = _trained(_dora("llama"))
    model.train()
    _logits(model).square().mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.rpartition(".")[2] in ("lora_A", "lora_B", "lora_magnitude") or "score" in n
                             for n in trainable), trainable
    for m in lora_modules(model).values():
        assert m.lora_magnitude.grad is not None and m.lora_magnitude.grad.abs().sum() > 0
        assert m.base.weight.grad is None


def test_dora_adapter_saves_and_loads(tmp_path):
    model = _trained(_dora("bert"))
    save_adapter(model, tmp_path / "a.safetensors")
    fresh = _dora("bert")
    assert not torch.allclose(_logits(fresh), _logits(model))
    load_adapter(fresh, tmp_path / "a.safetensors")
    assert torch.equal(_logits(fresh), _logits(model))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_dora_exports_to_peft_with_equal_outputs(family, tmp_path):
    from peft import PeftModel

    torch.manual_seed(0)
    base = tiny.FAMILIES[family]().eval()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    ours = _trained(_dora(family))
    export_peft(ours, tmp_path / "peft", base_model_name_or_path="tiny")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["use_dora"] is True
    base.load_state_dict(state)
    theirs = PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    a, b = _logits(ours), _logits(theirs)
    assert not torch.allclose(a, _logits(tiny.FAMILIES[family]().eval()))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


# ----------------------------------------------------------------------------------------------------- PiSSA
def _pissa(family="llama", **kw):
    return _dora(family, name="pissa", **kw)


def test_pissa_starts_as_the_base_model_on_w0s_top_singular_directions():
    torch.manual_seed(0)
    base = tiny.FAMILIES["llama"]().eval()
    w0 = dict(base.named_parameters())
    model = _pissa()
    assert torch.allclose(_logits(model), _logits(base), atol=1e-5)
    for path, m in lora_modules(model).items():
        w = w0[path + ".weight"].detach()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        top = (u[:, :4] * s[:4]) @ vh[:4]
        assert torch.allclose(m.scaling * m.lora_B @ m.lora_A, top, atol=1e-5)  # s·B0A0 = the top-4 part of W0
        assert torch.allclose(m.base.weight, w - top, atol=1e-5)  # the frozen residual


def test_pissa_merge_is_exact_and_an_adapter_loads_onto_a_fresh_model(tmp_path):
    model = _trained_pissa()
    before = _logits(model)
    merge_lora(model)
    assert torch.allclose(_logits(model), before, atol=1e-5)
    unmerge_lora(model)
    save_adapter(model, tmp_path / "p.safetensors")
    fresh = _pissa()  # recomputes the residual from the same W0
    load_adapter(fresh, tmp_path / "p.safetensors")
    assert torch.allclose(_logits(fresh), before, atol=1e-6)


def _trained_pissa(family="llama"):
    model = _pissa(family)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_A.add_(0.1 * torch.randn_like(m.lora_A))
            m.lora_B.add_(0.1 * torch.randn_like(m.lora_B))
    return model


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_pissa_exports_to_peft_as_an_exact_rank_2r_lora(family, tmp_path):
    from peft import PeftModel

    torch.manual_seed(0)
    base = tiny.FAMILIES[family]().eval()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    ours = _trained_pissa(family)
    export_peft(ours, tmp_path / "peft", base_model_name_or_path="tiny")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)  # rank 2r, the same scaling alpha / r
    base.load_state_dict(state)
    plain = _logits(base)
    theirs = PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    a, b = _logits(ours), _logits(theirs)
    assert not torch.allclose(a, plain, atol=1e-4)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_pissa_and_dora_refuse_gpt2s_fused_qkv():
    for name in ("dora", "pissa"):
        with pytest.raises(ValueError, match="fused q/k/v.*method=lora"):
            _dora("gpt2", name=name)
