"""Language forgetting in the studies on a tiny random LLaVA: with the "text" set among the evaluated datasets, the
EMT study writes language.jsonl for the base model and every epoch (scores in metrics.json, a report section), and
a rerun reads the rows back instead of measuring again; the 2x2 study does the same for its base model and each run
(the text set among extra_datasets). The random model's numbers mean nothing; what is checked is that they are
finite, carry intervals, move when the language model is fine-tuned, and stay when only the projector is."""

import json
import math

import pytest

from unforget.cli import main
from unforget.runs import read_jsonl

CONFIG = """name: language
model: {{name: {model}}}
train: {{dataset: digits, limit: 8, epochs: 2, batch_size: 4}}
methods:
  - {{name: lora, method: lora, options: {{r: 4}}, lr: 5.0e-2}}
eval: {{datasets: [digits, text], limit: 2, batch_size: 2, max_new_tokens: 2}}
probe: {{enabled: false}}
language: {{limit: 6, batch_size: 6}}
alignment_limit: 0
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py


def _finite(estimate: dict) -> bool:
    return all(estimate[k] is not None and math.isfinite(estimate[k]) for k in ("value", "low", "high"))


def test_emt_study_scores_language_every_epoch_and_resumes(random_llava_dir, tmp_path):
    config = tmp_path / "emt.yaml"
    config.write_text(CONFIG.format(model=random_llava_dir))
    out = tmp_path / "run"
    assert main(["study", "emt", "-c", str(config), "--out", str(out)]) == 0

    (base,) = read_jsonl(out / "base" / "language.jsonl")
    rows = read_jsonl(out / "lora" / "language.jsonl")
    assert base["epoch"] == 0 and [(r["epoch"], r["seed"]) for r in rows] == [(1, 0), (2, 0)]
    for r in [base, *rows]:
        assert r["dataset"] == "text" and r["n_answers"] == 6 and len(r["items"]["heldout"]["nll"]) >= 10
        assert r["answer_logprob"] < 0 and r["heldout_perplexity"] > 1
        assert all(_finite(e) for e in r["estimates"].values())
    assert rows[-1]["items"]["answers"]["nll"] != base["items"]["answers"]["nll"]  # fine-tuning moved them
    assert json.loads((out / "base" / "metrics.json").read_text())["language"]["answer_logprob"] == \
        base["estimates"]["answer_logprob"]
    epochs = json.loads((out / "lora" / "metrics.json").read_text())["epochs"]
    assert epochs["2"]["language"]["heldout_perplexity"] == rows[1]["estimates"]["heldout_perplexity"]

    lang = json.loads((out / "metrics.json").read_text())["language"]
    curve = lang["curves"]["lora"]
    assert [p["epoch"] for p in curve] == [0, 1, 2] and curve[2]["accuracy"]["n"] == 2
    assert all(_finite(curve[2]["change"][k]) for k in ("answer_logprob", "heldout_perplexity"))
    assert lang["verdicts"][0]["sentence"].startswith("lora, epoch 2 vs the base model")
    assert "Language forgetting (text set)" in (out / "report.md").read_text()
    assert (out / "plots" / "language.png").is_file()

    # a rerun finds every row written and measures nothing again
    assert main(["study", "emt", "-c", str(config), "--out", str(out)]) == 0
    assert len(read_jsonl(out / "lora" / "language.jsonl")) == 2
    assert len(read_jsonl(out / "base" / "language.jsonl")) == 1


TWO_BY_TWO = """name: language
model: {{name: {model}}}
cells:
  id_image_id_text: scenes-vqa?qtypes=colour&n_train=8&n_test=2
  id_image_ood_text: scenes-vqa?qtypes=shape&n_train=1&n_test=2
  ood_image_id_text: easy-vqa?qtypes=colour&n_train=1&n_test=2
  ood_image_ood_text: shapes?n_train=1&n_test=2
extra_datasets: [text]
train: {{limit: 8, batch_size: 4}}
sweep:
  methods: [{{name: projector, method: projector}}, {{name: lora, method: lora, options: {{r: 4}}}}]
  lrs: [5.0e-2]
  epochs: [1]
eval: {{limit: 2, batch_size: 2, max_new_tokens: 2}}
probe: {{enabled: false}}
language: {{limit: 6, batch_size: 6}}
"""


def test_twobytwo_study_scores_language_of_the_base_model_and_each_run(random_llava_dir, tmp_path):
    config = tmp_path / "2x2.yaml"
    config.write_text(TWO_BY_TWO.format(model=random_llava_dir))
    out = tmp_path / "run"
    assert main(["study", "2x2", "-c", str(config), "--out", str(out)]) == 0

    (base,) = read_jsonl(out / "base" / "language.jsonl")
    (projector,) = read_jsonl(out / "sweep" / "projector-lr0.05-e1" / "language.jsonl")
    run = out / "sweep" / "lora-lr0.05-e1"
    (tuned,) = read_jsonl(run / "language.jsonl")
    assert base["epoch"] == 0 and tuned["epoch"] == 1 and tuned["n_answers"] == 6
    # text without an image never passes the projector: projector-only training leaves the scores as they were
    assert projector["items"] == base["items"]
    assert tuned["items"]["answers"]["nll"] != base["items"]["answers"]["nll"]
    assert "text" in {r["dataset"] for r in read_jsonl(run / "samples.jsonl")}
    assert json.loads((run / "metrics.json").read_text())["language"]["answer_logprob"] == \
        tuned["estimates"]["answer_logprob"]
    lang = json.loads((out / "metrics.json").read_text())["language"]
    points = {p["name"]: p for p in lang["points"]}
    assert points["sweep/projector-lr0.05-e1"]["change"]["answer_logprob"]["value"] == 0
    assert points["sweep/lora-lr0.05-e1"]["accuracy"]["n"] == 2
    assert _finite(points["sweep/lora-lr0.05-e1"]["change"]["heldout_perplexity"])
    assert "Language forgetting (text set)" in (out / "report.md").read_text()
