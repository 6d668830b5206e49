"""Decoder-side pieces of a generation run: token loss, val_loss, batched beam search, predictions and scores.

The loop (experiments/loop.py) trains through a `GenerationJob`; after the last step it checkpoints, then
`GenerationJob.final` computes val_loss, decodes every grouped test input and scores the predictions, so a run
killed while generating resumes straight into generation. Files written into the run directory (atomically):

    predictions.txt  one generated text per grouped test input, in the order of references.txt
    references.txt   the references of each input, one per line, inputs separated by an empty line (the
                     e2e-metrics format): `python -m experiments.metrics e2e --refs references.txt --hyps predictions.txt`
    inputs.jsonl     per input: its source (the linearised MR/triples) and subset (WebNLG seen/unseen)

Timing on this machine: `python -m benchmarks.generation` (s per LoRA step, s per generated example by beam).

Decoding: HF `generate` with the task's `generation` settings capped by the scale (beam search, length penalty,
no-repeat-ngram, max new tokens), prompts left-padded and sorted by length into batches, each prompt run once and
its KV cache repeated for its beams (prompt_cache); a text ends at EOS or at the first newline (every vocabulary
token holding a newline also stops the beam).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from experiments import data, distributed
from experiments.rundir import RunDir, atomic_write_text
from experiments.schemas import GenerationConfig
from experiments.tasks.generation import GenTaskData, score

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 60.0  # off a terminal (a log file), a progress line at most this often


# --------------------------------------------------------------------------------------------- loss
def lm_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy of next-token logits (B, T, V) against labels (B, T) (-100 = not a target);
    position t predicts token t + 1. smoothing > 0: label smoothing as in microsoft/LoRA's GPT-2 training."""
    logits = logits[:, :-1].float()  # (B, T-1, V)
    target = labels[:, 1:]  # (B, T-1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                           label_smoothing=smoothing)


# decoders whose token logits are exactly lm_head(last hidden state): no final soft-capping or logit scaling
_PLAIN_HEAD = ("llama", "gpt2")


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor], smoothing: float = 0.0) -> torch.Tensor:
    """lm_loss of the model's logits, the LM head applied only where a target is: the prompt and padding positions
    (65% of the positions of an E2E batch of 8) skip the (d × vocab) projection and the vocabulary softmax, forward
    and backward: forward + backward of a LoRA batch of SmolLM2-135M on E2E takes 5.1 s instead of 6.7 s (1 thread).
    The full path instead for PrefixEmbed/PrefixLayer (hooks that rewrite the whole forward) and for a DDP wrapper
    (its forward is what synchronises the gradients)."""
    batch = distributed.to_device(batch, model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _PLAIN_HEAD or model._forward_pre_hooks or model._forward_hooks:
        out = model(input_ids=ids, attention_mask=mask)  # no labels: no HF loss
        return lm_loss(out.logits, batch["labels"], smoothing)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, T, d)
    target = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = target != -100  # (B, T-1)
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()  # (targets, V)
    return F.cross_entropy(logits, target[keep], label_smoothing=smoothing)


@torch.no_grad()
def val_loss(model: nn.Module, enc: data.LMEncoded, batch_size: int, pad_id: int) -> float:
    """Mean NLL per target token over every example of `enc` (plain, no label smoothing)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0  # total: a device tensor after the first batch, read once at the end (no sync per batch)
    order = sorted(range(len(enc)), key=lambda i: len(enc.features[i]["input_ids"]))
    for k in range(0, len(order), batch_size):
        batch = data.collate_lm(enc, order[k:k + batch_size], pad_id)
        n = int((batch["labels"][:, 1:] != -100).sum())  # counted on the CPU batch, before forward_loss moves it
        total = total + forward_loss(model, batch).detach().double() * n
        tokens += n
    model.train(was_training)
    return float(total) / max(tokens, 1)


# --------------------------------------------------------------------------------------------- decoding
def effective_settings(gen: GenerationConfig, gen_scale) -> tuple[GenerationConfig, list[str]]:
    """The task's decoding settings under the scale's caps, and a deviation per cap that bites."""
    out, deviations = replace(gen), []
    if gen_scale.max_num_beams is not None and gen.num_beams > gen_scale.max_num_beams:
        out.num_beams = gen_scale.max_num_beams
        deviations.append(f"beam search with {out.num_beams} beams instead of {gen.num_beams} (scale cap)")
    if gen_scale.max_new_tokens is not None and gen.max_new_tokens > gen_scale.max_new_tokens:
        out.max_new_tokens = gen_scale.max_new_tokens
        deviations.append(f"at most {out.max_new_tokens} generated tokens instead of {gen.max_new_tokens} (scale cap)")
    return out, deviations


def validate_settings(gen: GenerationConfig) -> None:
    for key in ("num_beams", "max_new_tokens", "batch_size"):
        if getattr(gen, key) < 1:
            raise ValueError(f"task.generation.{key} must be >= 1, got {getattr(gen, key)}")
    if gen.no_repeat_ngram_size < 0:
        raise ValueError(f"task.generation.no_repeat_ngram_size must be >= 0, got {gen.no_repeat_ngram_size}")


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus every vocabulary token whose text holds a newline (a reference is one line)."""
    vocab = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(vocab)])
    stops = {tokenizer.eos_token_id} | {i for i, t in enumerate(texts) if "\n" in t}
    return sorted(s for s in stops if s is not None)


def clean(text: str) -> str:
    """The first line, stripped: what a prediction is."""
    return text.split("\n", 1)[0].strip()


def uses_prefix(model: nn.Module) -> bool:
    """PrefixEmbed/PrefixLayer: hooks on the forward; they decode through lora.prefix.cached_decoding."""
    return hasattr(model, "prefix_positions")


def prompt_cache(model: nn.Module, batch: dict[str, torch.Tensor], num_beams: int):
    """The KV cache of every prompt token but the last, computed once per prompt and repeated for its beams: HF's
    beam search would run the prompt through the model once per beam (a quarter of an E2E decode at beam 4).
    generate() then starts from it and runs only the last prompt token. Positions as HF derives them from the
    left-padded mask (padding at 0), so the texts are the same as without it (tests/test_generation.py; the 630-MR
    runs of e2e_full_test decoded Table 3's 40-MR runs' texts exactly). None for one-token prompts (nothing to cache)."""
    if batch["input_ids"].shape[1] < 2:
        return None
    ids, mask = batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                  logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(num_beams)  # (B * beams, heads, T - 1, head_dim) per layer, beams of a prompt adjacent
    return cache


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: Sequence[list[int]], gen: GenerationConfig, pad_id: int,
             stops: Optional[list[int]] = None) -> list[str]:
    """One text per prompt (prompt token ids), in prompt order. Prompts are sorted by length and left-padded into
    batches of gen.batch_size, decoded with a KV cache; for prefix methods the cache starts with the prefix's own
    keys and values, behind l_p placeholder tokens (lora.prefix.cached_decoding)."""
    from transformers import GenerationConfig as HFGenerationConfig

    from lora.prefix import cached_decoding

    stops = stops if stops is not None else stop_token_ids(tokenizer)
    beam = {"length_penalty": gen.length_penalty} if gen.num_beams > 1 else {}  # greedy has no length penalty
    hf = HFGenerationConfig(num_beams=gen.num_beams, no_repeat_ngram_size=gen.no_repeat_ngram_size,
                            repetition_penalty=gen.repetition_penalty, max_new_tokens=gen.max_new_tokens,
                            do_sample=False, eos_token_id=stops, pad_token_id=pad_id, use_cache=True, **beam)
    was_training = model.training
    model.eval()
    out: list[Optional[str]] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    l_p = model.prefix_positions.l_p if uses_prefix(model) else 0
    bar = tqdm(total=len(prompts), desc="generate", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    t0 = last = time.perf_counter()
    for k in range(0, len(order), gen.batch_size):
        chunk = order[k:k + gen.batch_size]
        batch = data.left_pad([prompts[i] for i in chunk], pad_id)
        if l_p:  # (B, l_p + T): first the placeholders the prefix cache stands for (attended), then the padded prompts
            batch = {k: torch.cat([torch.full((len(chunk), l_p), pad_id if k == "input_ids" else 1), v], dim=1)
                     for k, v in batch.items()}
        batch = distributed.to_device(batch, model)
        if uses_prefix(model):
            with cached_decoding(model, len(chunk) * gen.num_beams) as cache:
                seqs = model.generate(**batch, past_key_values=cache, generation_config=hf)  # (B, T + new)
        else:
            cache = prompt_cache(model, batch, gen.num_beams)
            seqs = model.generate(**batch, past_key_values=cache, generation_config=hf)
        for i, row in zip(chunk, seqs[:, batch["input_ids"].shape[1]:].tolist()):
            cut = next((j for j, t in enumerate(row) if t in stops), len(row))
            out[i] = clean(tokenizer.decode(row[:cut], skip_special_tokens=True))
        bar.update(len(chunk))
        done, now = k + len(chunk), time.perf_counter()
        if bar.disable and now - last >= PROGRESS_EVERY_S and done < len(order):
            each = (now - t0) / done
            log.info("generated %d/%d inputs, %.2f s each, %d s left", done, len(order), each,
                     each * (len(order) - done))
            last = now
    bar.close()
    model.train(was_training)
    return out  # type: ignore[return-value]


def references_text(refs: Sequence[Sequence[str]]) -> str:
    """The e2e-metrics reference format: each input's references on consecutive lines, a blank line between inputs."""
    return "\n\n".join("\n".join(r.replace("\n", " ") for r in rs) for rs in refs) + "\n"


# --------------------------------------------------------------------------------------------- the job
class GenerationJob:
    """What the training loop needs from a generation task: training batches, the loss, mid-run evaluation
    (val_loss only: generating is the expensive part) and the final evaluation (val_loss + generation + scores)."""

    def __init__(self, tokenizer, task: GenTaskData, cfg):
        self.tokenizer, self.task, self.cfg = tokenizer, task, cfg
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        t = cfg.task
        self.train_set = data.encode_lm(task.train, tokenizer, t.max_seq_len, t.separator, t.target_prefix)
        self.val_set = data.encode_lm(task.val, tokenizer, t.max_seq_len, t.separator, t.target_prefix)
        self.gen, self.deviations = effective_settings(cfg.task.generation, cfg.scale.generation)
        validate_settings(self.gen)
        for name, enc in (("training", self.train_set), ("validation", self.val_set)):
            if enc.truncated:
                self.deviations.append(f"{task.name}: {enc.truncated} {name} texts cut to task.max_seq_len="
                                       f"{cfg.task.max_seq_len} tokens")
        self.val_batch_size = min(cfg.train.eval_batch_size, 16)  # (B, T, vocab) logits: keep them small
        self.max_steps_cap = cfg.scale.generation.max_steps

    def __len__(self) -> int:
        return len(self.train_set)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        return data.collate_lm(self.train_set, idx, self.pad_id)

    def lengths(self) -> list[int]:
        return data.token_lengths(self.train_set)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return forward_loss(model, batch, self.cfg.train.label_smoothing)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"val_loss": val_loss(model, self.val_set, self.val_batch_size, self.pad_id)} if len(self.val_set) else {}

    def final(self, model: nn.Module, run: RunDir) -> tuple[dict, dict, list[str]]:
        """(metrics, timing, notes): val_loss, predictions.txt/references.txt/inputs.jsonl, the scores."""
        t0 = time.perf_counter()
        metrics = self.evaluate(model)
        val_s = time.perf_counter() - t0
        inputs = self.task.evals["eval"]
        prompts = [data.prompt_ids(self.tokenizer, g.source, self.cfg.task.separator) for g in inputs]
        t1 = time.perf_counter()
        merged = _merge_lora(model)  # zero-latency inference: W + BA folded in while decoding
        try:
            hyps = generate(model, self.tokenizer, prompts, self.gen, self.pad_id)
        finally:
            if merged:
                _unmerge_lora(model)
        gen_s = time.perf_counter() - t1
        atomic_write_text(run.path / "predictions.txt", "".join(h + "\n" for h in hyps))
        atomic_write_text(run.path / "references.txt", references_text([g.refs for g in inputs]))
        atomic_write_text(run.path / "inputs.jsonl", "".join(
            json.dumps({"source": g.source, "subset": g.subset, "n_refs": len(g.refs)}, ensure_ascii=False) + "\n"
            for g in inputs))
        t2 = time.perf_counter()
        notes: list[str] = []
        for part, subset in (self.task.subsets or {"": None}).items():
            idx = [i for i, g in enumerate(inputs) if subset is None or g.subset == subset]
            if not idx:
                notes.append(f"no {subset} inputs among the {len(inputs)} generated: no eval_{part}_* metrics")
                continue
            scores, note = score(self.task.metric_kind, [inputs[i].refs for i in idx], [hyps[i] for i in idx])
            if note and note not in notes:
                notes.append(note)
            key = f"eval_{part}_" if part else "eval_"
            metrics |= {f"{key}{k}": float(v) for k, v in scores.items()}
        score_s = time.perf_counter() - t2
        timing = {"val_s": val_s, "generate_s": gen_s, "s_per_generated_example": gen_s / max(len(inputs), 1),
                  "score_s": score_s, "generated_inputs": len(inputs), "num_beams": self.gen.num_beams,
                  "generate_batch_size": self.gen.batch_size}
        return metrics, timing, notes


def _merge_lora(model: nn.Module) -> bool:
    from lora.layers import lora_modules, merge_lora

    if not lora_modules(model):
        return False
    merge_lora(model)
    return True


def _unmerge_lora(model: nn.Module) -> None:
    from lora.layers import unmerge_lora

    unmerge_lora(model)
