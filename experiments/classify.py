"""The classification job (GLUE-style tasks): the model's own sequence-classification loss, metrics from the task."""
from __future__ import annotations

import time

import torch
from torch import nn

from experiments import data, distributed
from experiments.rundir import RunDir
from experiments.tasks import TaskData


@torch.no_grad()
def evaluate(model: nn.Module, enc: data.Encoded, task: TaskData, batch_size: int, pad_id: int,
             prefix: str) -> dict[str, float]:
    """{prefix}_loss and {prefix}_<metric> (accuracy, f1, ...) over every example of `enc`."""
    was_training = model.training
    model.eval()
    preds, loss_sum = [], 0.0  # loss_sum: a device tensor after the first batch, read once at the end (no sync)
    for idx in data.eval_batches(enc, batch_size):
        out = model(**distributed.to_device(data.collate(enc, idx, pad_id), model))
        loss_sum = loss_sum + out.loss.detach().double() * len(idx)
        logits = out.logits  # (B, num_labels)
        preds.append((logits.squeeze(-1) if task.regression else logits.argmax(-1), idx))
    model.train(was_training)
    order = [i for _, idx in preds for i in idx]
    flat = torch.cat([p for p, _ in preds]).tolist()
    by_index = dict(zip(order, flat))
    pred = [by_index[i] for i in range(len(enc))]
    gold = enc.labels.tolist()
    metrics = {f"{prefix}_loss": float(loss_sum) / max(len(enc), 1)}
    metrics |= {f"{prefix}_{k}": v for k, v in task.metrics(pred, gold).items()}
    return metrics


def evaluate_all(model, sets: dict[str, data.Encoded], task: TaskData, batch_size: int, pad_id: int) -> dict:
    out = {}
    for prefix, enc in sets.items():
        out |= evaluate(model, enc, task, batch_size, pad_id, prefix)
    return out


class ClassificationJob:
    """GLUE-style tasks: the model's own sequence-classification loss; metrics from the task."""

    max_steps_cap = None

    def __init__(self, tokenizer, task: TaskData, cfg):
        self.task, self.cfg = task, cfg
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.train_set = data.encode(task.train, tokenizer, cfg.task.max_seq_len, task.regression)
        self.eval_sets = {p: data.encode(ex, tokenizer, cfg.task.max_seq_len, task.regression)
                          for p, ex in task.evals.items()}
        if task.val:
            self.eval_sets["val"] = data.encode(task.val, tokenizer, cfg.task.max_seq_len, task.regression)
        self.deviations: list[str] = []

    def __len__(self) -> int:
        return len(self.train_set)

    def batch(self, idx):
        return data.collate(self.train_set, idx, self.pad_id)

    def lengths(self) -> list[int]:
        return data.token_lengths(self.train_set)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        return model(**distributed.to_device(batch, model)).loss

    def evaluate(self, model: nn.Module) -> dict:
        return evaluate_all(model, self.eval_sets, self.task, self.cfg.train.eval_batch_size, self.pad_id)

    def final(self, model: nn.Module, run: RunDir) -> tuple[dict, dict, list[str]]:
        t_eval = time.perf_counter()
        metrics = self.evaluate(model)
        eval_s = time.perf_counter() - t_eval
        n_eval = sum(len(e) for e in self.eval_sets.values())
        return metrics, {"eval_s": eval_s, "s_per_eval_example": eval_s / max(n_eval, 1)}, []
