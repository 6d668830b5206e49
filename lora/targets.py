"""Where each role (q, k, v, o, MLP matrices) lives in each architecture family this project uses.

A role resolves to a module path relative to one transformer block, plus, for GPT-2's fused qkv projection, the slice
of its output features that belongs to the role.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

MLP_ROLES = ("mlp_in", "mlp_out", "mlp_gate")


@dataclass(frozen=True)
class Family:
    name: str
    blocks: str  # path of the nn.ModuleList of transformer blocks, relative to the bare model
    roles: dict[str, str]  # role -> module path inside one block
    fused_qkv: tuple[str, ...] = ()  # roles that are slices of one fused projection, in output order
    embeddings: str = ""  # path of the token embedding, relative to the bare model
    attn_out: str = ""  # the block's attention output projection (adapters go after it)
    mlp_out: str = ""  # the block's MLP output projection (adapters go after it)
    mlp_sublayer: str = ""  # post-LN blocks: the module computing LN(x + FFN output) (Adapter^P wraps it)


_BERT_LIKE = dict(
    blocks="encoder.layer",
    embeddings="embeddings.word_embeddings",
    attn_out="attention.output.dense",
    mlp_out="output.dense",
    mlp_sublayer="output",
)

FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert",
        roles={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "o": "attention.output.dense", "mlp_in": "intermediate.dense", "mlp_out": "output.dense"},
        **_BERT_LIKE,
    ),
    "deberta-v2": Family(
        "deberta-v2",
        roles={"q": "attention.self.query_proj", "k": "attention.self.key_proj", "v": "attention.self.value_proj",
               "o": "attention.output.dense", "mlp_in": "intermediate.dense", "mlp_out": "output.dense"},
        **_BERT_LIKE,
    ),
    "gpt2": Family(
        "gpt2",
        blocks="h",
        roles={"q": "attn.c_attn", "k": "attn.c_attn", "v": "attn.c_attn", "o": "attn.c_proj",
               "mlp_in": "mlp.c_fc", "mlp_out": "mlp.c_proj"},
        fused_qkv=("q", "k", "v"),
        embeddings="wte",
        attn_out="attn.c_proj",
        mlp_out="mlp.c_proj",
    ),
    "llama": Family(
        "llama",
        blocks="layers",
        roles={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
               "mlp_gate": "mlp.gate_proj", "mlp_in": "mlp.up_proj", "mlp_out": "mlp.down_proj"},
        embeddings="embed_tokens",
        attn_out="self_attn.o_proj",
        mlp_out="mlp.down_proj",
    ),
}
# transformers' model_type -> family
MODEL_TYPES = {"bert": "bert", "roberta": "bert", "deberta-v2": "deberta-v2", "gpt2": "gpt2", "llama": "llama"}


def family_of(model: nn.Module) -> Family:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPES:
        known = ", ".join(sorted(MODEL_TYPES))
        raise ValueError(f"model type {model_type!r} has no role map; supported model types: {known}")
    return FAMILIES[MODEL_TYPES[model_type]]


def blocks_of(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(blocks_path(model))


def expand_roles(roles: list[str] | tuple[str, ...], family: Family) -> list[str]:
    """`mlp` stands for every MLP matrix the family has; anything else must be a role of the family."""
    out: list[str] = []
    for role in roles:
        names = [r for r in MLP_ROLES if r in family.roles] if role == "mlp" else [role]
        for name in names:
            if name not in family.roles:
                has = ", ".join([*family.roles, "mlp"])
                raise ValueError(f"target role {role!r} does not exist in a {family.name} model; it has: {has}")
            if name not in out:
                out.append(name)
    return out


@dataclass(frozen=True)
class Target:
    layer: int
    path: str  # module path relative to the full model
    roles: tuple[str, ...]  # roles adapted in this module; several only for a fused qkv projection


def find_targets(model: nn.Module, roles: list[str] | tuple[str, ...]) -> list[Target]:
    """Every module to adapt for `roles`, one Target per module (fused qkv roles grouped into one Target)."""
    family = family_of(model)
    roles = expand_roles(roles, family)
    blocks_path = _blocks_path(model, family)
    targets = []
    for i in range(len(model.get_submodule(blocks_path))):
        by_path: dict[str, list[str]] = {}
        for role in roles:
            by_path.setdefault(f"{blocks_path}.{i}.{family.roles[role]}", []).append(role)
        targets += [Target(i, path, tuple(rs)) for path, rs in by_path.items()]
    return targets


def _blocks_path(model: nn.Module, family: Family) -> str:
    for name, module in model.named_modules():
        if (name == family.blocks or name.endswith("." + family.blocks)) and isinstance(module, nn.ModuleList):
            return name
    raise ValueError(f"no transformer block list {family.blocks!r} found in {type(model).__name__}")


def blocks_path(model: nn.Module) -> str:
    """Path of the block list relative to the full model (e.g. 'bert.encoder.layer')."""
    return _blocks_path(model, family_of(model))
