"""Settings, timing, memory and machine facts shared by the benchmark jobs."""
from __future__ import annotations

import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping

import torch
from torch import nn


@dataclass
class Settings:
    """Everything a benchmark run depends on; `--set name=value` overrides any field (tuples: comma-separated)."""
    tiny: bool = False
    threads: int = 0  # torch threads in every job; 0 = the cores this process may use
    warmup: int = 2  # untimed calls before the timed ones, per configuration
    repeats: int = 7  # timed calls per configuration; the median is reported
    sgemm_n: int = 2048  # the reference sgemm is n x n x n
    # LoRA as the paper's GPT-2 runs (q, v, r=8); PEFT gets the same targets, rank, alpha and dropout
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("q", "v")
    adapter_r: int = 8  # Adapter^H / Adapter^L bottleneck
    lr: float = 1e-5
    # 1. training step
    dec_batch: int = 4
    dec_seq: int = 128
    enc_batch: int = 16
    enc_seq: int = 128
    mem_steps: int = 3  # steps after the warm-up in each peak-memory process
    # 2. inference latency (GPT-2 M architecture, random weights)
    lat_batches: tuple[int, ...] = (1, 16)
    lat_seqs: tuple[int, ...] = (16, 64)
    # 3. many adapters
    adapters: int = 8
    mixed_rows: int = 16
    mixed_seq: int = 64
    gen_prompt: int = 16  # many adapters while generating: prompt tokens per row, then greedy new tokens (KV cache)
    gen_new_tokens: int = 16

    @classmethod
    def for_mode(cls, tiny: bool) -> "Settings":
        if not tiny:
            return cls()
        return cls(tiny=True, threads=1, warmup=1, repeats=2, sgemm_n=256, dec_batch=2, dec_seq=16, enc_batch=2,
                   enc_seq=16, mem_steps=1, lat_batches=(1, 16), lat_seqs=(8, 32), mixed_rows=16, mixed_seq=8,
                   gen_prompt=4, gen_new_tokens=4)

    def override(self, assignments: list[str]) -> "Settings":
        types = {f.name: f.type for f in fields(self)}
        changes = {}
        for item in assignments:
            name, sep, value = item.partition("=")
            if not sep or name not in types:
                raise ValueError(f"--set {item!r}: expected name=value with name one of {', '.join(types)}")
            current = getattr(self, name)
            if isinstance(current, tuple):
                kind = type(current[0]) if current else str
                changes[name] = tuple(kind(v) for v in value.split(",") if v)
            elif isinstance(current, bool):
                changes[name] = value.lower() in ("1", "true", "yes")
            else:
                changes[name] = type(current)(value)
        return replace(self, **changes)

    def resolved_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------- timing
def time_interleaved(runs: Mapping[str, Callable[[], object]], warmup: int, repeats: int,
                     prepare: Mapping[str, Callable[[], object]] | None = None) -> dict[str, list[float]]:
    """Seconds of each timed call, configurations interleaved round-robin (every other round reversed), so a drift
    in the load of a shared machine hits every configuration alike. prepare[name] runs untimed before each call."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            if prepare and name in prepare:
                prepare[name]()
            t0 = time.perf_counter()
            runs[name]()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def sgemm(n: int, warmup: int = 1, repeats: int = 5) -> dict:
    """FLOP/s of an n x n x n float32 matmul on this process's threads: the reference for model FLOP utilisation."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    times = time_interleaved({"mm": lambda: torch.mm(a, b)}, warmup, repeats)["mm"]
    return {"n": n, "median_s": median(times), "flops_per_s": 2 * n ** 3 / median(times),
            "best_flops_per_s": 2 * n ** 3 / min(times)}


def matmul_params(model: nn.Module) -> int:
    """N of 2N FLOP per token: weights of every nn.Linear / GPT-2 Conv1D (the LM head included, even when tied to the
    embedding); embedding lookups, norms, biases and attention scores are left out."""
    seen, n = set(), 0
    for m in model.modules():
        if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":
            if id(m.weight) not in seen:
                seen.add(id(m.weight))
                n += m.weight.numel()
    return n


# ------------------------------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def reset_peak_rss() -> bool:
    """Set this process's peak RSS (VmHWM) to its current RSS (Linux /proc/self/clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        kb = kb / 1024 if sys.platform == "darwin" else kb
    return kb / 1024


# ------------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1)) / 2 ** 20, 1)
    except (OSError, AttributeError):
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gb": mem_gb, "platform": platform.platform(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft", "safetensors", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ------------------------------------------------------------------------------------------------- module swapping
@dataclass
class Swap:
    """Variants of one model that share its base weights: each is a set of wrapper modules (LoRALinear, WithAdapter,
    MultiLoRALinear) around the same base projections, swapped in and out with setattr (no weight is copied)."""
    model: nn.Module
    variants: dict[str, dict[str, nn.Module]] = field(default_factory=dict)
    originals: dict[str, nn.Module] = field(default_factory=dict)
    installed: str | None = None

    def capture(self, name: str, build: Callable[[nn.Module], object]) -> dict[str, nn.Module]:
        """Run build(model) (which wraps modules in place), keep the wrappers as variant `name`, restore the model."""
        self.restore()
        before = dict(self.model.named_modules())
        build(self.model)
        changed = {p: m for p, m in self.model.named_modules() if p in before and before[p] is not m}
        for path in changed:
            self.originals.setdefault(path, before[path])
        self.variants[name] = changed
        self._put({p: before[p] for p in changed})
        return changed

    def install(self, name: str | None) -> None:
        if self.installed == name:
            return
        self.restore()
        if name is not None:
            self._put(self.variants[name])
            self.installed = name

    def restore(self) -> None:
        if self.installed is not None:
            self._put({p: self.originals[p] for p in self.variants[self.installed]})
            self.installed = None

    def _put(self, modules: Mapping[str, nn.Module]) -> None:
        for path, module in modules.items():
            parent, _, child = path.rpartition(".")
            setattr(self.model.get_submodule(parent), child, module)
