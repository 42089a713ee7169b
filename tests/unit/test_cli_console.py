"""What the verbs print and do when nobody watches a terminal, and the verbs that surprised: progress lines for
batch jobs (done, rate, time left, on a steady clock), tables at full width with a legend when piped, a study
without -c, the studies' overrides on `finetune` and `plan`."""

from __future__ import annotations

import io
import json

import pytest
from rich.progress import Progress

from unforget.cli import main
from unforget.cli.console import PIPED_WIDTH, ProgressTracker, console, format_duration
from unforget.cli.eval import EVAL_COLUMNS_LEGEND, print_eval_table
from unforget.evaluation.evaluator import DatasetResult, EvalResult
from unforget.evaluation.metrics import ClassificationMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_progress_is_a_line_at_a_steady_interval():
    clock, out = Clock(), io.StringIO()
    tracker = ProgressTracker(Progress(disable=True), every_s=30.0, out=out, clock=clock)
    tracker("digits", 0, 600)  # first call: a line at once (a batch log shows the job started)
    for done, t in ((50, 10), (100, 20), (150, 30), (200, 40), (350, 60)):
        clock.now = 1000.0 + t
        tracker("digits", done, 600)
    clock.now = 1000.0 + 120
    tracker("digits", 600, 600)
    lines = out.getvalue().splitlines()
    # t=30: 150 done at 5/s -> 450 left = 90 s; t=60: 350 at 5.83/s -> 250 left = 43 s; t=120: done
    assert lines == ["digits: 0/600 (started)",
                     "digits: 150/600 (25%), 5.00/s, 1m30s left",
                     "digits: 350/600 (58%), 5.83/s, 43s left",
                     "digits: 600/600 (100%), 5.00/s, done in 2m00s"]


def test_progress_lines_are_per_label_and_training_gets_them_too():
    clock, out = Clock(), io.StringIO()
    tracker = ProgressTracker(Progress(disable=True), every_s=30.0, out=out, clock=clock)
    tracker("train", 0, 100)
    tracker("shapes", 0, 10)
    clock.now += 31
    tracker("train", 31, 100)
    assert out.getvalue().splitlines()[-1] == "train: 31/100 (31%), 1.00/s, 1m09s left"


def test_durations():
    assert [format_duration(s) for s in (0, 59.4, 75, 3700)] == ["0s", "59s", "1m15s", "1h01m"]


def test_piped_tables_use_the_full_width_and_explain_their_columns(capsys, monkeypatch):
    monkeypatch.delenv("UNFORGET_WIDTH", raising=False)
    assert console().width == PIPED_WIDTH  # capsys: stdout is not a terminal
    metrics = ClassificationMetrics(n=200, accuracy=0.5, accuracy_low=0.43, accuracy_high=0.57, no_class_rate=0.125,
                                    top1_share=0.25)
    name = "imagefolder:/data/a/very/long/path/to/the/evaluation/set/cifar100-test-images"
    print_eval_table(console(), EvalResult({name: DatasetResult(name, metrics)}))
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if "0.125" in line)
    assert "0.250" in row and "[0.430, 0.570]" in row  # one line, nothing cut or wrapped
    assert "top-1 share" in text and "no-class" in text
    assert " ".join(EVAL_COLUMNS_LEGEND.split()) in " ".join(text.split())


def test_width_option(capsys, monkeypatch):
    monkeypatch.delenv("UNFORGET_WIDTH", raising=False)
    assert main(["--width", "123", "config", "list"]) == 0
    assert console().width == 123


def test_a_study_without_config_prints_its_usage_and_starts_nothing(capsys, monkeypatch):
    import unforget.cli.study as study_verb

    def refuse(*args, **kwargs):
        raise AssertionError("the study's config was loaded: it was about to start")

    monkeypatch.setattr(study_verb, "load_config", refuse)
    assert main(["study", "emt"]) == 2
    text = capsys.readouterr().out
    assert "usage: unforget study emt -c CONFIG" in text
    for shipped in ("emt/quickstart", "emt/smol", "emt/llava15-7b"):
        assert f"  {shipped}" in text


def test_finetune_takes_the_studies_train_prefix(monkeypatch):
    import unforget.training.trainer as trainer

    seen = {}

    def fake_finetune(cfg, progress=None):
        seen["cfg"] = cfg
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "finetune", fake_finetune)
    assert main(["finetune", "--model", "tiny-llava", "--datasets", "digits", "train.epochs=1", "train.lr=0.01",
                 "method_options.r=4"]) == 130
    cfg = seen["cfg"]
    assert (cfg.epochs, cfg.lr, cfg.method_options["r"]) == (1, 0.01, 4)


def test_plan_takes_dotted_overrides(tmp_path):
    plain, changed = tmp_path / "plain.json", tmp_path / "changed.json"
    assert main(["plan", "-c", "2x2/tiny", "--json", str(plain)]) == 0
    assert main(["plan", "-c", "2x2/tiny", "--json", str(changed), "train.batch_size=2"]) == 0
    assert json.loads(plain.read_text())["assumptions"]["train_batch_per_process"] == 16
    assert json.loads(changed.read_text())["assumptions"]["train_batch_per_process"] == 2


def test_plan_refuses_an_override_the_study_does_not_have(capsys):
    assert main(["plan", "-c", "2x2/tiny", "train.batchsize=2"]) == 2
    assert "batchsize" in capsys.readouterr().out
