"""Multiple-choice sets evaluated end to end on the embedded tiny-llava: a VLMEvalKit TSV (CircularEval with the file's
own rotated rows, mischoice from a class column) and question/options/answer JSON lines, in generate and rank mode,
through the real CLI; and scripted answers through the real evaluator, scored under both matchers by hand."""

import json

import pytest

import unforget.evaluation.choices as choices_module
from unforget.cli import main
from unforget.data import load_dataset
from unforget.evaluation.choices import question_variants
from unforget.evaluation.config import EvalConfig
from unforget.evaluation.evaluator import evaluate
from unforget.models.config import ModelConfig
from unforget.models.loading import load_configured_model
from unforget.runs import RunDir, read_jsonl
from unforget.stats import mcnemar_exact

from ..unit.test_choice_formats import png, write_tsv
from ..unit.test_choices import paper_correct, vlmevalkit_reference

TSV_HEADER = ["index", "question", "hint", "A", "B", "C", "answer", "category", "bird", "image"]


def run_cli(*args):
    return main([str(a) for a in args])


def bird_tsv(tmp_path):
    import base64

    img = base64.b64encode(png((90, 140, 30), size=16)).decode()
    rows = [
        [0, "Which bird is this?", "", "owl", "goldfinch", "crow", "B", "fine-grained", "goldfinch", img],
        [1, "What does this bird eat?", "", "seeds", "goldfinch", "mice", "A", "knowledge", "goldfinch", "0"],
        [2, "Where does it live?", "Field guide.", "forest", "sea", "goldfinch", "A", "knowledge", "goldfinch", "0"],
        [1000001, "What does this bird eat?", "", "goldfinch", "mice", "seeds", "C", "knowledge", "goldfinch", "0"],
        [2000001, "What does this bird eat?", "", "mice", "seeds", "goldfinch", "B", "knowledge", "goldfinch", "0"],
    ]
    return write_tsv(tmp_path / "birds.tsv", rows, TSV_HEADER)


def bird_jsonl(tmp_path):
    (tmp_path / "bird.png").write_bytes(png((200, 180, 20), size=16))
    rows = [
        {"image": "bird.png", "question": "Which position is the man in?",
         "options": ["Fowler's position", "Upright position", "Lying", "Sitting"], "answer": "A"},
        {"image": "bird.png", "question": "Which bird is this?", "options": ["owl", "goldfinch", "crow"],
         "answer": "C", "image_class": "crow"},
        {"image": "bird.png", "question": "What does it eat?", "options": ["seeds", "goldfinch", "mice"],
         "answer": "A", "image_class": "goldfinch"},
        {"image": "bird.png", "question": "What colour is it?", "options": ["black", "yellow"], "answer": "B"},
        {"image": "bird.png", "question": "Where is it?", "options": ["tree", "sea", "goldfinch"], "answer": "A",
         "image_class": "goldfinch"},
    ]
    (tmp_path / "birds.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path / "birds.jsonl"


def test_tsv_and_jsonl_generate_end_to_end_on_tiny_llava(tmp_path):
    tsv = f"mmbench-tsv:{bird_tsv(tmp_path)}?circular=true&class_column=bird"
    out = tmp_path / "gen"
    assert run_cli("eval", "--model", "tiny-llava", "--datasets", f"{tsv},mc-jsonl:{bird_jsonl(tmp_path)}",
                   "--max-new-tokens", 6, "--out", out) == 0
    records = read_jsonl(out / "samples.jsonl")
    by_set = {}
    for r in records:
        by_set.setdefault(r["dataset"], []).append(r)
    tsv_records, jsonl_records = by_set[tsv], by_set[f"mc-jsonl:{tmp_path / 'birds.jsonl'}"]
    assert [r["id"] for r in tsv_records] == ["0", "1", "2"] and len(jsonl_records) == 5
    # question 1 has its two rotated rows in the file: asked three times; the others are rotated by unforget
    assert [len(r["choice"]["rotations"]) for r in tsv_records] == [3, 3, 3]
    for r in records:  # every asking re-read by VLMEvalKit's own code gives the same verdicts
        asked = r["choice"].get("rotations") or [{"answer": r["answer"], "reference": r["reference"],
                                                  "correct": r["correct"]}]
        for a, options in zip(asked, asked_options(r)):
            assert (vlmevalkit_reference(a["answer"], options) == a["reference"]) == a["correct"]
        assert r["correct"] == all(a["correct"] for a in asked)
        assert r["task"] == "multiple_choice" and r["judge"] == "choice-vlmevalkit"
    metrics = json.loads((out / "metrics.json").read_text())["datasets"]
    tsv_choice = metrics[tsv]["choice"]
    assert tsv_choice["circular"] and tsv_choice["every_asking"]["n"] == 9
    # goldfinch is a wrong option of questions 1 and 2: both count; question 0's goldfinch is the right answer
    assert tsv_choice["mischoice_eligible"] == 2
    assert tsv_choice["mischoice"]["n"] == 2 and 0 <= tsv_choice["mischoice"]["low"] <= tsv_choice["mischoice"]["high"]
    assert metrics[tsv]["accuracy_low"] <= metrics[tsv]["accuracy"] <= metrics[tsv]["accuracy_high"]
    # resuming the finished run recomputes nothing and keeps the metrics
    before = (out / "samples.jsonl").read_text()
    assert run_cli("eval", "--model", "tiny-llava", "--datasets", f"{tsv},mc-jsonl:{bird_jsonl(tmp_path)}",
                   "--max-new-tokens", 6, "--out", out) == 0
    assert (out / "samples.jsonl").read_text() == before
    assert json.loads((out / "metrics.json").read_text())["datasets"][tsv]["choice"] == tsv_choice


def asked_options(record):
    """The options of each asking of a record, rebuilt from its dataset (the record keeps the first order only)."""
    ds = load_dataset(record["dataset"])
    (sample,) = [s for s in ds.split("test") if s.id == record["id"]]
    return [v.options for v in question_variants(sample, ds.choice)]


def test_rank_mode_ranks_each_questions_own_options(tmp_path):
    refs = {by: f"mc-jsonl:{bird_jsonl(tmp_path)}?circular=true&rank_by={by}" for by in ("letter", "text")}
    out = tmp_path / "rank"
    assert run_cli("eval", "--model", "tiny-llava", "--datasets", ",".join(refs.values()), "--mode", "rank",
                   "--out", out) == 0
    records = read_jsonl(out / "samples.jsonl")
    for rank_by, ref in refs.items():
        ds = load_dataset(ref)
        ranked = [r for r in records if r["dataset"] == ref]
        assert len(ranked) == 5
        for r in ranked:
            (sample,) = [s for s in ds.split("test") if s.id == r["id"]]
            variants = question_variants(sample, ds.choice)
            assert len(r["choice"]["rotations"]) == len(variants) == len(sample.meta["options"])
            for v, asked in zip(variants, r["choice"]["rotations"]):
                candidates = list(v.options) if rank_by == "letter" else list(v.options.values())
                assert asked["answer"] in candidates and asked["letter"] in v.options
                assert asked["correct"] == (asked["letter"] == v.answer)
            top = [name for name, _ in r["top_k"]]
            first = list(variants[0].options) if rank_by == "letter" else list(variants[0].options.values())
            assert sorted(top) == sorted(first) and top[0] == r["answer"]
            assert (r["rank_of_reference"] == 0) == r["choice"]["rotations"][0]["correct"]
            assert r["correct"] == all(a["correct"] for a in r["choice"]["rotations"])
            assert r["judge"] == "rank" and r["mode"] == "rank"


SCRIPT = {  # question stem -> the answer given in the original order
    "Which position is the man in?": "A. Fowler's position",  # right under both
    "Which bird is this?": "The answer is C",  # right for VLMEvalKit, not for the paper's rule
    "What does it eat?": "B. goldfinch",  # wrong: picks the option naming the image's class (mischoice)
    "What colour is it?": "a",  # VLMEvalKit: no letter; the paper's rule: A (wrong either way)
    "Where is it?": "A",  # right; its class option (C) is eligible but not picked
}


@pytest.fixture(scope="module")
def tiny_llava():
    return load_configured_model(ModelConfig())


def scripted(monkeypatch, wrong_rotation=None):
    """Answer from SCRIPT in the original order; in later rotations, the right letter (or, for the stem
    ``wrong_rotation``, a wrong one)."""
    def fake_generate(lm, requests, **_):
        answers = []
        for r in requests:
            lines = r.question.split("\n")
            stem, options = lines[0], {line[0]: line[3:] for line in lines[1:-1]}
            if list(options.values()) == ORIGINAL_OPTIONS[stem]:
                answers.append(SCRIPT[stem])
            else:
                right = next(k for k, o in options.items() if o == RIGHT[stem])
                answers.append(next(k for k in options if k != right) if stem == wrong_rotation else right)
        return answers

    monkeypatch.setattr(choices_module, "generate_answers", fake_generate)


ORIGINAL_OPTIONS = {}
RIGHT = {}


@pytest.mark.parametrize("matcher", ["vlmevalkit", "strict"])
def test_scripted_answers_are_scored_by_hand(tmp_path, monkeypatch, tiny_llava, matcher):
    for row in map(json.loads, bird_jsonl(tmp_path).read_text().splitlines()):
        ORIGINAL_OPTIONS[row["question"]] = row["options"]
        RIGHT[row["question"]] = row["options"]["ABCD".index(row["answer"])]
    scripted(monkeypatch)
    ref = f"mc-jsonl:{tmp_path / 'birds.jsonl'}?matcher={matcher}"
    result = evaluate(EvalConfig(datasets=[ref]), lm=tiny_llava, run=RunDir(tmp_path / matcher))
    records = read_jsonl(tmp_path / matcher / "samples.jsonl")
    expected = {"vlmevalkit": [True, True, False, False, True], "strict": [True, False, False, False, True]}[matcher]
    assert [r["correct"] for r in records] == expected
    for r in records:  # the paper's own rule agrees record by record
        if matcher == "strict":
            assert r["correct"] == paper_correct(r["answer"], r["reference"])
    assert [r["prediction"] for r in records] == {"vlmevalkit": ["A", "C", "B", None, "A"],
                                                  "strict": ["A", None, "B", "A", "A"]}[matcher]
    figures = result.results[ref]
    assert figures.metrics.accuracy == pytest.approx(sum(expected) / 5)
    assert figures.choice.mischoice_eligible == 2 and figures.choice.mischoice.value == pytest.approx(1 / 2)
    assert figures.choice.mischoice_of_errors.value == pytest.approx(1.0)  # the one eligible error is a mischoice
    assert figures.choice.no_option.value == pytest.approx({"vlmevalkit": 1 / 5, "strict": 1 / 5}[matcher])


def test_circular_needs_every_rotation_and_pairs_like_accuracy(tmp_path, monkeypatch, tiny_llava):
    for row in map(json.loads, bird_jsonl(tmp_path).read_text().splitlines()):
        ORIGINAL_OPTIONS[row["question"]] = row["options"]
        RIGHT[row["question"]] = row["options"]["ABCD".index(row["answer"])]
    ref = f"mc-jsonl:{tmp_path / 'birds.jsonl'}?circular=true"
    scripted(monkeypatch)
    evaluate(EvalConfig(datasets=[ref]), lm=tiny_llava, run=RunDir(tmp_path / "before"))
    scripted(monkeypatch, wrong_rotation="Which position is the man in?")
    after = evaluate(EvalConfig(datasets=[ref]), lm=tiny_llava, run=RunDir(tmp_path / "after"))
    before_records = read_jsonl(tmp_path / "before" / "samples.jsonl")
    after_records = read_jsonl(tmp_path / "after" / "samples.jsonl")
    assert [r["correct"] for r in before_records] == [True, True, False, False, True]
    # the first question is still right in its original order, wrong in a rotation: wrong under CircularEval
    assert [r["correct"] for r in after_records] == [False, True, False, False, True]
    assert after_records[0]["choice"]["rotations"][0]["correct"]
    assert [a["correct"] for a in after_records[0]["choice"]["rotations"]] == [True, False, False, False]
    summary = after.results[ref].choice
    assert summary.first_rotation.value == pytest.approx(3 / 5)  # VLMEvalKit's circ0
    assert summary.every_asking.n == 4 + 3 + 3 + 2 + 3
    # per-sample correctness pairs across runs like accuracy does: one discordant pair, right -> wrong
    test = mcnemar_exact([r["correct"] for r in before_records], [r["correct"] for r in after_records])
    assert (test.n_discordant_b, test.n_discordant_c) == (1, 0)
