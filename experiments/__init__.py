"""Hydra entry points and the glue between `lora/`, transformers and datasets (see docs/DESIGN.md)."""
