"""The rows of the paper's tables as configurations: `row=<key>` selects a method and its hyperparameters.

A key is declared here once; a table's sweep (conf/tables/) lists keys, and the published numbers
(paper/published.py) name the key of the row they belong to, so experiments and analysis meet on the same row.
experiments/studies.py registers each key as the Hydra option `row/<key>`.
Parameter counts in a note are the paper's for the model named there (results/tables/params.md has ours).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RowConfig:
    method: str  # a lora.methods name
    hp: tuple[tuple[str, Any], ...] = ()  # MethodConfig fields the row sets; the method's defaults for the rest
    note: str = ""

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.hp)


def _lora(r: int | None, targets: str, note: str = "", **extra) -> RowConfig:
    hp = (() if r is None else (("r", r),)) + tuple(extra.items()) + (("targets", tuple(targets)),)
    return RowConfig("lora", hp, note)


def _combo(method: str, r: int, note: str) -> RowConfig:
    """LoRA+PE / LoRA+PL on W_q, W_v with Table 15's prefix (l_p=8, l_i=4)."""
    return RowConfig(method, (("r", r), ("targets", ("q", "v")), ("l_p", 8), ("l_i", 4)), note)


ROWS: dict[str, RowConfig] = {
    "full": RowConfig("full", note="fine-tune every weight"),
    "bitfit": RowConfig("bitfit", note="BitFit: bias terms and the task head only"),
    "ft_top2": RowConfig("ft_top", (("top_k", 2),), "FT^Top2: the last two layers"),
    **{f"adapter_h_r{r}": RowConfig("adapter_h", (("adapter_r", r),), f"Adapter^H r={r}")
       for r in (1, 4, 8, 16, 64, 112)},
    "adapter_l_r6": RowConfig("adapter_l", (("adapter_r", 6),), "Adapter^L r=6 (0.37M on GPT-2 M)"),
    "adapter_l_r224": RowConfig("adapter_l", (("adapter_r", 224),), "Adapter^L r=224 (11.09M on GPT-2 M)"),
    "adapter_l_r8": RowConfig("adapter_l", (("adapter_r", 8),), "Adapter^L r=8 (0.88M on GPT-2 L)"),
    "adapter_l_r248": RowConfig("adapter_l", (("adapter_r", 248),), "Adapter^L r=248 (23.00M on GPT-2 L)"),
    **{f"adapter_p_r{r}": RowConfig("adapter_p", (("adapter_r", r),), f"Adapter^P r={r} ({n} on RoBERTa large)")
       for r, n in ((16, "0.8M"), (64, "3.0M"))},
    "adapter_d_r8": RowConfig("adapter_d", (("adapter_r", 8),), "Adapter^D r=8 (0.3M on RoBERTa base)"),
    "adapter_d_r24": RowConfig("adapter_d", (("adapter_r", 24),), "Adapter^D r=24 (0.9M on RoBERTa base)"),
    **{f"pe_lp{lp}_li8": RowConfig("prefix_embed", (("l_p", lp), ("l_i", 8)), f"PrefixEmbed l_p={lp}, l_i=8")
       for lp in (16, 32, 64, 128, 256, 512)},
    **{f"pl_lp{lp}_li{li}": RowConfig("prefix_layer", (("l_p", lp), ("l_i", li)), f"PrefixLayer l_p={lp}, l_i={li}")
       for lp, li in ((2, 2), (8, 0), (8, 8), (32, 4), (64, 0))},
    "pl_lp14_li0": RowConfig("prefix_layer", (("l_p", 14), ("l_i", 0)),
                             "PreLayer l_p=14, l_i=0 (0.35M on GPT-2 M; prefix-tuning's setting for E2E / WebNLG)"),
    "pl_lp17_li0": RowConfig("prefix_layer", (("l_p", 17), ("l_i", 0)), "PreLayer l_p=17, l_i=0 (0.77M on GPT-2 L)"),
    **{f"lora_q_r{r}": _lora(r, "q", f"LoRA r_q={r}") for r in (1, 2, 4, 8, 64)},
    "lora_k_r8": _lora(8, "k", "LoRA W_k, r=8"),
    "lora_v_r2": _lora(2, "v", "LoRA r_v=2"),
    "lora_v_r8": _lora(8, "v", "LoRA W_v, r=8"),
    "lora_o_r8": _lora(8, "o", "LoRA W_o, r=8"),
    "lora_qk_r4": _lora(4, "qk", "LoRA W_q, W_k, r=4"),
    **{f"lora_qv_r{r}": _lora(r, "qv", f"LoRA r_q=r_v={r}") for r in (1, 2, 4, 8, 64)},
    "lora_qv_r16": _lora(16, "qv", "LoRA r_q=r_v=16: DeBERTa XXL's 4.7M in Table 2 (paper/recipes.py)"),
    **{f"lora_qkvo_r{r}": _lora(r, "qkvo", f"LoRA r_q=r_k=r_v=r_o={r}") for r in (1, 2, 4, 8, 64)},
    "lora_qv_r4_a32": _lora(4, "qv", "LoRA r_q=r_v=4, alpha 32, dropout 0.1: the paper's GPT-2 setting (E2E, "
                                     "WebNLG, DART)", alpha=32, dropout=0.1),
    "lora_qv_a32": _lora(None, "qv", "LoRA on W_q, W_v, alpha 32, dropout 0.1 (the paper's GPT-2 setting), rank "
                                     "from method.r (Table 18)", alpha=32, dropout=0.1),
    **{f"lora_pe_r{r}": _combo("lora_pe", r, f"LoRA+PE r_q=r_v={r}, l_p=8, l_i=4") for r in (8, 32, 64)},
    "lora_pl_r8": _combo("lora_pl", 8, "LoRA+PL r_q=r_v=8, l_p=8, l_i=4"),
}
