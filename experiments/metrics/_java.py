"""Where Java and the jars that pycocoevalcap ships are (METEOR 1.5; Stanford PTBTokenizer from CoreNLP 3.4.1).

Every metric that needs one of them calls `java()` / `meteor_jar()` / `ptb_jar()` first, so a missing piece fails
with a `MissingDependency` that says how to install it instead of a FileNotFoundError deep in a subprocess.
"""
from __future__ import annotations

import shutil
from pathlib import Path

INSTALL_JAVA = ("`java` was not found on PATH: METEOR and the PTB tokenizer (E2E METEOR, ROUGE_L, CIDEr; WebNLG "
                "METEOR) run as Java programs. Install a Java runtime (8 or newer; tested with OpenJDK 17), e.g. "
                "`apt-get install -y default-jre-headless`, or score only BLEU/NIST (E2E) or BLEU/TER (WebNLG).")
INSTALL_COCO = ("pycocoevalcap's jars were not found: `pip install pycocoevalcap==1.2` (it carries METEOR 1.5 with "
                "its paraphrase table and the Stanford PTBTokenizer).")


class MissingDependency(RuntimeError):
    """Java or pycocoevalcap is missing; the message says how to install it."""


def java() -> str:
    exe = shutil.which("java")
    if exe is None:
        raise MissingDependency(INSTALL_JAVA)
    return exe


def coco_dir() -> Path:
    """pycocoevalcap's package folder (a namespace package in 1.2: no __file__, but __path__)."""
    try:
        import pycocoevalcap
    except ImportError as err:
        raise MissingDependency(INSTALL_COCO) from err
    for base in getattr(pycocoevalcap, "__path__", []):
        if (Path(base) / "meteor" / "meteor-1.5.jar").exists():
            return Path(base)
    raise MissingDependency(INSTALL_COCO)


def meteor_jar() -> Path:
    """meteor-1.5.jar; its paraphrase table lies in data/ beside it."""
    jar = coco_dir() / "meteor" / "meteor-1.5.jar"
    if not (jar.parent / "data" / "paraphrase-en.gz").exists():
        raise MissingDependency(INSTALL_COCO)
    return jar


def ptb_jar() -> Path:
    jar = coco_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    if not jar.exists():
        raise MissingDependency(INSTALL_COCO)
    return jar
