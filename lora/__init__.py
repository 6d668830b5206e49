"""LoRA and the paper's baselines as a torch-only library.

    from lora import MethodConfig, apply_method, count_parameters
    model = apply_method(model, MethodConfig(name="lora", r=8, targets=["q", "v"]))

No Hydra, wandb or datasets here: this package can be lifted into another project as it is.
"""
from lora.config import MethodConfig
from lora.count import ParamCount, count_parameters
from lora.methods import apply_method, registry
from lora.multi import AdapterBank, attach_adapters

METHODS = {name: m.trains for name, m in registry().items()}  # name -> what it trains

__all__ = ["METHODS", "AdapterBank", "MethodConfig", "ParamCount", "apply_method", "attach_adapters",
           "count_parameters"]
