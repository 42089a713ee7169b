"""The "text" dataset: prompts as data, no images, judged by the exact judge's rule, through the evaluator."""

from __future__ import annotations

from unforget.data import load_dataset
from unforget.data.text import heldout_texts
from unforget.evaluation.judges.base import JudgeItem
from unforget.evaluation.judges.exact import ExactJudge


def test_text_set_has_about_100_imageless_prompts_with_answers():
    ds = load_dataset("text")
    test, train = ds.split("test"), ds.split("train")
    assert ds.task == "text" and 95 <= len(test) <= 110 and len(train) >= 30
    assert all(s.image is None and s.question and s.meta["accepted"] for s in test)
    assert not {s.question for s in test} & {s.question for s in train}  # never trained on what is evaluated
    assert ds.question_for(test[0], 0) == test[0].question  # no template appended
    assert len(heldout_texts()) >= 10


def test_kinds_option_selects_prompts():
    ds = load_dataset("text?kinds=arithmetic")
    assert ds.split("test") and all(s.meta["kind"] == "arithmetic" for s in ds.split("test"))


def test_accepted_answers_judged_inside_sentences():
    ds = load_dataset("text")
    judge = ExactJudge()
    by_q = {s.question: s for s in ds.split("test")}

    def correct(question: str, answer: str) -> bool:
        s = by_q[question]
        item = JudgeItem(question, answer, ds.reference(s), ds.class_names, ds.synonyms)
        return bool(judge.judge([item])[0].correct)

    assert correct("What is the capital of France?", "The capital of France is Paris.")
    assert not correct("What is the capital of France?", "It is Lyon.")
    assert correct("How many legs does a spider have?", "A spider has eight legs.")
    assert correct("What is the capital of China?", "Peking")
    assert correct("Translate 'gracias' from Spanish to English.", "Thank you!")


def test_evaluator_generates_text_samples_even_in_rank_mode(tmp_path):
    from unforget.evaluation.config import EvalConfig
    from unforget.evaluation.evaluator import evaluate
    from unforget.models.config import ModelConfig
    from unforget.runs import RunDir

    cfg = EvalConfig(model=ModelConfig(name="tiny-llava", device="cpu"), datasets=["text"], mode="rank", limit=4,
                     batch_size=4, max_new_tokens=4)
    run = RunDir(tmp_path / "run")
    result = evaluate(cfg, run=run)
    records = run.samples()
    assert len(records) == 4 and all(r["mode"] == "generate" and r["correct"] in (True, False) for r in records)
    assert 0.0 <= result.accuracy("text") <= 1.0


def test_language_scores_are_finite_and_answer_likelihood_tracks_the_model():
    import math

    import torch

    from unforget.evaluation.language import language_scores
    from unforget.models.loading import load_model

    lm = load_model("tiny-llava", device="cpu", dtype="float32")
    before = language_scores(lm, limit=6)
    assert before.n_answers == 6 and before.n_heldout_tokens > 50
    assert before.answer_logprob < 0 and math.isfinite(before.heldout_perplexity) and before.heldout_perplexity > 1
    with torch.no_grad():  # a broken language model: the held-out text gets less likely
        lm.model.lm_head.weight.mul_(0.0)
    after = language_scores(lm, limit=6)
    assert after.heldout_perplexity != before.heldout_perplexity
