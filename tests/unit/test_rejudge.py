"""Rejudging a run: only answers whose verdict is missing or failed go to a judge; the rest stay as they were."""

import json

import pytest

from unforget.cli import main
from unforget.data import ImageDataset
from unforget.evaluation.judges.base import JUDGES, Verdict
from unforget.evaluation.judges.exact import ExactJudge
from unforget.evaluation.rejudge import missing_verdicts, rejudge_records
from unforget.runs import read_jsonl

DIGITS = ImageDataset("toy-digits", "classification", {"test": []}, class_names=[str(i) for i in range(10)],
                      synonyms={"7": ["seven"]})


class ScriptedJudge:
    """Answers from a table (answer -> correct); remembers what it was asked. None in the table = a failure."""

    name = "scripted"
    table: dict = {}
    seen: list = []

    def __init__(self, **options):
        self.options = options

    def identity(self):
        return {"judge": self.name}

    def judge(self, items):
        out = []
        for it in items:
            type(self).seen.append(it.answer)
            correct = self.table[it.answer]
            out.append(Verdict(prediction=it.reference if correct else None, correct=correct, judge=self.name,
                               error=None if correct is not None else "endpoint down"))
        return out

    def stats(self):
        return {}

    def close(self):
        pass


JUDGES.register("scripted", ScriptedJudge, description="test judge")


@pytest.fixture(autouse=True)
def reset_script():
    ScriptedJudge.table = {}
    ScriptedJudge.seen = []


def verdict(correct, judge="scripted", prediction=None):
    return Verdict(prediction=prediction, correct=correct, judge=judge,
                   error="endpoint down" if correct is None else None).to_dict()


def record(i, answer, reference, judgements, **extra):
    primary = judgements.get("scripted", {"prediction": None, "correct": None, "judge": "scripted",
                                          "confident": True})
    return {"id": f"d{i}", "dataset": "toy-digits", "split": "test", "question": "What is the number?",
            "answer": answer, "reference": reference, "label": int(reference), "prediction": primary["prediction"],
            "correct": primary["correct"], "judge": primary["judge"], "confident": primary.get("confident", True),
            "mode": "generate", "judge_identity": {"judge": "scripted"}, "judgements": judgements, "leaks": {},
            **extra}


def make_records():
    exact = ExactJudge()
    return [
        record(0, "It is 7.", "7", {"scripted": verdict(True, prediction="7"),
                                    "exact": exact.judge([_item("It is 7.", "7")])[0].to_dict()}),
        record(1, "seven", "7", {"scripted": verdict(None),
                                 "exact": exact.judge([_item("seven", "7")])[0].to_dict()}),
        {"id": "d2", "dataset": "toy-digits", "skipped": True, "error": "unreadable image"},
        record(3, "It is 3.", "4", {"scripted": verdict(False)}),  # exact was added to the run later
        record(4, "no idea", "5", {"scripted": verdict(None), "exact": verdict(False, "exact")}),
    ]


def _item(answer, reference):
    from unforget.evaluation.evaluator import judge_item

    return judge_item(DIGITS, "What is the number?", answer, reference)


def test_missing_verdicts():
    records = make_records()
    names = ["scripted", "exact"]
    assert [missing_verdicts(r, names) for r in records] == [[], ["scripted"], [], ["exact"], ["scripted"]]
    assert missing_verdicts({"task": "caption", "answer": "a cat"}, names) == []


def test_only_missing_or_failed_verdicts_are_judged():
    records = make_records()
    before = json.loads(json.dumps(records))
    ScriptedJudge.table = {"seven": True, "no idea": None}
    result = rejudge_records(records, [ScriptedJudge(), ExactJudge()], {"toy-digits": DIGITS})
    assert sorted(ScriptedJudge.seen) == ["no idea", "seven"]  # d0 and d3 were decided: never asked
    assert result.sent == {"scripted": 2, "exact": 1}
    assert result.touched == 3 and result.records == 4
    assert result.still_unjudged == {"scripted": 1, "exact": 0}  # the endpoint is still down for d4
    assert records[0] == before[0] and records[2] == before[2]  # untouched, field for field
    assert records[1]["correct"] is True and records[1]["prediction"] == "7"
    assert records[1]["judgements"]["scripted"]["correct"] is True
    assert records[1]["judgements"]["exact"] == before[1]["judgements"]["exact"]
    # d3: the new exact verdict is stored beside the scripted one, which still decides
    assert records[3]["judgements"]["exact"]["prediction"] == "3" and records[3]["correct"] is False
    assert records[3]["judgements"]["scripted"] == before[3]["judgements"]["scripted"]
    assert records[4]["correct"] is None and records[4]["judgements"]["scripted"]["error"] == "endpoint down"
    # a second pass asks only what is still missing
    ScriptedJudge.seen = []
    ScriptedJudge.table = {"no idea": False}
    again = rejudge_records(records, [ScriptedJudge(), ExactJudge()], {"toy-digits": DIGITS})
    assert ScriptedJudge.seen == ["no idea"] and again.sent == {"scripted": 1, "exact": 0}
    assert records[4]["correct"] is False and again.still_unjudged == {"scripted": 0, "exact": 0}


def test_a_new_first_judge_decides_every_record():
    records = make_records()
    result = rejudge_records(records, [ExactJudge()], {"toy-digits": DIGITS})
    assert result.sent == {"exact": 1}  # only d3 had no exact verdict
    judged = [r for r in records if not r.get("skipped")]
    assert all(r["judge_identity"]["judge"] == "exact" and r["judge"] == "exact" for r in judged)
    assert [r["correct"] for r in judged] == [True, True, False, False]


def write_run(folder, records, judges):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        "model:\n  name: no-model-is-loaded-when-rejudging\n"
        f"datasets: [digits]\njudges: [{', '.join(judges)}]\nlimit: 5\n")
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "metrics.json").write_text(json.dumps(
        {"datasets": {"digits": {"baselines": {"linear-probe": {"accuracy": 0.9}}, "seconds": 12.5}}}))


def test_cli_rejudges_an_eval_run_folder(tmp_path, capsys):
    records = make_records()
    for r in records:
        r["dataset"] = "digits"
    out = tmp_path / "run"
    write_run(out, records, ["scripted", "exact"])
    ScriptedJudge.table = {"seven": True, "no idea": None}
    assert main(["eval", "--rejudge", "--out", str(out)]) == 3  # d4 is still unjudged: said, and exit 3
    after = read_jsonl(out / "samples.jsonl")
    assert [r["id"] for r in after] == [r["id"] for r in records]
    assert after[0] == records[0] and after[1]["correct"] is True
    assert not list(out.glob(".samples.jsonl.*"))  # the temporary file was renamed into place
    doc = json.loads((out / "metrics.json").read_text())
    digits = doc["datasets"]["digits"]
    # judged d0 (right), d1 (right), d3 (wrong); d4 still unjudged, d2 skipped
    assert digits["n"] == 3 and digits["accuracy"] == pytest.approx(2 / 3)
    assert digits["unjudged"] == 1 and digits["skipped"] == 1
    assert digits["baselines"] == {"linear-probe": {"accuracy": 0.9}} and digits["seconds"] == 12.5
    assert doc["rejudge"]["sent"] == {"scripted": 2, "exact": 1}
    text = capsys.readouterr().out
    assert "1 verdicts unjudged" in text and f"unforget eval --rejudge --out {out}" in text


def test_cli_rejudge_needs_an_eval_run_folder(tmp_path, capsys):
    assert main(["eval", "--rejudge"]) == 2
    assert "--out RUN" in capsys.readouterr().out
    assert main(["eval", "--rejudge", "--out", str(tmp_path / "nothing")]) == 2
    assert "no config.yaml" in capsys.readouterr().out
    study = tmp_path / "study"
    study.mkdir()
    (study / "config.yaml").write_text("train: {dataset: digits}\nmethods: [{name: lora, method: lora}]\n")
    assert main(["eval", "--rejudge", "--out", str(study)]) == 2
    assert "no samples.jsonl under it" in capsys.readouterr().out


def test_cli_rejudges_every_evaluation_folder_of_a_study(tmp_path, capsys):
    from tests.synthetic_emt_run import make_run

    root = make_run(tmp_path / "run")
    before = {p: p.read_text() for p in root.rglob("samples.jsonl")}
    # the judge failed on lora's epoch-1 answer to s0 (right: "circle") and on the base model's to d0 (right: "0")
    failed = {root / "lora" / "samples.jsonl": ("s0", 1), root / "base" / "samples.jsonl": ("d0", 0)}
    for path, (sample, epoch) in failed.items():
        rows = read_jsonl(path)
        for r in rows:
            if r["id"] == sample and r["epoch"] == epoch:
                r.update(correct=None, prediction=None, judgements={"exact": {"prediction": None, "correct": None}})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--rejudge", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    # base: d0 and s20, whose verdict the synthetic run leaves failed ("blah": wrong)
    assert "lora: rejudged 1 of" in out and "base: rejudged 2 of" in out and "projector: rejudged 0 of" in out
    for path in failed:
        (row,) = [r for r in read_jsonl(path) if r["id"] == failed[path][0] and r["epoch"] == failed[path][1]]
        assert row["correct"] is True and row["prediction"] == row["reference"]
        assert row["judgements"]["exact"]["correct"] is True
    # nothing failed in projector's answers: every verdict as it was
    projector = root / "projector" / "samples.jsonl"
    assert [(r["id"], r["epoch"], r["correct"], r["prediction"]) for r in read_jsonl(projector)] == [
        (r["id"], r["epoch"], r["correct"], r["prediction"]) for r in map(json.loads, before[projector].splitlines())]
    # per-folder metrics from the rewritten records, per epoch; the base's encoder baselines carried over
    lora = json.loads((root / "lora" / "metrics.json").read_text())
    assert lora["epochs"]["1"]["datasets"]["shapes"]["accuracy"] == pytest.approx(19 / 21)  # s0-s17, s20
    assert lora["epochs"]["2"]["datasets"]["shapes"]["accuracy"] == pytest.approx(3 / 21)
    assert lora["rejudge"]["sent"] == {"exact": 1} and lora["method"] == "lora"
    base = json.loads((root / "base" / "metrics.json").read_text())
    assert base["datasets"]["digits"]["accuracy"] == pytest.approx(2 / 20)
    assert base["datasets"]["shapes"]["accuracy"] == pytest.approx(10 / 21) and base["epoch"] == 0
    assert base["datasets"]["digits"]["baselines"]["linear-probe"]["accuracy"] == 0.9
    # the study summary written again from the records: lora's epoch-1 shapes accuracy counts s0 again
    summary = json.loads((root / "metrics.json").read_text())
    (lora_arm,) = [a for a in summary["arms"] if a["name"] == "lora"]
    e1 = next(p for p in lora_arm["curves"]["shapes"] if p["epoch"] == 1)
    assert e1["accuracy"]["value"] == pytest.approx(19 / 21)
    assert (root / "report.html").is_file()
