"""Caption figures of the pycocoevalcap backend against pycocoevalcap called directly on the same captions."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("pycocoevalcap")

from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402

from unforget.evaluation.captioning import (caption_metrics, coco_bleu_from_statistics,  # noqa: E402
                                            coco_bleu_statistics, coco_tokenize, java_available)

REFS = [["A man with a red helmet on a small moped on a dirt road.", "Man riding a motor bike on a dirt road.",
         "A man in a red shirt rides a motorbike."],
        ["A woman wearing a net on her head cutting a cake.", "A woman cutting a large white sheet cake."],
        ["A child holding a flowered umbrella and petting a yak.", "A boy with an umbrella near cows.",
         "A young man holding an umbrella next to a herd of cattle.", "Cows and a boy."]]
CANDIDATES = ["A man rides a motorbike on a dirt road.", "a woman cuts a cake", "cows"]


def _direct(candidates, references):
    """The COCO toolkit as its own eval.py runs it: PTB tokenizer (Java), then each scorer."""
    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": c}] for i, c in enumerate(candidates)}
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        gts, res = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    else:
        from unforget.evaluation.captioning import normalize_caption

        gts = {i: [normalize_caption(c["caption"]) for c in v] for i, v in gts.items()}
        res = {i: [normalize_caption(c["caption"]) for c in v] for i, v in res.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_each = Cider().compute_score(gts, res)
    return bleu[3], cider, np.asarray(cider_each), gts, res


def test_cider_and_bleu4_equal_pycocoevalcap_on_the_same_captions():
    bleu4, cider, cider_each, _gts, _res = _direct(CANDIDATES, REFS)
    m = caption_metrics(CANDIDATES, REFS, backend="pycocoevalcap", n_resamples=300)
    assert m.cider == pytest.approx(cider, abs=1e-12)
    assert m.bleu == pytest.approx(100 * bleu4, abs=1e-9)
    assert m.cider_low <= m.cider <= m.cider_high and m.bleu_low <= m.bleu <= m.bleu_high
    assert m.meteor is None  # METEOR only when the set asks for it (metric=coco): its Java start-up is slow
    assert m.scorer.startswith("pycocoevalcap")
    assert m.to_dict()["accuracy"] is None


def test_bleu_resample_statistics_recompute_the_corpus_score_of_any_subset():
    # the interval's replicates must be BleuScorer's corpus BLEU-4 of the resampled images: checked on subsets
    gts, res, _ = coco_tokenize(CANDIDATES, REFS)
    rows = coco_bleu_statistics(gts, res)
    for subset in ([0, 1, 2], [0, 0, 2], [1], [2, 2, 2]):
        sub_gts = {k: gts[i] for k, i in enumerate(subset)}
        sub_res = {k: res[i] for k, i in enumerate(subset)}
        want, _ = Bleu(4).compute_score(sub_gts, sub_res, verbose=0)
        got = coco_bleu_from_statistics(*[rows[subset, j][None, :] for j in range(rows.shape[1])])[0]
        assert got == pytest.approx(want[3], rel=1e-9, abs=1e-12)


def test_unknown_backend_is_refused():
    from unforget.errors import DataError

    with pytest.raises(DataError, match="backend 'coco'"):
        caption_metrics(CANDIDATES, REFS, backend="coco")


@pytest.mark.slow
@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
@pytest.mark.skipif(not os.environ.get("UNFORGET_TEST_METEOR"),
                    reason="two METEOR start-ups take minutes on a busy machine: set UNFORGET_TEST_METEOR=1")
def test_meteor_equals_pycocoevalcap_meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    _b, _c, _e, gts, res = _direct(CANDIDATES, REFS)
    scorer = Meteor()
    want, each = scorer.compute_score(gts, res)
    del scorer
    m = caption_metrics(CANDIDATES, REFS, backend="pycocoevalcap", meteor=True, n_resamples=200)
    assert m.meteor == pytest.approx(want, abs=1e-9)
    assert m.meteor_low <= np.mean(each) <= m.meteor_high
