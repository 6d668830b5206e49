"""Partial fine-tuning: the last k blocks (FT^Top-k), biases only (BitFit), or named modules (the task head)."""
from __future__ import annotations

from torch import nn

from lora.count import has_component
from lora.methods import Method
from lora.targets import blocks_of


def unfreeze_top_layers(model: nn.Module, k: int) -> None:
    """FT^Top-k: the last k transformer blocks train; embeddings and the final norm (GPT-2 ln_f, Llama norm) do not,
    as the paper adapts "only the last two layers"."""
    blocks = blocks_of(model)
    if not 1 <= k <= len(blocks):
        raise ValueError(f"top_k={k} but the model has {len(blocks)} transformer blocks; choose 1..{len(blocks)}")
    for block in blocks[len(blocks) - k:]:
        block.requires_grad_(True)


def unfreeze_biases(model: nn.Module) -> None:
    """BitFit trains every bias, the LayerNorm biases included (Zaken et al.)."""
    biases = [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"]
    if not biases:
        raise ValueError(f"{type(model).__name__} has no bias parameters (e.g. Llama), so BitFit has nothing to train")
    for p in biases:
        p.requires_grad_(True)


def unfreeze_named(model: nn.Module, names: list[str] | tuple[str, ...]) -> None:
    """Train every parameter whose path contains one of `names` as whole components (e.g. "classifier" matches
    "classifier.out_proj.weight" but not "my_classifier.weight"). A name that matches nothing is not an error: a
    bare model or an LM (its head is the tied embedding) has no new task head to train."""
    for name, p in model.named_parameters():
        if any(has_component(name, n) for n in names):
            p.requires_grad_(True)


def _check_top_k(cfg) -> None:
    if cfg.top_k < 1:
        raise ValueError(f"method.top_k must be >= 1, got {cfg.top_k}")


METHODS = (
    Method("full", "every parameter (Fine-Tune)", (), lambda model, cfg: None, trains_all=True),
    Method("ft_top", "the last `top_k` transformer layers only (FT^Top2 with top_k=2)", ("top_k", "train_also"),
           lambda model, cfg: unfreeze_top_layers(model, cfg.top_k), _check_top_k),
    Method("bitfit", "bias vectors only (BitFit)", ("train_also",), lambda model, cfg: unfreeze_biases(model)),
)
