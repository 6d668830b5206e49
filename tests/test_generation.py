"""Generation tasks (E2E, WebNLG, DART): formatting, reference grouping, splits, decoding and smoke runs end to end."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from experiments import data
from experiments.tasks import generation as G
from tests.conftest import PY, REAL_DATA, REPO, compose

_has_data = (REAL_DATA / "e2e").is_dir()


def real(test):
    """A test on the real data files: marked `data` (the unit tier leaves it out), skipped without them."""
    return pytest.mark.data(pytest.mark.skipif(not _has_data, reason="needs the offline E2E/WebNLG/DART copy")(test))


# untied embeddings: a tiny random Llama with tied ones just repeats the prompt's last token (the newline separator),
# which ends every text at once; untied, it writes (random) non-empty text
E2E_SMOKE = ["scale=smoke", "model=decoder_smoke", "model.arch.tie_word_embeddings=false", "task=e2e", "logger=none",
             "train.threads=1", "train.checkpoint_every=4", "train.log_every=1", "train.lr=1e-3"]


@pytest.fixture
def real_data(monkeypatch):
    monkeypatch.setenv("LORA_DATA_DIR", str(REAL_DATA))
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def tok():
    from experiments.models import load_tokenizer

    return load_tokenizer("smollm2")


def scale(**gen) -> SimpleNamespace:
    caps = dict(max_steps=None, max_val_examples=None, max_inputs=None, max_num_beams=None, max_new_tokens=None,
                dart_dev_split=True) | gen
    return SimpleNamespace(name="test", max_train_examples=None, max_eval_examples=None, max_steps=None,
                           generation=SimpleNamespace(**caps))


def task_cfg(name: str, **kw) -> SimpleNamespace:
    return SimpleNamespace(**(dict(name=name, kind="generation", data_seed=1234, split_seed=0, val_fraction=0.1,
                                   test_fraction=0.2, hub_id=None) | kw))


# ------------------------------------------------------------------------------------------- formatting
def test_labels_masked_on_source_and_eos_appended(tok):
    ex = [G.GenExample("name : Cocum | Type : pub", "Cocum is a pub ."),
          G.GenExample("name : The Eagle | Type : coffee shop | area : riverside", "The Eagle is by the river .")]
    enc = data.encode_lm(ex, tok, 512, "\n")
    for e, f in zip(ex, enc.features):
        prompt = data.prompt_ids(tok, e.source, "\n")
        target = tok(e.target, add_special_tokens=False)["input_ids"]
        assert f["input_ids"] == prompt + target + [tok.eos_token_id]
        assert f["labels"] == [-100] * len(prompt) + target + [tok.eos_token_id]
        assert tok.decode(f["input_ids"][:len(prompt)]) == e.source + "\n"
    batch = data.collate_lm(enc, [0, 1], tok.pad_token_id)  # dynamic padding: to the longer of the two
    n0, n1 = (len(f["input_ids"]) for f in enc.features)
    assert batch["input_ids"].shape == (2, max(n0, n1))
    short = 0 if n0 < n1 else 1
    n = min(n0, n1)
    assert (batch["labels"][short, n:] == -100).all() and (batch["attention_mask"][short, n:] == 0).all()
    assert batch["attention_mask"][short, :n].all()


def test_truncation_keeps_the_separator(tok):
    enc = data.encode_lm([G.GenExample("word " * 100, "a long target " * 20)], tok, 32, "\n")
    f = enc.features[0]
    assert enc.truncated == 1 and len(f["input_ids"]) == 32
    first_target = next(i for i, lab in enumerate(f["labels"]) if lab != -100)
    assert tok.decode(f["input_ids"][first_target - 1:first_target]) == "\n" and first_target >= 16


def test_left_padding_for_generation():
    b = data.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_lm_loss_is_the_models_causal_loss(model_name):
    from experiments.generate import forward_loss
    from experiments.models import load_model, model_config

    torch.manual_seed(0)
    model, _ = load_model(model_config(model_name), with_tokenizer=False)
    model.eval()  # tiny GPT-2 has dropout
    enc = data.LMEncoded([{"input_ids": [3, 4, 5, 6, 7], "labels": [-100, -100, 5, 6, 7]},
                          {"input_ids": [3, 9, 10], "labels": [-100, 9, 10]}])
    batch = data.collate_lm(enc, [0, 1], pad_id=2)
    ours = forward_loss(model, batch)
    theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-5)
    # label smoothing (microsoft/LoRA's): (1 - eps) * NLL + eps * mean over the vocabulary of -log p
    logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    keep = batch["labels"][:, 1:] != -100
    uniform = -logp[:, :-1][keep].mean(-1).mean()
    assert torch.allclose(forward_loss(model, batch, smoothing=0.1), 0.9 * theirs + 0.1 * uniform, atol=1e-5)


def test_target_only_head_gives_the_full_heads_loss_and_gradients():
    import lora
    from experiments.generate import forward_loss, lm_loss
    from experiments.models import load_model, model_config
    from lora.config import MethodConfig

    torch.manual_seed(0)
    model, _ = load_model(model_config("tiny_llama"), with_tokenizer=False)
    lora.apply_method(model, MethodConfig(name="full"))
    enc = data.LMEncoded([{"input_ids": [3, 4, 5, 6, 7, 8], "labels": [-100, -100, -100, 6, 7, 8]},
                          {"input_ids": [3, 9, 10], "labels": [-100, 9, 10]}])
    batch = data.collate_lm(enc, [0, 1], pad_id=2)
    forward_loss(model, batch, 0.1).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    full = lm_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                   batch["labels"], 0.1)
    full.backward()
    assert all(torch.allclose(ours[n], p.grad, atol=1e-6, rtol=1e-4) for n, p in model.named_parameters())


# ------------------------------------------------------------------------------------------- grouping, splits
def test_grouping_keeps_first_appearance_order_and_every_reference():
    ex = [G.GenExample("b", "b1"), G.GenExample("a", "a1"), G.GenExample("b", "b2"), G.GenExample("c", "c1"),
          G.GenExample("a", "a2")]
    groups = G.group_references(ex)
    assert [(g.source, g.refs) for g in groups] == [("b", ["b1", "b2"]), ("a", ["a1", "a2"]), ("c", ["c1"])]
    from experiments.generate import references_text

    assert references_text([g.refs for g in groups]) == "b1\nb2\n\na1\na2\n\nc1\n"


@real
def test_e2e_test_set_groups_into_630_mrs(real_data):
    test, source = G.load_e2e_split("test")
    groups = G.group_references(test)
    assert source == "local" and len(test) == 4693 and len(groups) == 630
    assert sum(len(g.refs) for g in groups) == 4693
    assert groups[0].source.startswith("name : ") and "||" not in groups[0].refs[0]


@real
def test_webnlg_seen_and_unseen_categories(real_data):
    train, dev, test, seen = G.load_webnlg()
    assert seen == set(G.WEBNLG_SEEN)
    groups = G.group_references(test)
    by = {s: [g for g in groups if g.subset == s] for s in ("seen", "unseen")}
    assert (len(groups), len(by["seen"]), len(by["unseen"])) == (1862, 971, 891)
    assert sum(len(g.refs) for g in groups) == 4928
    entries = G.webnlg_entries(REAL_DATA / "webnlg2017" / "test.json")
    assert {e["category"] for e in entries if e["category"] not in seen} == set(G.WEBNLG_UNSEEN)
    # the unseen inputs are exactly the triple sets of the official unseen test file
    root = ET.parse(REAL_DATA / "webnlg2017" / "test" / "testdata_unseen_with_lex.xml").getroot()
    official = {G.linearise([[p.strip() for p in t.text.split("|")] for t in e.find("modifiedtripleset")])
                for e in root.iter("entry")}
    assert {g.source for g in by["unseen"]} == official
    assert all(ex.subset == "" for ex in train[:10]) and len(dev) == 2258


@real
def test_dart_dev_split_is_by_triple_set_and_deterministic(real_data):
    a = G.load(task_cfg("dart"), scale())
    b = G.load(task_cfg("dart"), scale())
    assert [e.source for e in a.train] == [e.source for e in b.train] and a.evals["eval"] == b.evals["eval"]
    train_s, val_s = {e.source for e in a.train}, {e.source for e in a.val}
    test_s = {g.source for g in a.evals["eval"]}
    assert not (train_s & test_s) and not (train_s & val_s) and not (val_s & test_s)
    total = len(train_s | val_s | test_s)
    assert total == 2721  # distinct triple sets of the dev file (2,768 entries, some repeated)
    assert abs(len(test_s) / total - 0.2) < 0.01 and abs(len(val_s) / total - 0.1) < 0.01
    assert len(a.train) + len(a.val) + sum(len(g.refs) for g in a.evals["eval"]) == 6980
    assert any("split by triple set" in d for d in a.deviations)
    other = G.load(task_cfg("dart", split_seed=1), scale())
    assert {g.source for g in other.evals["eval"]} != test_s
    assert " : " in a.train[0].source and a.train[0].source.split(" : ")[1].islower()


def test_split_by_source_partitions():
    ex = [G.GenExample(f"s{i % 10}", f"t{i}") for i in range(40)]
    parts = G.split_by_source(ex, [0.6, 0.2, 0.2], seed=3)
    assert sum(map(len, parts)) == 40
    sources = [{e.source for e in p} for p in parts]
    assert [len(s) for s in sources] == [6, 2, 2] and not (sources[0] & sources[1]) and not (sources[0] & sources[2])
    assert parts == G.split_by_source(ex, [0.6, 0.2, 0.2], seed=3)


def test_stratified_subset_keeps_both_subsets():
    inputs = [G.GenInput(f"s{i}", ["r"], "seen" if i % 3 else "unseen") for i in range(30)]
    sub = G.stratified_inputs(inputs, 9, seed=0)
    assert len(sub) == 9 and sum(g.subset == "unseen" for g in sub) == 3
    assert sub == sorted(sub, key=lambda g: int(g.source[1:]))  # original order kept
    assert sub == G.stratified_inputs(inputs, 9, seed=0)


# ------------------------------------------------------------------------------------------- decoding
def test_batched_left_padded_generation_matches_one_by_one(tok):
    """Left padding must not change what a prompt decodes to (greedy and beam)."""
    from experiments.generate import generate
    from experiments.models import load_model, model_config
    from experiments.schemas import GenerationConfig

    cfg = model_config("tiny_llama")
    cfg.arch = dict(cfg.arch) | {"tie_word_embeddings": False}  # tied random embeddings just repeat the last token
    torch.manual_seed(0)
    model, _ = load_model(cfg, with_tokenizer=False)
    prompts = [data.prompt_ids(tok, s, "\n") for s in
               ("name : Cocum", "name : The Eagle | Type : coffee shop | area : riverside | near : Burger King",
                "name : Blue Spice | Type : pub")]
    stops = [tok.eos_token_id]
    for beams in (1, 2):
        gen = GenerationConfig(num_beams=beams, no_repeat_ngram_size=0, max_new_tokens=6, batch_size=3)
        batched = generate(model, tok, prompts, gen, tok.pad_token_id, stops)
        single = [generate(model, tok, [p], gen, tok.pad_token_id, stops)[0] for p in prompts]
        assert batched == single and any(batched)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_prompt_cache_decodes_what_beam_search_without_it_does(tok, model_name, monkeypatch):
    """The prompt run once per prompt and its cache repeated per beam (generate.prompt_cache) gives the texts HF's
    beam search gives when it runs the left-padded prompt once per beam."""
    from experiments import generate as gen_mod
    from experiments.models import load_model, model_config
    from experiments.schemas import GenerationConfig

    cfg = model_config(model_name)
    cfg.arch = dict(cfg.arch) | {"tie_word_embeddings": False}
    torch.manual_seed(0)
    model, _ = load_model(cfg, with_tokenizer=False)
    prompts = [data.prompt_ids(tok, s, "\n") for s in
               ("name : Cocum", "name : The Eagle | Type : coffee shop | area : riverside | near : Burger King",
                "name : Blue Spice | Type : pub | food : French", "name : Zizzi")]
    gen = GenerationConfig(num_beams=3, no_repeat_ngram_size=2, length_penalty=0.9, max_new_tokens=8, batch_size=4)
    stops = [tok.eos_token_id]
    cached = gen_mod.generate(model, tok, prompts, gen, tok.pad_token_id, stops)
    monkeypatch.setattr(gen_mod, "prompt_cache", lambda *args: None)
    plain = gen_mod.generate(model, tok, prompts, gen, tok.pad_token_id, stops)
    assert cached == plain and all(cached)


def _prefix_model(model_name: str, method: str):
    import lora
    from experiments.models import load_model, model_config
    from lora.config import MethodConfig

    cfg = model_config(model_name)
    cfg.arch = dict(cfg.arch) | {"tie_word_embeddings": False}
    torch.manual_seed(0)
    model, _ = load_model(cfg, with_tokenizer=False)
    lora.apply_method(model, MethodConfig(name=method, l_p=3, l_i=2))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)  # a prefix that changes what the model says
    return model.eval()


PROMPTS = ("name : Cocum", "name : The Eagle | Type : coffee shop | area : riverside | near : Burger King",
           "name : Blue Spice | Type : pub")


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_prefix_methods_decode_batched_with_a_cache_like_a_full_reforward(tok, model_name, method):
    """Greedy: the batched, cached prefix decode (lora.prefix.cached_decoding) against re-running the whole forward
    through the prefix hooks for one prompt at a time, token by token (no cache, no HF generate)."""
    from experiments.generate import clean, generate
    from experiments.schemas import GenerationConfig

    model = _prefix_model(model_name, method)
    prompts = [data.prompt_ids(tok, s, "\n") for s in PROMPTS]
    stops, new = [tok.eos_token_id], 6
    gen = GenerationConfig(num_beams=1, no_repeat_ngram_size=0, max_new_tokens=new, batch_size=3)
    reference = []
    with torch.no_grad():
        for p in prompts:
            seq = torch.tensor([p])
            for _ in range(new):
                step = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, -1].argmax()
                seq = torch.cat([seq, step.view(1, 1)], dim=1)
                if int(step) in stops:
                    break
            row = seq[0, len(p):].tolist()
            cut = next((j for j, t in enumerate(row) if t in stops), len(row))
            reference.append(clean(tok.decode(row[:cut], skip_special_tokens=True)))
    assert generate(model, tok, prompts, gen, tok.pad_token_id, stops) == reference and any(reference)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_prefix_embed_beam_search_equals_the_prefix_as_input_embeddings(tok, model_name):
    """Beam search: PrefixEmbed decoded through the prefix cache equals the same model without hooks generating
    from inputs_embeds = [prefix embeddings; prompt embeddings], one prompt at a time (no-repeat-ngram off: from
    inputs_embeds HF sees no prompt ids to ban n-grams of)."""
    from transformers import GenerationConfig as HFGenerationConfig

    from experiments.generate import clean, generate
    from experiments.schemas import GenerationConfig

    model = _prefix_model(model_name, "prefix_embed")
    positions = model.prefix_positions
    prompts = [data.prompt_ids(tok, s, "\n") for s in PROMPTS]
    stops = [tok.eos_token_id]
    gen = GenerationConfig(num_beams=3, no_repeat_ngram_size=0, max_new_tokens=6, batch_size=3)
    hf = HFGenerationConfig(num_beams=3, length_penalty=gen.length_penalty, max_new_tokens=6, do_sample=False,
                            eos_token_id=stops, pad_token_id=tok.pad_token_id)
    batched = generate(model, tok, prompts, gen, tok.pad_token_id, stops)
    reference = []
    positions.enabled = False
    try:
        with torch.no_grad():
            for p in prompts:
                emb = torch.cat([positions.embeddings[:positions.l_p], model.get_input_embeddings()(torch.tensor(p))])
                rows = model.generate(inputs_embeds=emb[None], attention_mask=torch.ones(1, len(emb), dtype=torch.long),
                                      generation_config=hf)[0].tolist()
                cut = next((j for j, t in enumerate(rows) if t in stops), len(rows))
                reference.append(clean(tok.decode(rows[:cut], skip_special_tokens=True)))
    finally:
        positions.enabled = True
    assert batched == reference and any(batched)


def test_scale_caps_on_decoding_are_recorded():
    from experiments.generate import effective_settings
    from experiments.schemas import GenerationConfig

    gen, dev = effective_settings(GenerationConfig(num_beams=10, max_new_tokens=64), scale(max_num_beams=4).generation)
    assert gen.num_beams == 4 and gen.max_new_tokens == 64 and len(dev) == 1 and "4 beams instead of 10" in dev[0]


def test_scoring_falls_back_to_java_free_metrics(monkeypatch):
    """Without java/pycocoevalcap the run keeps BLEU/NIST (E2E) and says how to rescore."""
    import experiments.metrics as metrics

    class MissingDependency(RuntimeError):
        pass

    def fake_e2e(refs, hyps, metrics=("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")):
        if set(metrics) - {"BLEU", "NIST"}:
            raise MissingDependency("java not found")
        return {"BLEU": 50.0, "NIST": 5.0}

    monkeypatch.setattr(metrics, "score_e2e", fake_e2e)
    scores, note = G.score("e2e", [["a b c"]], ["a b c"])
    assert scores == {"BLEU": 50.0, "NIST": 5.0} and "java not found" in note and "rescore" in note

    def broken(refs, hyps, metrics=()):
        raise ValueError("a real bug")

    monkeypatch.setattr(metrics, "score_e2e", broken)
    with pytest.raises(ValueError, match="a real bug"):  # anything but a missing dependency fails the run
        G.score("e2e", [["a"]], ["a"])


@pytest.mark.parametrize("task,penalty", [("e2e", 0.9), ("webnlg", 0.8), ("dart", 0.8)])
def test_paper_decoding_settings_and_scale_caps(task, penalty):
    cfg = compose([f"task={task}", "scale=paper"])
    g = cfg.task.generation
    assert (cfg.task.kind, g.num_beams, g.length_penalty, g.no_repeat_ngram_size, g.max_new_tokens) == \
        ("generation", 10, penalty, 4, 64)
    assert cfg.scale.generation.max_inputs is None and not cfg.scale.generation.dart_dev_split
    local = compose([f"task={task}", "scale=local"]).scale
    assert local.generation.max_num_beams < 10 and local.generation.max_inputs and local.generation.dart_dev_split
    assert any("generation tasks" in d for d in local.deviations)
    tc = compose([f"train={task}"]).train
    assert (tc.lr, tc.batch_size, tc.epochs, tc.warmup_steps, tc.max_grad_norm) == (2e-4, 8, 5, 500, 0.0)
    assert tc.label_smoothing == (0.0 if task == "dart" else 0.1)


def test_warmup_steps_shrink_with_the_step_cap():
    from experiments.loop import plan_warmup

    tc = SimpleNamespace(warmup_steps=500, warmup_ratio=0.06)
    assert plan_warmup(tc, 26290, 26290) == (500, [])
    w, dev = plan_warmup(tc, 100, 26290)
    assert w == 2 and "scaled" in dev[0]
    assert plan_warmup(SimpleNamespace(warmup_steps=0, warmup_ratio=0.06), 100, 100) == (6, [])


# ------------------------------------------------------------------------------------------- runs end to end
def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(PY), "-m", "experiments.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def check_run_files(run: Path, final: dict) -> list[str]:
    hyps = (run / "predictions.txt").read_text().split("\n")
    assert hyps[-1] == "" and len(hyps) - 1 == final["eval_examples"]["eval"]  # one line per input
    from experiments.metrics import read_refs

    refs = read_refs(str(run / "references.txt"))
    inputs = [json.loads(line) for line in (run / "inputs.jsonl").read_text().splitlines()]
    assert len(refs) == len(inputs) == len(hyps) - 1 and [len(r) for r in refs] == [i["n_refs"] for i in inputs]
    return hyps[:-1]


@real
def test_smoke_e2e_run_writes_predictions_and_scores(real_data, tmp_path):
    from experiments.train import run

    final = run(compose(E2E_SMOKE + [f"results_dir={tmp_path}"]), run_dir=tmp_path / "run")
    assert final["status"] == "success", final.get("error")
    check_run_files(tmp_path / "run", final)
    m = final["metrics"]
    assert final["eval_examples"] == {"eval": 8} and final["steps"] == 8
    assert m["val_loss"] > 0 and m["train_loss"] > 0
    # BLEU and NIST are pure Python; METEOR, ROUGE-L, CIDEr need java + pycocoevalcap (a note says when missing)
    assert 0 <= m["eval_BLEU"] <= 100 and m["eval_NIST"] >= 0
    java = [k for k in ("eval_METEOR", "eval_ROUGE_L", "eval_CIDEr") if k in m]
    assert len(java) == 3 or any("rescore" in d for d in final["deviations"]), final["deviations"]
    assert any("2 beams instead of 10" in d for d in final["deviations"])
    t = final["timing"]
    assert t["s_per_step"] > 0 and t["s_per_generated_example"] > 0 and t["generated_inputs"] == 8
    assert not (tmp_path / "run" / "checkpoint").exists()
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 9)) and rows[-1]["split"] == "eval"


@real
@pytest.mark.slow  # over 30 s
def test_smoke_webnlg_reports_all_seen_unseen(real_data, tmp_path):
    from experiments.train import run

    overrides = [o for o in E2E_SMOKE if not o.startswith("task=")] + ["task=webnlg", f"results_dir={tmp_path}"]
    final = run(compose(overrides), run_dir=tmp_path / "run")
    assert final["status"] == "success", final.get("error")
    hyps = check_run_files(tmp_path / "run", final)
    inputs = [json.loads(line) for line in (tmp_path / "run" / "inputs.jsonl").read_text().splitlines()]
    assert {i["subset"] for i in inputs} == {"seen", "unseen"} and len(hyps) == 8
    for part in "ASU":
        assert f"eval_{part}_BLEU" in final["metrics"] and f"eval_{part}_TER" in final["metrics"]


@real
@pytest.mark.slow  # over 30 s
def test_kill_before_generation_resumes_into_generation_only(real_data, tmp_path):
    """SIGKILL right after the last step (its checkpoint written, nothing generated); the same command then skips
    training and only evaluates/generates."""
    import os

    env = dict(os.environ)
    args = E2E_SMOKE + [f"results_dir={tmp_path}", "train.kill_after_steps=8"]
    killed = cli(args, env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = [p.parent for p in tmp_path.glob("runs/*/*/*/.hydra")]
    assert json.loads((run / "checkpoint" / "latest.json").read_text())["step"] == 8
    assert not (run / "predictions.txt").exists() and not (run / "final.json").exists()
    resumed = cli(args[:-1], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "final evaluation only" in resumed.stdout
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "success" and final["resumed_from_step"] == 8
    check_run_files(run, final)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 9))  # training was not redone
    again = cli(args[:-1], env)
    assert again.returncode == 0 and "skipping" in again.stdout


def test_generation_task_needs_a_decoder(tmp_path):
    from experiments.train import run

    with pytest.raises(ValueError, match="pick a decoder"):
        run(compose(["scale=smoke", "task=e2e", "logger=none", f"results_dir={tmp_path}"]), run_dir=tmp_path / "r")


# ------------------------------------------------------------------------------------------- real model
WORD = re.compile(r"[A-Za-z]+")


@pytest.mark.slow
@real
def test_smollm2_lora_learns_e2e(real_data, tmp_path):
    """SmolLM2-135M + LoRA (r=4 on q, v, alpha 32) for 30 steps of batch 8 on E2E at lr 1e-3, then beam 4 for 5 test
    MRs: every text is non-empty, made of words seen in E2E references, and names the restaurant of its MR."""
    from experiments.train import run

    overrides = ["model=smollm2", "task=e2e", "train=e2e", "method=lora", "method.r=4", "method.alpha=32",
                 "method.dropout=0.1", "train.max_steps=30", "train.warmup_steps=3", "train.lr=1e-3",
                 "scale.max_train_examples=2000", "scale.generation.max_val_examples=64",
                 "scale.generation.max_inputs=5", "scale.generation.max_num_beams=4", "logger=none",
                 "train.threads=1",  # robust on a shared machine: 2 threads on 2 busy cores run several times slower
                 f"results_dir={tmp_path}"]
    final = run(compose(overrides), run_dir=tmp_path / "run")
    assert final["status"] == "success", final.get("error")
    hyps = check_run_files(tmp_path / "run", final)
    inputs = [json.loads(line) for line in (tmp_path / "run" / "inputs.jsonl").read_text().splitlines()]
    train, _ = G.load_e2e_split("train")
    vocab = {w.lower() for e in train[:20000] for w in WORD.findall(e.target)}
    for hyp, inp in zip(hyps, inputs):
        words = WORD.findall(hyp)
        assert len(words) >= 4, hyp
        assert sum(w.lower() in vocab for w in words) >= 0.8 * len(words), hyp
        name = re.search(r"name : ([^|]+)", inp["source"]).group(1).strip()
        assert name.lower() in hyp.lower(), (name, hyp)
    assert final["metrics"]["val_loss"] < 2.5 and final["metrics"]["eval_BLEU"] > 10
