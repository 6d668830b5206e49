"""Hydra entry points and the glue between `lora/`, transformers and datasets (see ../shared/DESIGN.md)."""
