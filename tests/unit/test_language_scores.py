"""Judge-free language scores: intervals over items worked out by hand, the change from the base model paired on the
same items, the language.jsonl row written once (a rerun reads it back), and the EMT and 2x2 report sections built
from hand-written rows."""

import json
import math
from pathlib import Path

import pytest

from unforget.errors import ConfigError, DataError
from unforget.evaluation.config import LanguageConfig
from unforget.evaluation.language import LanguageItems, language_change, language_estimates
from unforget.reports.language import change_sentence, change_verdict
from unforget.runs import RunDir, read_jsonl
from unforget.studies.language_scores import language_point


def items(answer_nll, heldout_nll, answer_tokens=None, heldout_tokens=None, ids=None) -> LanguageItems:
    return LanguageItems(answer_ids=ids or [f"test/{i:03d}" for i in range(len(answer_nll))],
                         answer_nll=list(answer_nll), answer_tokens=answer_tokens or [1] * len(answer_nll),
                         heldout_nll=list(heldout_nll), heldout_tokens=heldout_tokens or [1] * len(heldout_nll))


BASE = items([1.0, 1.0, 1.0, 1.0], [2.0, 2.0])
WORSE = items([2.0, 2.0, 2.0, 2.0], [3.0, 3.0])  # every token 1 nat less likely


def row(it: LanguageItems, epoch: int, **tag) -> dict:
    return {"epoch": epoch, **tag, "dataset": "text", **it.scores().to_dict(),
            "estimates": language_estimates(it).to_dict(), "items": it.to_dict()}


# ------------------------------------------------------------------------------------------------ intervals


def test_scores_are_token_weighted_ratios_with_bootstrap_intervals():
    # answers: nll 2, 4, 6 over 1, 2, 3 tokens: 2 nats per token in every answer, so every resample gives -2
    it = items([2.0, 4.0, 6.0], [1.0, 3.0], answer_tokens=[1, 2, 3])
    est = language_estimates(it)
    assert est.answer_logprob.value == pytest.approx(-2.0)
    assert (est.answer_logprob.low, est.answer_logprob.high) == pytest.approx((-2.0, -2.0))
    assert est.answer_logprob.n == 3 and est.answer_logprob.method == "bootstrap_percentile_paired"
    # held-out: two texts of 1 token with nll 1 and 3; resamples give exp(1), exp(2) or exp(3)
    ppl = est.heldout_perplexity
    assert ppl.value == pytest.approx(math.exp(2.0)) and ppl.n == 2
    assert math.exp(1.0) - 1e-9 <= ppl.low <= ppl.value <= ppl.high <= math.exp(3.0) + 1e-9
    assert ppl.low == pytest.approx(math.exp(1.0)) and ppl.high == pytest.approx(math.exp(3.0))
    assert language_estimates(it) == est  # fixed seed: the same intervals every time
    assert it.scores().answer_logprob == pytest.approx(-2.0) and it.scores().n_heldout_tokens == 2
    assert language_estimates(it, confidence=0.5).heldout_perplexity.confidence == 0.5


def test_change_is_paired_on_the_same_items():
    change = language_change(BASE, WORSE)
    assert change.answer_logprob.value == pytest.approx(-1.0)
    assert (change.answer_logprob.low, change.answer_logprob.high) == pytest.approx((-1.0, -1.0))
    assert change.heldout_perplexity.value == pytest.approx(math.exp(3) - math.exp(2))
    # answers matched by id: a reordered, partly missing after-list pairs the shared ids only
    after = items([2.0, 5.0], [3.0, 3.0], ids=["test/002", "test/000"])
    shared = language_change(BASE, after).answer_logprob
    assert shared.n == 2 and shared.value == pytest.approx(-(5.0 + 2.0) / 2 + 1.0)
    # other held-out texts (another count): no perplexity change
    assert language_change(BASE, items([1.0], [1.0, 2.0, 3.0])).heldout_perplexity is None


def test_verdicts_and_sentence_state_the_numbers():
    assert change_verdict({"value": 1.0, "low": 0.5, "high": 1.5}, "up") == "worse"
    assert change_verdict({"value": 1.0, "low": 0.5, "high": 1.5}, "down") == "better"
    assert change_verdict({"value": -1.0, "low": -1.5, "high": -0.5}, "down") == "worse"
    assert change_verdict({"value": 0.1, "low": -0.5, "high": 0.6}, "up") == "no change shown"
    assert change_verdict(None, "up") == "no change shown"
    base = language_point(row(BASE, 0), None, 0.95)
    assert base["change"] is None
    worse = language_point(row(WORSE, 2, seed=0), row(BASE, 0), 0.95)
    assert worse["change"]["answer_logprob"]["value"] == pytest.approx(-1.0)
    text = change_sentence("lora", worse, base, 0.95)
    assert "lora, epoch 2 vs the base model" in text
    assert "held-out perplexity 7.39 [7.39, 7.39] -> 20.09 [20.09, 20.09], change +12.696" in text
    assert "-1.000 [-1.000, -1.000] -> -2.000" in text and "degraded on both measures" in text
    same = language_point(row(items([0.5, 1.5, 0.5, 1.5], [2.0, 2.0]), 1), row(BASE, 0), 0.95)
    assert "no change shown on either measure" in change_sentence("projector", same, base, 0.95)


def test_items_round_trip_and_malformed_rows_are_reported():
    assert LanguageItems.from_dict(json.loads(json.dumps(BASE.to_dict()))) == BASE
    with pytest.raises(DataError, match="delete the language.jsonl row"):
        LanguageItems.from_dict({"answers": {"ids": ["a"], "nll": [1.0], "tokens": []}, "heldout": BASE.to_dict()[
            "heldout"]})
    with pytest.raises(DataError, match="language.jsonl"):
        LanguageItems.from_dict({"answers": {}})
    with pytest.raises(DataError, match="at least one"):
        language_estimates(items([], [1.0]))


# ------------------------------------------------------------------------------------------------ the study side


def test_text_dataset_selects_the_text_reference_and_the_switch():
    from unforget.studies.language_scores import text_dataset

    assert text_dataset(LanguageConfig(), ["digits", "text"]) == "text"
    assert text_dataset(LanguageConfig(), ["digits", "text?kinds=arithmetic"]) == "text?kinds=arithmetic"
    assert text_dataset(LanguageConfig(), ["digits", "textures"]) is None
    assert text_dataset(LanguageConfig(enabled=False), ["text"]) is None
    with pytest.raises(ConfigError, match="language.limit"):
        LanguageConfig(limit=0).validate()


def test_language_row_is_written_once_and_read_back(tmp_path, monkeypatch):
    from unforget.studies import language_scores

    calls = []

    def fake_items(lm, *, dataset, limit, batch_size, sampling, seed):
        calls.append((dataset, limit, batch_size))
        return WORSE

    monkeypatch.setattr(language_scores, "language_items", fake_items)
    run = RunDir(tmp_path / "arm")
    cfg = LanguageConfig(limit=4, batch_size=2)
    first = language_scores.record_language(cfg, "text", None, run, {"epoch": 1, "seed": 0}, 0.95)
    again = language_scores.record_language(cfg, "text", None, run, {"epoch": 1, "seed": 0}, 0.95)
    assert calls == [("text", 4, 2)] and first == again
    assert first["answer_logprob"]["value"] == pytest.approx(-2.0) and first["n_answers"] == 4
    assert "items" not in first  # metrics.json keeps the scores, language.jsonl the per-item values
    rows = read_jsonl(run.file("language.jsonl"))
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and rows[0]["seed"] == 0
    assert LanguageItems.from_dict(rows[0]["items"]) == WORSE
    language_scores.record_language(cfg, "text", None, run, {"epoch": 2, "seed": 0}, 0.95)  # a new epoch: measured
    assert len(calls) == 2 and len(read_jsonl(run.file("language.jsonl"))) == 2
    assert language_scores.record_language(cfg, None, None, run, {"epoch": 3}, 0.95) is None  # no text set


def test_twobytwo_config_takes_extra_datasets():
    from unforget.config import from_dict
    from unforget.studies.twobytwo import TwoByTwoConfig, eval_config

    cfg = from_dict(TwoByTwoConfig, {"extra_datasets": ["text"], "language": {"limit": 8}})
    assert cfg.eval.datasets[-1] == "text" and len(cfg.eval.datasets) == 5
    assert eval_config(cfg).datasets == cfg.eval.datasets and cfg.language.limit == 8
    with pytest.raises(ConfigError, match="extra_datasets"):
        from_dict(TwoByTwoConfig, {"extra_datasets": ["shapes"]})  # already a cell


# ------------------------------------------------------------------------------------------------ reports


def text_records(correct: range, epoch: int, n: int = 4, **tag) -> list[dict]:
    return [{"epoch": epoch, **tag, "id": f"test/{i:03d}", "dataset": "text", "task": "text", "reference": "Paris",
             "prediction": None, "correct": i in correct, "judge": "exact", "mode": "generate"} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))


def test_emt_report_has_the_language_section(tmp_path):
    from tests.synthetic_emt_run import make_run
    from unforget.studies.emt import write_emt_report

    root = make_run(tmp_path / "run")
    write_jsonl(root / "base" / "samples.jsonl", text_records(range(4), 0))
    write_jsonl(root / "base" / "language.jsonl", [row(BASE, 0)])
    for arm, later in (("lora", WORSE), ("projector", items([0.5, 1.5, 0.5, 1.5], [2.0, 2.0]))):
        write_jsonl(root / arm / "samples.jsonl", text_records(range(2), 1, seed=0) + text_records(range(1), 2, seed=0))
        write_jsonl(root / arm / "language.jsonl", [row(BASE, 1, seed=0), row(later, 2, seed=0)])
    files = write_emt_report(root)
    lang = json.loads((root / "metrics.json").read_text())["language"]
    assert lang["dataset"] == "text" and lang["base"]["answer_logprob"]["value"] == pytest.approx(-1.0)
    lora = lang["curves"]["lora"]
    assert [p["epoch"] for p in lora] == [0, 1, 2]
    assert lora[0]["change"] is None and lora[1]["change"]["answer_logprob"]["value"] == pytest.approx(0.0)
    assert lora[2]["change"]["heldout_perplexity"]["value"] == pytest.approx(math.exp(3) - math.exp(2))
    assert lora[2]["accuracy"]["value"] == pytest.approx(0.25)  # the judged text answers, 1 of 4 at epoch 2
    verdicts = {v["arm"]: v for v in lang["verdicts"]}
    assert verdicts["lora"]["answer_logprob"] == "worse" and verdicts["lora"]["heldout_perplexity"] == "worse"
    assert verdicts["projector"]["answer_logprob"] == "no change shown"
    assert "language.png" in [p.name for p in files.plots]
    md = files.markdown.read_text()
    assert "Language forgetting (text set)" in md and "degraded on both measures" in md
    assert "+12.696 [12.696, 12.696]" in md  # perplexity change of lora, epoch 2
    # plain-text answers have no classes: no concentration curves, no confusion matrix for the text set
    summary = json.loads((root / "metrics.json").read_text())
    assert summary["text_datasets"] == ["text"]
    assert all(c["dataset"] != "text" for arm in summary["arms"] for c in arm["confusion"])
    concentration = md[md.index("## Prediction concentration"):].split("\n## ")[0]
    assert "text" not in concentration.replace("text set", "")


def test_emt_report_without_language_rows_has_no_section(tmp_path):
    from tests.synthetic_emt_run import make_run
    from unforget.studies.emt import summarise_emt

    assert summarise_emt(make_run(tmp_path / "run")).to_dict()["language"] is None


TWO_BY_TWO = """name: synthetic
model: {name: tiny-test-model}
cells: {id_image_id_text: T, id_image_ood_text: IO, ood_image_id_text: OI, ood_image_ood_text: OO}
extra_datasets: [text]
sweep: {methods: [{name: projector, method: projector}], lrs: [0.001], epochs: [2]}
alpha: 0.05
"""


def test_twobytwo_report_has_the_language_section(tmp_path):
    from unforget.studies.twobytwo import summarise_twobytwo, write_twobytwo_report

    (tmp_path / "config.yaml").write_text(TWO_BY_TWO)
    cells = [{"epoch": 0, "id": f"{c}{i}", "dataset": c, "reference": "x", "prediction": "x", "correct": True}
             for c in ("T", "IO", "OI", "OO") for i in range(3)]
    write_jsonl(tmp_path / "base" / "samples.jsonl", cells + text_records(range(4), 0))
    write_jsonl(tmp_path / "base" / "language.jsonl", [row(BASE, 0)])
    (tmp_path / "base" / "DONE").write_text("")
    run = tmp_path / "sweep" / "projector-lr0.001-e2"
    write_jsonl(run / "samples.jsonl", [{**r, "epoch": 2} for r in cells] + text_records(range(1), 2))
    (run / "spec.json").write_text(json.dumps({"name": "sweep/projector-lr0.001-e2", "kind": "sweep", "lr": 1e-3,
                                               "epochs": 2, "method": {"name": "projector", "method": "projector"}}))
    write_jsonl(run / "language.jsonl", [row(WORSE, 2)])
    (run / "DONE").write_text("")
    lang = summarise_twobytwo(tmp_path).to_dict()["language"]
    assert lang["base"]["accuracy"]["value"] == pytest.approx(1.0) and lang["missing"] == []
    (point,) = lang["points"]
    assert point["name"] == "sweep/projector-lr0.001-e2" and point["epoch"] == 2
    assert point["accuracy"]["value"] == pytest.approx(0.25)
    assert point["accuracy_change"]["value"] == pytest.approx(-0.75)  # 3 of 4 prompts lost, paired
    assert point["verdicts"] == {"heldout_perplexity": "worse", "answer_logprob": "worse"}
    assert "sweep/projector-lr0.001-e2, epoch 2 vs the base model" in lang["sentences"][0]
    md = write_twobytwo_report(tmp_path).markdown.read_text()
    assert "Language forgetting (text set)" in md and "change in text accuracy" in md
    # the text records stay out of the four cells
    assert summarise_twobytwo(tmp_path).to_dict()["base"]["id_image_id_text"]["n"] == 3
