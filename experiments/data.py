"""Where the data lives and how raw files become lists of examples, tensors and batches.

Data root: $LORA_DATA_DIR, else `./data` in the repository (`make data`) when it exists. A task whose folder is
missing there falls back to the dataset hub (`datasets.load_dataset`); missing everywhere is an error that says
where we looked and how to provide the data.
"""
from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Example:
    a: str
    b: Optional[str]  # None for single-sentence tasks (SST-2, CoLA)
    label: float | int  # class id, or a float score for regression (STS-B)


class DataNotFound(FileNotFoundError):
    pass


class EmptyDataFile(ValueError):
    """A data file without data: 0 bytes or whitespace only, or a table with its header line and no rows."""


# --------------------------------------------------------------------------------------------- locations
def data_root() -> Optional[Path]:
    """$LORA_DATA_DIR if set (it must exist), else ./data in the repository (where `make data` puts the NLG files)
    if it exists, else None."""
    env = os.environ.get("LORA_DATA_DIR")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataNotFound(f"LORA_DATA_DIR={env} is not a directory; point it at the folder holding mnli/, glue/, "
                               "... or unset it to use the dataset hub")
        return root
    default = REPO / "data"
    return default if default.is_dir() else None


def task_folder(*parts: str) -> Optional[Path]:
    """<data root>/<parts...> if it exists, else None (the caller then tries the hub)."""
    root = data_root()
    if root is None:
        return None
    folder = root.joinpath(*parts)
    return folder if folder.exists() else None


def where_looked(*parts: str) -> str:
    root = data_root()
    return str(root.joinpath(*parts)) if root else f"$LORA_DATA_DIR/{'/'.join(parts)} (LORA_DATA_DIR unset)"


# --------------------------------------------------------------------------------------------- readers
RESTORE = "re-download it or restore it from the original download"  # the way out when a caller names none


def _first_lines(path: Path, n: int) -> list[bytes]:
    """The first n lines of `path` that hold more than whitespace (a BOM aside), read lazily: a few bytes of a
    healthy file, all of an empty one."""
    found = []
    with open(path, "rb") as f:
        for line in f:
            if line.replace(b"\xef\xbb\xbf", b"").strip():
                found.append(line)
                if len(found) == n:
                    break
    return found


def check_not_empty(path: Path, header: bool = False, restore: str = RESTORE) -> None:
    """Raise EmptyDataFile, naming `path` and the way out (`restore`), when the file is 0 bytes or whitespace only,
    or, with `header`, holds its header line and no data row (a truncated download or copy)."""
    lines = _first_lines(path, 2 if header else 1)
    if not lines:
        size = path.stat().st_size
        what = "0 bytes" if size == 0 else f"{size} bytes, whitespace only"
        raise EmptyDataFile(f"{path} is empty ({what}; a failed download or copy?); {restore}")
    if header and len(lines) < 2:
        raise EmptyDataFile(f"{path} has a header line but no data rows (a truncated download or copy?); {restore}")


def read_tsv(path: Path, column_names: Optional[list[str]] = None, restore: str = RESTORE) -> list[dict]:
    """Rows of a GLUE TSV as dicts of strings, via the `datasets` csv builder.

    GLUE TSVs are not CSV-quoted: a sentence may start with `"` and contain tabs-free text with stray quotes, so
    quoting is off (QUOTE_NONE); "NA"/"null" are words here, not missing values; MRPC's header carries a BOM.
    column_names: for header-less files (CoLA). An empty or header-only file is an EmptyDataFile whose message ends
    with `restore` (the way to get the data back).
    """
    import datasets

    if not path.is_file():
        raise DataNotFound(f"{path} not found")
    check_not_empty(path, header=not column_names, restore=restore)
    kwargs = dict(delimiter="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False,
                  encoding="utf-8-sig")
    datasets.disable_progress_bars()
    if column_names:
        kwargs |= dict(header=None, column_names=column_names)
    ds = datasets.load_dataset("csv", data_files={"rows": str(path)}, split="rows", **kwargs)
    return ds.to_list()


def read_jsonl(path: Path, restore: str = RESTORE) -> list[dict]:
    import datasets

    if not path.is_file():
        raise DataNotFound(f"{path} not found")
    check_not_empty(path, restore=restore)
    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files={"rows": str(path)}, split="rows").to_list()


def read_json_records(path: Path, restore: str = RESTORE) -> list[dict]:
    """A JSON object {"0": {...}, "1": {...}} (the MNLI train subsets' layout) as a list in key order."""
    if not path.is_file():
        raise DataNotFound(f"{path} not found")
    check_not_empty(path, restore=restore)
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    if isinstance(obj, list):
        return obj
    return [obj[k] for k in sorted(obj, key=lambda k: int(k) if str(k).isdigit() else k)]


def hub_split(path: str, name: Optional[str], split: str) -> list[dict]:
    """A split from the dataset hub (or its local cache); raises DataNotFound when neither has it."""
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split).to_list()
    except Exception as e:  # offline, unknown name, ...: datasets raises many types
        raise DataNotFound(f"the hub copy {path}/{name} [{split}] is not reachable ({type(e).__name__}: "
                           f"{str(e)[:200]})") from e


# --------------------------------------------------------------------------------------------- subsets
def sample(rows: Sequence, n: int, seed: int) -> list:
    """n rows drawn without replacement with their own RNG (the run's RNG is never touched); order shuffled."""
    if n > len(rows):
        raise ValueError(f"asked for {n} examples, only {len(rows)} available")
    idx = random.Random(seed).sample(range(len(rows)), n)
    return [rows[i] for i in idx]


def cap(rows: list, limit: Optional[int], seed: int = 0) -> list:
    """A fixed random sample of `limit` rows (all rows when limit is None or not smaller)."""
    if limit is None or limit >= len(rows):
        return rows
    return sample(rows, limit, seed)


# --------------------------------------------------------------------------------------------- tensors
@dataclass
class Encoded:
    features: list[dict[str, list[int]]]  # per example: input_ids, attention_mask, token_type_ids (if the model uses it)
    labels: torch.Tensor  # (N,) long for classes, float for regression

    def __len__(self) -> int:
        return len(self.features)


def encode(examples: list[Example], tokenizer, max_seq_len: int, regression: bool) -> Encoded:
    """Tokenize (pairs truncated longest-first to max_seq_len); no padding here: batches pad to their own max."""
    if not examples:
        return Encoded([], torch.zeros(0))
    a = [e.a for e in examples]
    b = [e.b for e in examples] if examples[0].b is not None else None
    enc = tokenizer(a, b, truncation=True, max_length=max_seq_len, padding=False)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(examples))]
    dtype = torch.float32 if regression else torch.long
    return Encoded(features, torch.tensor([e.label for e in examples], dtype=dtype))


def collate(enc: Encoded, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the rows `idx` to the longest of them: input_ids/attention_mask/... (B, T), labels (B,)."""
    rows = [enc.features[i] for i in idx]
    width = max(len(r["input_ids"]) for r in rows)
    batch = {}
    for key in rows[0]:
        fill = pad_id if key == "input_ids" else 0
        batch[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows], dtype=torch.long)
    batch["labels"] = enc.labels[list(idx)]
    return batch


def token_lengths(enc) -> list[int]:
    """Each example's length in tokens (Encoded or LMEncoded): what train.group_by_length sorts by."""
    return [len(f["input_ids"]) for f in enc.features]


def eval_batches(enc: Encoded, batch_size: int) -> list[list[int]]:
    """Index batches sorted by length (less padding, same metrics: order does not change them)."""
    order = sorted(range(len(enc)), key=lambda i: len(enc.features[i]["input_ids"]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def to_examples(rows: list[dict], a: str, b: Optional[str], label: str,
                convert: Callable[[object], float | int]) -> list[Example]:
    return [Example(str(r[a]), None if b is None else str(r[b]), convert(r[label])) for r in rows]


# --------------------------------------------------------------------------------------------- causal-LM tensors
@dataclass
class LMEncoded:
    """Generation-task examples as token ids: per example `input_ids` = prompt + target + EOS and `labels` = -100 on
    the prompt, the target ids (EOS included) after it. `truncated` counts examples cut to max_seq_len."""
    features: list[dict[str, list[int]]]
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.features)


def prompt_ids(tokenizer, source: str, separator: str) -> list[int]:
    """tokens(source) + tokens(separator): the decoder's prompt, the same at training and at generation time.
    Tokenized apart so the source/target boundary (and the prompt we generate from) never depends on a merge
    across it; the tokenizer's own special tokens (a BOS where it adds one) come first."""
    ids = tokenizer(source, add_special_tokens=True)["input_ids"]
    return list(ids) + list(tokenizer(separator, add_special_tokens=False)["input_ids"])


def encode_lm(examples, tokenizer, max_seq_len: int, separator: str, target_prefix: str = "") -> LMEncoded:
    """(source, target) pairs -> LMEncoded. Over max_seq_len: the prompt keeps its last tokens (the separator
    included), at least half of max_seq_len, and the target is cut to what is left (losing its EOS)."""
    if not examples:
        return LMEncoded([])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; a decoder needs one to learn where a text ends")
    # batched tokenization (fast); the same ids as tokenizing one by one (prompt_ids for the prompt)
    sources = tokenizer([e.source for e in examples], add_special_tokens=True)["input_ids"]
    targets = tokenizer([target_prefix + e.target for e in examples], add_special_tokens=False)["input_ids"]
    sep = list(tokenizer(separator, add_special_tokens=False)["input_ids"])
    features, truncated = [], 0
    for src, tgt in zip(sources, targets):
        p, t = list(src) + sep, list(tgt) + [tokenizer.eos_token_id]
        if len(p) + len(t) > max_seq_len:
            truncated += 1
            room = max(max_seq_len - len(t), max_seq_len // 2)  # the prompt keeps what the target leaves, >= half
            p = p[-room:]
            t = t[:max_seq_len - len(p)]
        features.append({"input_ids": p + t, "labels": [-100] * len(p) + t})
    return LMEncoded(features, truncated)


def collate_lm(enc: LMEncoded, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows `idx` to the longest of them: input_ids, attention_mask, labels (-100 on padding), (B, T)."""
    rows = [enc.features[i] for i in idx]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(r["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def left_pad(prompts: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompts for batched decoder-only generation: input_ids, attention_mask (B, T); every row ends at T."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return {"input_ids": ids, "attention_mask": mask}
