"""The training loop: AdamW, linear warmup/decay, grad accumulation, evaluation, resume.

What is task-specific lives in a job (the `Job` protocol): experiments.classify.ClassificationJob (GLUE:
sequence-classification loss, accuracy-type metrics) or experiments.generate.GenerationJob (E2E/WebNLG/DART: target-token loss, val_loss, then beam search and
the generation metrics). A job gives the training batches, the loss of one batch, a mid-run evaluation and the
final one. The run is checkpointed after its last step too, so a kill during the final evaluation resumes straight
into it. Off a terminal (SLURM, nohup) there is no progress bar: a line every `train.progress_every` steps goes to
the log (Hydra's train.log and stdout) instead.

Data order is a pure function of (seed, epoch): micro-batch m of the run is batch m % B of the permutation of
epoch m // B (B batches per epoch; with train.group_by_length, of the epoch's length-grouped batches, see Order).
A resumed run recomputes it and continues at micro-batch step * grad_accum, so, with the optimizer, scheduler and
RNG states restored from the checkpoint, it ends exactly where an uninterrupted run ends (on CPU, same threads).

Under torchrun each rank trains on its slice of every micro-batch (experiments/distributed.py); rank 0 alone
evaluates and writes the run directory.
"""
from __future__ import annotations

import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch
from torch import nn
from tqdm import tqdm

from experiments import distributed, precision
from experiments.rundir import RunDir, rng_state, set_rng_state

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    status: str  # success | diverged
    metrics: dict
    steps: int  # optimizer steps done
    total_steps: int
    resumed_from: int = 0
    error: Optional[str] = None
    deviations: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)


def set_seed(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> int:
    """threads > 0 as given; 0 = the cores this process may run on (not the machine's, under a CPU quota)."""
    n = threads if threads > 0 else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def plan_steps(n_train: int, train_cfg, scale_cfg, extra_cap: Optional[int] = None) -> tuple[int, int, list[str]]:
    """(total optimizer steps, micro-batches per epoch, deviations): max_steps > 0 wins over epochs; the
    scale's max_steps (and `extra_cap`, the scale's cap for the task family) caps both."""
    total, per_epoch = requested_steps(n_train, train_cfg)
    deviations = []
    caps = [c for c in (scale_cfg.max_steps, extra_cap) if c is not None]
    if caps and total > min(caps):
        deviations.append(f"trained {min(caps)} of the {total} optimizer steps the config asks for "
                          f"(scale {scale_cfg.name} cap)")
        total = min(caps)
    return max(total, 1), per_epoch, deviations


def requested_steps(n_train: int, train_cfg) -> tuple[int, int]:
    """(optimizer steps the train config asks for, micro-batches per epoch), before any scale cap."""
    if n_train == 0:
        raise ValueError("no training examples")
    per_epoch = math.ceil(n_train / train_cfg.batch_size)
    total = train_cfg.max_steps if train_cfg.max_steps > 0 else math.ceil(train_cfg.epochs * per_epoch / train_cfg.grad_accum)
    return max(total, 1), per_epoch


def plan_warmup(train_cfg, total: int, requested: int) -> tuple[int, list[str]]:
    """Warmup steps: warmup_steps when > 0 (shrunk in proportion when a scale cap cut the run from `requested` to
    `total` steps, and never past the last step), else warmup_ratio of the total."""
    if train_cfg.warmup_steps <= 0:
        return int(train_cfg.warmup_ratio * total), []
    warmup, deviations = train_cfg.warmup_steps, []
    if total < requested:
        warmup = round(train_cfg.warmup_steps * total / requested)
        deviations.append(f"warmup of {warmup} steps: train.warmup_steps={train_cfg.warmup_steps} scaled by the "
                          f"step cap ({total}/{requested})")
    if warmup >= total:
        deviations.append(f"warmup cut to {total - 1} steps: train.warmup_steps={train_cfg.warmup_steps} is not "
                          f"shorter than the run ({total} steps)")
        warmup = total - 1
    return warmup, deviations


class Order:
    """Micro-batch m -> the example indices it holds (see the module docstring). With `lengths` and `group` > 0
    (train.group_by_length) each epoch's permutation is cut into groups of `group` batches, each group sorted by
    length (longest first) and cut into batches, and the epoch's batches shuffled with the same generator."""

    def __init__(self, n: int, batch_size: int, seed: int, lengths: Optional[list[int]] = None, group: int = 0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.lengths, self.group = (lengths, group) if group > 0 and lengths is not None else (None, 0)
        self.per_epoch = math.ceil(n / batch_size)
        self._epoch, self._batches = -1, None

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)  # own generator: dropout RNG untouched
        perm, b = torch.randperm(self.n, generator=g).tolist(), self.batch_size
        if not self.group:
            return [perm[i:i + b] for i in range(0, self.n, b)]
        batches, span = [], self.group * b
        for start in range(0, self.n, span):
            chunk = sorted(perm[start:start + span], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + b] for i in range(0, len(chunk), b)]
        # the short remainder batch keeps the last position, as without grouping (every other batch is full)
        full = [x for x in batches if len(x) == b]
        rest = [x for x in batches if len(x) < b]
        return [full[i] for i in torch.randperm(len(full), generator=g).tolist()] + rest

    def batch(self, m: int) -> list[int]:
        epoch, pos = divmod(m, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        return self._batches[pos]


def build_optimizer(model: nn.Module, train_cfg, total: int, warmup: int, lr_ratio_b: float = 1.0):
    """AdamW (fused) over trainable parameters only; no weight decay on biases and norm weights (1-D tensors);
    linear warmup over `warmup` steps (plan_warmup), then linear decay to 0. lr_ratio_b != 1: LoRA's B matrices
    train at that multiple of the learning rate (LoRA+)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters: did the method freeze everything?")
    params = [p for _, p in named]
    is_b = {id(p) for n, p in named if lr_ratio_b != 1.0 and n.rpartition(".")[2].startswith("lora_B")}
    decay = train_cfg.weight_decay
    groups = [{"params": [p for p in params if p.ndim >= 2 and id(p) not in is_b], "weight_decay": decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
              {"params": [p for p in params if id(p) in is_b], "weight_decay": decay, "lr": train_cfg.lr * lr_ratio_b}]
    # fused: one kernel over all tensors instead of ~10 per tensor; 4.4x faster than the default on CPU (108M
    # parameters, 1 thread: 0.16 s vs 0.71 s a step), which full fine-tuning pays every step
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=train_cfg.lr, eps=train_cfg.adam_eps,
                                  fused=fused)
    # LambdaLR scales every group's own initial lr by the same factor, so B keeps its ratio through warmup and decay

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Job(Protocol):
    """What the loop needs from a task family (experiments/classify.py, experiments/generate.py)."""

    max_steps_cap: Optional[int]  # a cap of the job's own on the optimizer steps (None: the config's)
    deviations: list[str]  # what the job changed from the config (caps that bit), for final.json

    def __len__(self) -> int: ...  # training examples

    def batch(self, idx: list[int]) -> dict[str, torch.Tensor]: ...  # a collated training batch (on the CPU)

    def lengths(self) -> list[int]: ...  # each training example's length in tokens (train.group_by_length)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...  # the mean loss

    def evaluate(self, model: nn.Module) -> dict: ...  # a mid-run evaluation's metrics

    def final(self, model: nn.Module, run: RunDir) -> tuple[dict, dict, list[str]]: ...  # metrics, timing, notes


class BestSoFar:
    """train.select_best: the trainable parameters at the evaluation that scored best on `key` so far (a copy, on
    the parameters' device; LoRA's are small, a full fine-tune's are the model's size)."""

    PREFIX = "best::"  # their names in a checkpoint, beside the current parameters

    def __init__(self, key: str):
        self.key, self.value, self.step, self.tensors = key, None, None, {}
        self.lower = "loss" in key

    def offer(self, metrics: dict, step: int, trainable: dict[str, torch.Tensor]) -> None:
        v = metrics.get(self.key)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"train.select_best={self.key!r}: the evaluation has no finite {self.key!r} "
                             f"(it has {sorted(metrics)})")
        if self.value is None or (v < self.value if self.lower else v > self.value):
            self.value, self.step = float(v), step
            self.tensors = {n: p.detach().clone() for n, p in trainable.items()}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return ({self.PREFIX + n: t for n, t in self.tensors.items()},
                {"best_value": self.value, "best_step": self.step})

    def load(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        self.value, self.step = state.get("best_value"), state.get("best_step")
        self.tensors = {n[len(self.PREFIX):]: t for n, t in tensors.items() if n.startswith(self.PREFIX)}


def _hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def loss_units(batch: dict) -> int:
    """What a job's loss is the mean over: target tokens of a causal-LM batch (labels (B, T), position t predicts
    t + 1, -100 = not a target; experiments.generate.lm_loss), else rows (labels (B,))."""
    labels = batch["labels"]
    return int((labels[:, 1:] != -100).sum()) if labels.ndim == 2 else len(labels)


def train(model: nn.Module, job: Job, cfg, run: RunDir, tracker, config_hash: str) -> LoopResult:
    tc = cfg.train

    total, _, deviations = plan_steps(len(job), tc, cfg.scale, job.max_steps_cap)
    warmup, warmup_deviations = plan_warmup(tc, total, requested_steps(len(job), tc)[0])
    deviations += job.deviations + warmup_deviations
    order = Order(len(job), tc.batch_size, cfg.seed, job.lengths() if tc.group_by_length else None,
                  tc.group_by_length)
    optimizer, scheduler = build_optimizer(model, tc, total, warmup, cfg.method.lr_ratio_b)
    prec = precision.setup(tc, next(model.parameters()).device, cfg.scale.name)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start, window = 0, [0.0, 0]  # window: (loss sum, steps) since the last train-loss row
    last_loss, train_s_before = float("nan"), 0.0
    main = distributed.is_main()

    best = BestSoFar(tc.select_best) if tc.select_best else None
    ckpt = run.load_checkpoint()
    if ckpt is not None:
        step, tensors, state = ckpt
        if state.get("config_hash") != config_hash:
            raise ValueError(f"{run.ckpt} was written by a different configuration; delete it to start this run over")
        missing = set(trainable) - set(tensors)
        if missing:
            raise ValueError(f"{run.ckpt} lacks {sorted(missing)[:3]}; delete it to start this run over")
        with torch.no_grad():
            for name, p in trainable.items():
                p.copy_(tensors[name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        prec.load_state_dict(state.get("precision", {}))
        rngs = state.get("rng_by_rank", [state["rng"]])
        if distributed.rank() < len(rngs):
            set_rng_state(rngs[distributed.rank()])
        else:  # more processes than wrote the checkpoint: a fresh dropout stream for the new ranks
            set_seed(cfg.seed + distributed.SEED_STRIDE * distributed.rank() + step)
        if best is not None:
            best.load(tensors, state)
        start, window = step, list(state["window"])
        last_loss, train_s_before = state.get("last_loss", last_loss), state.get("train_s", 0.0)
        if main:
            run.truncate_metrics(step, final_step=step >= total)
            print(f"resuming {run.path} from step {step}/{total}" + (" (training done: final evaluation only)"
                                                                     if step >= total else ""), flush=True)
    else:
        set_seed(cfg.seed + distributed.SEED_STRIDE * distributed.rank())  # dropout: one stream per rank

    model.train()
    ddp = distributed.wrap(model)  # the forward of training; `model` for evaluation and checkpoints
    on_terminal = sys.stderr.isatty()
    bar = tqdm(total=total, initial=start, disable=not (main and on_terminal), desc="train", dynamic_ncols=True)
    progress_every = tc.progress_every if tc.progress_every > 0 else max(tc.log_every, 1)
    t_train = time.perf_counter()
    result = LoopResult("success", {}, start, total, resumed_from=start, deviations=deviations)
    window[0] = torch.tensor(float(window[0]), dtype=torch.float64, device=next(model.parameters()).device)
    for step in range(start, total):
        optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), dtype=torch.float64, device=window[0].device)
        for k in range(tc.grad_accum):
            rows = order.batch(step * tc.grad_accum + k)
            mine = distributed.shard(rows)
            # a rank left without rows (a batch smaller than the world) still joins DDP's all-reduce, with weight 0
            batch = job.batch(mine or rows[:1])
            with distributed.no_sync(ddp, sync=k == tc.grad_accum - 1):
                with prec.autocast():
                    loss = job.loss(ddp, batch)
                # (fp64, on the device: no sync here) the loss of the global micro-batch; scale: this rank's factor
                loss_value, scale = distributed.global_loss(loss, loss_units(batch) if mine else 0)
                prec.backward(loss * scale / tc.grad_accum)  # scale: 1.0 in one process (x * 1.0 == x exactly)
            step_loss += loss_value / tc.grad_accum
        prec.step(optimizer, list(trainable.values()), tc.max_grad_norm)
        scheduler.step()
        done = step + 1
        window[0] += step_loss
        window[1] += 1
        bar.update(1)
        logs = done % max(tc.log_every, 1) == 0 or done == total
        saves = tc.checkpoint_every > 0 and (done % tc.checkpoint_every == 0 or done == total)
        # a host sync only at log and checkpoint steps (and for a progress line off a terminal); under torchrun
        # global_loss all-reduces every micro-batch's loss anyway
        if (logs or saves) and not math.isfinite(float(window[0])):
            bar.close()
            value = float(window[0])
            result.status, result.steps = "diverged", done
            result.error = (f"training loss became {value} by step {done} (checked every {max(tc.log_every, 1)} "
                            f"steps; lr={tc.lr})")
            result.metrics = {"train_loss": value, "diverged_by_step": done}
            tracker.log({"step": done, "split": "train", "loss": value})
            return result
        if logs:
            last_loss = float(window[0]) / window[1]
            tracker.log({"step": done, "split": "train", "loss": last_loss, "lr": scheduler.get_last_lr()[0],
                         "epoch": done * tc.grad_accum / order.per_epoch})
            bar.set_postfix(loss=f"{last_loss:.4f}")
            window = [torch.zeros_like(window[0]), 0]
        if main and not on_terminal and (done % progress_every == 0 or done == total):
            elapsed = time.perf_counter() - t_train
            log.info("%s: step %d/%d, loss %.4f, lr %.3g, %.2f s/step, %s left", run.path.name, done, total,
                     float(step_loss), scheduler.get_last_lr()[0], elapsed / (done - start),
                     _hms(elapsed / (done - start) * (total - done)))
        epoch_ends = tc.eval_every_epoch and (done * tc.grad_accum) // order.per_epoch > \
            (step * tc.grad_accum) // order.per_epoch
        if (epoch_ends or tc.eval_every > 0 and done % tc.eval_every == 0) and done != total and main:
            # the others wait in the next step; analysis takes the best epoch from these rows (paper appendix D)
            evaluated = job.evaluate(model)
            tracker.log({"step": done, "split": "eval", "epoch": done * tc.grad_accum / order.per_epoch, **evaluated})
            if best is not None:
                best.offer(evaluated, done, trainable)
        # after the last step too: a kill during the final evaluation resumes into it, with no training redone
        if saves:
            rngs = distributed.gather(rng_state())  # every rank's dropout stream: an exact resume
            if main:
                best_tensors, best_state = best.state() if best is not None else ({}, {})
                run.save_checkpoint(done, {n: p.detach() for n, p in trainable.items()} | best_tensors,
                                    {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                     "rng": rngs[0], "window": [float(window[0]), window[1]],
                                     "config_hash": config_hash, "precision": prec.state_dict(),
                                     "last_loss": last_loss,
                                     "train_s": train_s_before + time.perf_counter() - t_train}
                                    | ({"rng_by_rank": rngs} if len(rngs) > 1 else {}) | best_state)
        if tc.kill_after_steps and done == tc.kill_after_steps:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: a real crash, nothing gets cleaned up
    bar.close()
    train_s = time.perf_counter() - t_train
    if not main:  # rank 0 evaluates and writes; this rank is done
        result.steps, result.metrics = total, {"train_loss": last_loss}
        return result
    if best is not None:  # the last step against the best evaluation so far: the final evaluation uses the better
        best.offer(job.evaluate(model), total, trainable)
        if best.step != total:
            with torch.no_grad():
                for name, p in trainable.items():
                    p.copy_(best.tensors[name])
    final, timing, notes = job.final(model, run)
    if best is not None:  # which evaluation's parameters the final metrics and the adapter are
        final |= {"selected_step": best.step, f"selected_{best.key}": best.value}
    tracker.log({"step": total, "split": "eval", "epoch": total * tc.grad_accum / order.per_epoch, **final})
    result.steps = total
    result.metrics = final | {"train_loss": last_loss}
    result.deviations += notes
    # train_s: this process's training time; s_per_step: over every step of the run, resumed ones included
    result.timing = {"train_s": train_s, "s_per_step": (train_s_before + train_s) / max(total, 1)
                     if train_s_before else train_s / max(total - start, 1)} | timing
    return result
