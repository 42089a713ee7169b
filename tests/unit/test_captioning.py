"""Caption metrics on hand-checkable cases: CIDEr-D as pycocoevalcap computes it, BLEU as sacrebleu does, and
the evaluator / EMT report paths for caption sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unforget.data import ImageDataset, Sample
from unforget.errors import DataError
from unforget.evaluation.captioning import (
    CaptionMetrics,
    bleu_estimate,
    bleu_from_statistics,
    bleu_statistics,
    caption_metrics,
    caption_record_scores,
    cider_d_scores,
    normalize_caption,
    sample_references,
)

REFS = [["a red circle in the top left corner", "a red circle at the top left"],
        ["a blue square to the left of a green star", "a green star to the right of a blue square"],
        ["a yellow heart above a purple cross"]]


def test_normalisation_lowercases_and_drops_punctuation():
    assert normalize_caption("  A Red-circle, at the TOP left!  ") == "a red circle at the top left"
    assert normalize_caption("") == ""
    assert normalize_caption(None) == ""  # type: ignore[arg-type]


def test_references_keep_the_reference_first_without_repeats():
    assert sample_references("a b", ["a b", "c d", "", "c d"]) == ["a b", "c d"]
    assert sample_references("a b", None) == ["a b"]


def test_identical_captions_with_disjoint_vocabularies_score_cider_10():
    # every n-gram occurs in one image's references only: idf = log(2) everywhere, cosine 1 at every n,
    # equal lengths (no penalty): (1 + 1 + 1 + 1) / 4 / 1 reference * 10 = 10
    refs = [["red circle top left corner"], ["blue square beside green star"]]
    scores = cider_d_scores(["red circle top left corner", "Blue square, beside green star."], refs)
    np.testing.assert_allclose(scores, [10.0, 10.0])


def test_cider_matches_pycocoevalcap_on_a_small_set():
    # pycocoevalcap 1.2 Cider().compute_score on the normalised strings gave (7.06098883, 3.42521169, 0.0)
    scores = cider_d_scores(["a red circle at the top left", "a blue square and a green star", "a red circle"], REFS)
    np.testing.assert_allclose(scores, [7.06098883, 3.42521169, 0.0], atol=1e-7)


def test_cider_orders_exact_over_partial_over_unrelated():
    def first(caption: str) -> float:  # the score of image 0's caption, in the same three-image set
        return float(cider_d_scores([caption, "x", "y"], REFS)[0])

    exact, partial, unrelated = (first("a red circle in the top left corner"), first("a red circle in the corner"),
                                 first("a purple cross"))
    assert exact > partial > unrelated == 0.0
    # an empty caption scores 0 rather than failing
    assert cider_d_scores(["", "x", "y"], REFS)[0] == 0.0


def test_cider_needs_references():
    with pytest.raises(DataError, match="no reference"):
        cider_d_scores(["a"], [[]])
    with pytest.raises(DataError, match="one list per caption"):
        cider_d_scores(["a", "b"], [["a"]])


def test_identical_caption_gives_bleu_100():
    caption = "a red circle in the top left corner"
    rows, signature = bleu_statistics([caption], [[caption]])
    assert float(bleu_from_statistics(*rows.T)) == pytest.approx(100.0)
    assert "tok:13a" in signature and "smooth:exp" in signature


def test_bleu_is_zero_without_any_match_and_with_too_short_captions():
    rows, _ = bleu_statistics(["zebra"], [["a red circle"]])
    assert float(bleu_from_statistics(*rows.T)) == 0.0
    rows, _ = bleu_statistics(["a red"], [["a red circle"]])  # no 3-grams at all: sacrebleu scores 0
    assert float(bleu_from_statistics(*rows.T)) == 0.0


def test_bleu_equals_sacrebleu_corpus_score_with_variable_reference_counts():
    import sacrebleu

    candidates = ["a red circle at the top left", "a blue square and a green star", "a heart above a cross",
                  "a red circle"]
    references = [*REFS, ["a red circle in the bottom right corner", "a red circle at the bottom right",
                          "a red circle in the bottom right of the image"]]
    rows, _ = bleu_statistics(candidates, references)
    streams = [[normalize_caption(r[k]) if k < len(r) else None for r in references] for k in range(3)]
    expected = sacrebleu.corpus_bleu([normalize_caption(c) for c in candidates], streams).score
    assert float(bleu_from_statistics(*rows.T)) == pytest.approx(expected, abs=1e-9)
    # the vectorised form scores many resamples at once, each as sacrebleu would
    picks = np.array([[0, 0, 1, 2], [3, 3, 3, 1]])
    columns = [rows[:, j][picks] for j in range(rows.shape[1])]
    for k, idx in enumerate(picks):
        want = sacrebleu.corpus_bleu([normalize_caption(candidates[i]) for i in idx],
                                     [[normalize_caption(references[i][0]) for i in idx],
                                      [normalize_caption(references[i][1]) if len(references[i]) > 1 else None
                                       for i in idx],
                                      [normalize_caption(references[i][2]) if len(references[i]) > 2 else None
                                       for i in idx]]).score
        assert bleu_from_statistics(*columns)[k] == pytest.approx(want, abs=1e-9)


def test_caption_metrics_carry_bootstrap_intervals_and_no_accuracy():
    candidates = ["a red circle at the top left", "a blue square and a green star", "a heart above a cross"]
    m = caption_metrics(candidates, REFS, n_resamples=500)
    assert isinstance(m, CaptionMetrics) and m.accuracy is None and m.n == 3
    assert m.cider_low <= m.cider <= m.cider_high
    assert m.bleu_low <= m.bleu <= m.bleu_high
    assert m.references_per_sample == pytest.approx(5 / 3)
    d = m.to_dict()
    assert d["accuracy"] is None and d["task"] == "caption" and set(d) >= {"cider", "bleu", "cider_low", "bleu_high"}
    est, _ = bleu_estimate(candidates, REFS, n_resamples=200)
    assert est.value == pytest.approx(m.bleu)
    assert caption_metrics([], []).n == 0


def caption_dataset() -> ImageDataset:
    samples = [Sample(id=f"c{i}", image=np.zeros((8, 8, 3), np.uint8), answer=refs[0], meta={"captions": refs})
               for i, refs in enumerate(REFS)]
    return ImageDataset("tiny-captions", "caption", {"test": samples}, templates=["Describe the image."])


def test_evaluator_scores_caption_records_with_cider_and_bleu():
    from unforget.evaluation.evaluator import EvalResult, score_records

    ds = caption_dataset()
    records = [{"id": s.id, "dataset": ds.name, "task": "caption", "answer": a,
                "references": sample_references(s.answer, s.meta["captions"])}
               for s, a in zip(ds.split("test"), ["a red circle at the top left", "a blue square and a green star",
                                                  "a red circle"])]
    records.append({"id": "bad", "dataset": ds.name, "skipped": True})
    result = score_records(ds, records, ["exact"], [])
    assert result.metrics.accuracy is None and result.metrics.skipped == 1
    assert result.metrics.cider == pytest.approx((7.06098883 + 3.42521169) / 3, abs=1e-7)
    doc = EvalResult({ds.name: result}).to_dict()["datasets"][ds.name]
    assert doc["accuracy"] is None and math.isfinite(doc["bleu"])
    assert caption_record_scores(records) == pytest.approx({"c0": 7.06098883, "c1": 3.42521169, "c2": 0.0})


def test_emt_report_leaves_caption_sets_out_of_accuracy_figures(tmp_path):
    from tests.synthetic_emt_run import make_run, write_jsonl
    from unforget.studies.emt import summarise_emt, write_emt_report
    from unforget.runs import read_jsonl

    run = make_run(tmp_path / "run", arms={"lora": {1: (set(range(15)), set(range(18)), set())}})
    caption_rows = [{"epoch": e, "id": f"c{i}", "dataset": "captions", "task": "caption", "answer": "a red circle",
                     "reference": refs[0], "references": refs, "mode": "generate"}
                    for e in (0, 1) for i, refs in enumerate(REFS)]
    for folder, epoch in ((run / "base", 0), (run / "lora", 1)):
        rows = read_jsonl(folder / "samples.jsonl")
        write_jsonl(folder / "samples.jsonl", rows + [dict(r, seed=0) if epoch else r for r in caption_rows
                                                      if r["epoch"] == epoch])
    summary = summarise_emt(run).to_dict()
    assert summary["base"]["captions"]["accuracy"] is None
    assert summary["base"]["captions"]["unjudged"] == 3
    write_emt_report(run)
    assert (run / "report.html").is_file()
