import json

import pytest
import torch

import lora
from lora.io import adapter_metadata, export_peft, load_adapter, save_adapter
from lora.layers import lora_modules, merge_lora
from tests import tiny


def _adapted(family, seed=0, **kw):
    torch.manual_seed(seed)
    model = tiny.FAMILIES[family]().eval()
    lora.apply_method(model, lora.MethodConfig(**{"name": "lora", "r": 4, "alpha": 8, **kw}))
    return model


def _logits(model):
    ids, mask = tiny.batch()
    return model(input_ids=ids, attention_mask=mask).logits


def test_save_load_round_trip(tmp_path):
    model = _adapted("bert")
    tiny.randomise_lora_b(model)
    with torch.no_grad():
        model.classifier.weight.normal_()  # the head is saved too
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path, metadata={"method": {"name": "lora", "r": 4}})
    fresh = _adapted("bert")  # same base weights (seed), fresh adapter and head
    assert not torch.allclose(_logits(fresh), _logits(model))
    load_adapter(fresh, path)
    assert torch.equal(_logits(fresh), _logits(model))
    assert adapter_metadata(path) == {"method": {"name": "lora", "r": 4}}
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in k or k.startswith(("classifier", "bert.pooler")) for k in keys)
    assert json.loads(safe_open(str(path), "pt").metadata()["method"]) == {"name": "lora", "r": 4}


def test_corrupt_or_missing_adapter_gives_a_clear_error(tmp_path):
    model = _adapted("bert")
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"adapter\.safetensors is not a readable safetensors file"):
        load_adapter(model, path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(model, path)
    with pytest.raises(FileNotFoundError, match="no adapter file at .*nope"):
        load_adapter(model, tmp_path / "nope.safetensors")


def test_mismatched_adapter_lists_keys_and_shapes_and_copies_nothing(tmp_path):
    model = _adapted("bert")
    path = tmp_path / "adapter.safetensors"
    save_adapter(_adapted("bert", targets=["q", "k", "v"]), path)
    with pytest.raises(ValueError, match=r"missing none; unexpected bert\.encoder\.layer\.0\.attention\.self\.key"):
        load_adapter(model, path)
    load_adapter(model, path, strict=False)  # q and v fit; k is ignored

    before = {n: p.clone() for n, p in model.named_parameters()}
    save_adapter(_adapted("bert", r=8), path)
    with pytest.raises(ValueError, match=r"shapes differ.*query\.lora_A \(8, 32\) vs model \(4, 32\)"):
        load_adapter(model, path)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    save_adapter(_adapted("bert", targets=["q"], train_also=[]), path)
    with pytest.raises(ValueError, match=r"missing .*value\.lora_A.*classifier"):
        load_adapter(model, path)


def test_loading_into_a_merged_model_is_refused(tmp_path):
    model = _adapted("llama")
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path)
    merge_lora(model)
    with pytest.raises(ValueError, match="merged.*unmerge_lora"):
        load_adapter(model, path)


def _peft_round_trip(make, cfg, tmp_path, key):
    """(our output, PEFT's output, the unadapted output, the PeftModel) on the same batch."""
    from peft import PeftModel

    torch.manual_seed(0)
    ours = make().eval()
    base_state = {k: v.clone() for k, v in ours.state_dict().items()}
    lora.apply_method(ours, cfg)
    tiny.randomise_lora_b(ours)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if p.requires_grad and "lora_" not in name:
                p.normal_()  # a trained head, which the export must carry
    export_peft(ours, tmp_path / "peft", base_model_name_or_path="tiny")

    base = make().eval()
    base.load_state_dict(base_state)
    ids, mask = tiny.batch()
    plain = base(input_ids=ids, attention_mask=mask)[key]
    theirs = PeftModel.from_pretrained(base, tmp_path / "peft").eval()  # injects into `base` in place
    a = ours(input_ids=ids, attention_mask=mask)[key]
    b = theirs(input_ids=ids, attention_mask=mask)[key]
    return a, b, plain, theirs


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def _peft_lora_paths(peft_model):
    return sorted(n.removeprefix("base_model.model.").removesuffix(".lora_A")
                  for n, _ in peft_model.named_modules() if n.endswith(".lora_A"))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_peft_export_loads_in_peft_with_equal_outputs(family, tmp_path):
    # BERT: q, v, o and MLP (o and mlp_out share the leaf name "dense" with the pooler) plus the classifier head
    targets = ["q", "v", "o", "mlp"] if family == "bert" else ["q", "v"]
    cfg = lora.MethodConfig(name="lora", r=4, alpha=16, targets=targets)
    a, b, plain, theirs = _peft_round_trip(tiny.FAMILIES[family], cfg, tmp_path, "logits")
    assert not torch.allclose(a, plain)  # the adapter does something
    assert _close(a, b)
    ours_paths = sorted(lora_modules(_adapted(family, targets=targets)))
    assert _peft_lora_paths(theirs) == ours_paths  # PEFT adapted exactly our modules, not the pooler
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 16
    assert config["modules_to_save"] == (["bert.pooler.dense", "classifier"] if family == "bert" else None)


def test_peft_export_of_gpt2_fused_qv_slices_is_exact(tmp_path):
    # q, v as slices of c_attn (rank 2·4 in PEFT), o and MLP as plain Conv1D LoRAs (rank 4)
    cfg = lora.MethodConfig(name="lora", r=4, alpha=8, targets=["q", "v", "o", "mlp"], train_also=[])
    a, b, plain, theirs = _peft_round_trip(tiny.gpt2, cfg, tmp_path, "logits")
    assert not torch.allclose(a, plain)
    assert _close(a, b)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["fan_in_fan_out"] is True
    assert config["rank_pattern"] == {"transformer.h.0.attn.c_attn": 8, "transformer.h.1.attn.c_attn": 8}
    assert config["alpha_pattern"] == {"transformer.h.0.attn.c_attn": 16, "transformer.h.1.attn.c_attn": 16}
    c_attn = theirs.get_submodule("base_model.model.transformer.h.0.attn.c_attn")
    b_full = c_attn.lora_B["default"].weight  # (3·32, 8): q rows use columns 0:4, v rows 4:8, k rows nothing
    assert b_full.shape == (96, 8) and torch.count_nonzero(b_full[32:64]) == 0
    assert c_attn.scaling["default"] == 2.0


def test_peft_export_refuses_what_peft_cannot_carry(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        export_peft(tiny.bert(), tmp_path, "tiny")
    model = _adapted("llama")
    merge_lora(model)
    with pytest.raises(ValueError, match="merged"):
        export_peft(model, tmp_path, "tiny")
    model = _adapted("bert", name="lora_pe")
    with pytest.raises(ValueError, match="not part of the base model"):
        export_peft(model, tmp_path, "tiny")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_rslora_scales_by_alpha_over_sqrt_r_and_exports_to_peft_exactly(family, tmp_path):
    """rsLoRA (method.scaling=rs): ΔW = alpha / sqrt(r) · BA; PEFT's use_rslora gives the same outputs (GPT-2's
    fused q/v slices become one rank-2r LoRA, whose alpha keeps the slice's alpha / sqrt(r))."""
    from lora.layers import lora_modules

    cfg = lora.MethodConfig(name="lora", r=4, alpha=8, targets=["q", "v"], scaling="rs")
    model = _adapted(family, scaling="rs")
    layer = next(iter(lora_modules(model).values()))
    assert layer.scaling == pytest.approx(8 / 2.0)  # alpha / sqrt(4)
    if family == "gpt2":
        pytest.skip("PEFT cannot adapt q and v of GPT-2's fused c_attn alone (our export refuses it)")
    a, b, plain, _ = _peft_round_trip(tiny.FAMILIES[family], cfg, tmp_path, "logits")
    assert not torch.allclose(a, plain) and _close(a, b)
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["use_rslora"] is True


def test_rslora_adapter_file_attaches_with_its_scaling(tmp_path):
    from lora.multi import attach_adapters

    model = _adapted("llama", scaling="rs")
    tiny.randomise_lora_b(model)
    path = tmp_path / "rs.safetensors"
    save_adapter(model, path, metadata={"alpha": 8, "r": 4, "scaling": "rs"})
    torch.manual_seed(0)
    base = tiny.FAMILIES["llama"]().eval()
    bank = attach_adapters(base, {"rs": str(path)})
    ids, mask = tiny.batch()
    with bank.use(["rs", "rs"]):
        got = base(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(got, model(input_ids=ids, attention_mask=mask).logits, atol=1e-5)


def test_lora_plus_trains_b_at_its_ratio_of_the_learning_rate():
    from types import SimpleNamespace

    from experiments.loop import build_optimizer

    model = _adapted("llama")  # LoRA on q, v: every trainable parameter is an A or a B
    opt, sched = build_optimizer(model, SimpleNamespace(lr=1e-3, weight_decay=0.01, adam_eps=1e-8), total=10, warmup=2,
                                 lr_ratio_b=16)
    kind = {id(p): n.rpartition(".")[2][:6] for n, p in model.named_parameters()}

    def lr_of(k):
        (lr,) = {g["lr"] for g in opt.param_groups if any(kind[id(p)] == k for p in g["params"])}
        return lr

    assert lr_of("lora_B") == pytest.approx(16 * lr_of("lora_A")) and lr_of("lora_A") == pytest.approx(1e-3 / 3)
    for _ in range(4):  # through warmup into the decay: the ratio holds
        opt.step()
        sched.step()
    assert lr_of("lora_B") == pytest.approx(16 * lr_of("lora_A"))
