import json

import pytest
import torch

import lora
from lora.io import export_peft, load_adapter, save_adapter
from tests import tiny


def _adapted(family, seed=0, **kw):
    torch.manual_seed(seed)
    model = tiny.FAMILIES[family]().eval()
    lora.apply_method(model, lora.MethodConfig(name="lora", r=4, alpha=8, **kw))
    return model


def test_save_load_round_trip(tmp_path):
    model = _adapted("bert")
    tiny.randomise_lora_b(model)
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path, metadata={"method": {"name": "lora", "r": 4}})
    fresh = _adapted("bert")  # same base weights (seed), fresh adapter
    ids, mask = tiny.batch()
    assert not torch.allclose(fresh(input_ids=ids, attention_mask=mask).logits,
                              model(input_ids=ids, attention_mask=mask).logits)
    load_adapter(fresh, path)
    assert torch.equal(fresh(input_ids=ids, attention_mask=mask).logits,
                       model(input_ids=ids, attention_mask=mask).logits)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["method"]) == {"name": "lora", "r": 4}
        assert all("lora_" in k or k.startswith("classifier") for k in f.keys())


def test_corrupt_or_mismatched_adapter_gives_a_clear_error(tmp_path):
    model = _adapted("bert")
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(model, path)
    save_adapter(_adapted("bert", targets=["q", "k", "v"]), path)
    with pytest.raises(ValueError, match="unexpected"):
        load_adapter(model, path)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_peft_export_loads_in_peft_with_equal_outputs(family, tmp_path):
    from peft import PeftModel

    make = (lambda: tiny.bert(head=False)) if family == "bert" else tiny.llama
    torch.manual_seed(0)
    ours = make().eval()
    base_state = {k: v.clone() for k, v in ours.state_dict().items()}
    lora.apply_method(ours, lora.MethodConfig(name="lora", r=4, alpha=16, targets=["q", "v"], train_also=[]))
    tiny.randomise_lora_b(ours)
    export_peft(ours, tmp_path / "peft", base_model_name_or_path=f"tiny-{family}")

    base = make().eval()
    base.load_state_dict(base_state)
    ids, mask = tiny.batch()
    key = "last_hidden_state" if family == "bert" else "logits"
    plain = base(input_ids=ids, attention_mask=mask)[key]
    theirs = PeftModel.from_pretrained(base, tmp_path / "peft").eval()  # injects into `base` in place
    out_ours = ours(input_ids=ids, attention_mask=mask)
    out_theirs = theirs(input_ids=ids, attention_mask=mask)
    a, b = out_ours[key], out_theirs[key]
    assert not torch.allclose(a, plain)  # the adapter does something
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_peft_export_refuses_fused_slices(tmp_path):
    with pytest.raises(ValueError, match="PEFT can only adapt the whole module"):
        export_peft(_adapted("gpt2"), tmp_path, "tiny-gpt2")
