"""The EMT report on a hand-written run folder (tests/synthetic_emt_run.py): every number below is worked out by
hand from the records listed in that module's docstring."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from html import escape
from pathlib import Path

import pytest

from tests.synthetic_emt_run import ARMS, PNG_MAGIC, make_run, record, write_jsonl
from unforget.errors import DataError
from unforget.studies.emt import summarise_emt, write_emt_report
from unforget.studies.report import detect_report_kind, report_writers, write_run_report


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("emt") / "run")


@pytest.fixture(scope="module")
def summary(run) -> dict:
    return summarise_emt(run).to_dict()


@pytest.fixture(scope="module")
def written(run) -> Path:
    write_emt_report(run)
    return run


def _arm(summary: dict, name: str) -> dict:
    return next(a for a in summary["arms"] if a["name"] == name)


def _claims(summary: dict, claim_id: str) -> dict[str, dict]:
    return {c["arm"]: c for c in summary["claims"] if c["id"] == claim_id}


# ---------------------------------------------------------------------------------------------------- numbers


def test_accuracy_curves_count_judged_samples_only(summary):
    lora = _arm(summary, "lora")["curves"]
    assert [p["epoch"] for p in lora["shapes"]] == [0, 1, 2]
    assert [(p["n"], p["accuracy"]["value"]) for p in lora["shapes"]] == [(20, 0.5), (21, 19 / 21), (21, 3 / 21)]
    assert lora["shapes"][0]["unjudged"] == 1
    assert [p["accuracy"]["value"] for p in lora["digits"]] == [0.1, 0.75, 1.0]
    proj = _arm(summary, "projector")["curves"]
    assert [p["accuracy"]["value"] for p in proj["digits"]] == [0.1, 0.5, 0.6]
    # Wilson 95% for 10/20: centre (0.5 + z^2/40) / (1 + z^2/20) = 0.5, half-width 0.2009...
    base = lora["shapes"][0]["accuracy"]
    assert base["low"] == pytest.approx(0.2993, abs=1e-4) and base["high"] == pytest.approx(0.7007, abs=1e-4)


def test_leak_no_class_and_concentration(summary):
    shapes = _arm(summary, "lora")["curves"]["shapes"]
    assert [p["leak_rate"]["value"] for p in shapes] == [0.0, 0.0, 10 / 21]
    assert [p["no_class_rate"]["value"] for p in shapes] == [0.5, 2 / 21, 18 / 21]
    # base: named predictions circle x3 (s0 s4 s8), square x3, triangle x2, star x2
    base = shapes[0]
    assert base["top1_share"]["value"] == pytest.approx(0.3)
    h = -(2 * 0.3 * math.log2(0.3) + 2 * 0.2 * math.log2(0.2))
    assert base["normalised_entropy"]["value"] == pytest.approx(h / 2)
    assert base["normalised_entropy"]["low"] <= base["normalised_entropy"]["value"] <= base["normalised_entropy"][
        "high"]
    assert summary["class_counts"] == {"digits": 10, "shapes": 4}


def test_table_base_best_last_and_paired_forgetting(summary):
    lora = _arm(summary, "lora")["table"]
    shapes = lora["shapes"]
    assert shapes["base"]["value"] == 0.5
    assert (shapes["best_epoch"], shapes["best"]["value"]) == (1, 19 / 21)
    assert (shapes["last_epoch"], shapes["last"]["value"]) == (2, 3 / 21)
    f = shapes["forgetting"]
    # paired on the 20 ids judged in both: base right s0-s9, epoch 2 right s0-s1 -> b = 8, c = 0
    assert f["delta_of"] == "base - tuned"
    assert f["delta"]["value"] == pytest.approx(0.4)
    assert f["delta"]["n"] == 20
    assert (f["n_discordant_b"], f["n_discordant_c"]) == (8, 0)
    assert f["p_value"] == pytest.approx(2 * 0.5**8)
    assert f["delta"]["low"] < 0.4 < f["delta"]["high"]
    digits = lora["digits"]["forgetting"]
    assert digits["delta"]["value"] == pytest.approx(-0.9)
    assert digits["p_value"] == pytest.approx(2 * 0.5**18)
    proj = _arm(summary, "projector")["table"]["shapes"]["forgetting"]
    assert proj["delta"]["value"] == pytest.approx(-0.05) and proj["p_value"] == 1.0


def test_early_fine_tuning_claim(summary):
    claims = _claims(summary, "early-fine-tuning-helps")
    lora, proj = claims["lora"], claims["projector"]
    assert lora["verdict"] == "held" and lora["held"] is True
    assert lora["test"]["p_value"] == pytest.approx(2 * 0.5**8)
    assert lora["test"]["delta"]["value"] == pytest.approx(0.4)
    assert "epoch 1 - base" in lora["evidence"]
    assert proj["verdict"] == "not shown" and proj["held"] is None
    assert proj["test"]["p_value"] == 1.0
    # the observed change goes the claimed way, so the evidence says how many samples would show it
    assert proj["needed_n"] is not None and proj["needed_n"] > 20
    assert f"{proj['needed_n']:,} paired samples" in proj["evidence"]
    assert any(d.startswith("shapes:") for d in lora["details"])


def test_long_fine_tuning_claim(summary):
    claims = _claims(summary, "long-fine-tuning-degrades")
    lora = claims["lora"]
    assert lora["verdict"] == "held"
    assert lora["compared"] == [1, 2]
    assert (lora["test"]["n_discordant_b"], lora["test"]["n_discordant_c"]) == (16, 0)
    assert lora["test"]["p_value"] == pytest.approx(2 * 0.5**16)
    assert lora["test"]["delta"]["value"] == pytest.approx(-16 / 21)
    proj = claims["projector"]  # epochs 1 and 2 tie: the earlier is "best", and nothing changed
    assert proj["verdict"] == "not shown" and proj["compared"] == [1, 2]
    assert "no change was observed" in proj["evidence"]


def test_label_leak_claim(summary):
    claims = _claims(summary, "fine-tuning-labels-leak")
    lora = claims["lora"]
    assert lora["verdict"] == "held"
    assert (lora["test"]["n_discordant_b"], lora["test"]["n_discordant_c"]) == (0, 10)
    assert lora["test"]["p_value"] == pytest.approx(2 * 0.5**10)
    assert lora["test"]["delta"]["value"] == pytest.approx(0.5)  # 10 of the 20 paired samples
    assert claims["projector"]["verdict"] == "not shown"


def test_projector_vs_lora_claim(summary):
    (claim,) = summary["claims"][-1:]
    assert claim["id"] == "projector-retains-more" and claim["arm"] == "projector~lora"
    assert claim["verdict"] == "held"
    assert (claim["test"]["n_discordant_b"], claim["test"]["n_discordant_c"]) == (0, 9)
    assert claim["test"]["p_value"] == pytest.approx(2 * 0.5**9)
    assert claim["test"]["delta"]["value"] == pytest.approx(9 / 21)
    assert claim["test"]["delta_of"] == "projector - lora"


def test_projector_claim_needs_both_methods(tmp_path):
    summary = summarise_emt(make_run(tmp_path / "run", arms={"lora": ARMS["lora"]})).to_dict()
    assert not [c for c in summary["claims"] if c["id"] == "projector-retains-more"]
    assert {c["id"] for c in summary["claims"]} == {"early-fine-tuning-helps", "long-fine-tuning-degrades",
                                                    "fine-tuning-labels-leak"}


def test_baselines_alignment_loss_and_confusion(summary):
    assert summary["baselines"]["digits"]["linear-probe"]["value"] == 0.9
    lora = _arm(summary, "lora")
    assert [p["epoch"] for p in lora["alignment"]["shapes"]] == [0, 1, 2]
    assert lora["alignment"]["shapes"][0]["cosine_true"] == 0.2
    assert lora["alignment"]["shapes"][0]["top1"]["value"] == 0.25
    assert lora["loss"]["loss"] == pytest.approx([1.5, 1.0, 0.75, 0.6])
    confusion = {c["dataset"]: c for c in lora["confusion"]}
    # the fine-tuning set, and shapes: the only other set (lora forgot it)
    assert set(confusion) == {"digits", "shapes"} and confusion["shapes"]["role"] == "most forgotten other set"
    assert confusion["shapes"]["before"]["circle"] == {"circle": 3, "<none>": 2}  # s0 s4 s8 right, s12 s16 wrong
    assert confusion["digits"]["after"]["3"] == {"3": 2}
    assert confusion["digits"]["classes"] == [str(c) for c in range(10)]


def test_class_subset_held_out_collapse(tmp_path):
    held_in = [0, 1, 2, 3, 4]
    # lora epoch 2: held-in classes right, every held-out sample answered "3"
    collapse = [record("digits", i, i % 10 in held_in, epoch=2, seed=0,
                        prediction=None if i % 10 in held_in else "3") for i in range(20)]
    run = make_run(tmp_path / "run", arms={"lora": ARMS["lora"]}, classes=held_in,
                   digits_override={("lora", 2): collapse})
    subset = _arm(summarise_emt(run).to_dict(), "lora")["class_subset"]
    assert subset["held_in_classes"] == held_in
    last = subset["points"][-1]
    assert last["held_in_accuracy"]["value"] == 1.0 and last["held_out_accuracy"]["value"] == 0.0
    assert last["held_out_top1_share"]["value"] == 1.0 and last["held_out_top1_class"] == "3"
    assert last["held_out_as_held_in"]["value"] == 1.0
    assert subset["collapsed"] is True  # Wilson lower bound of 10/10 is 0.72 > 0.5
    first = subset["points"][1]  # epoch 1: held-in d0-d4, d10-d14 right; held-out d5-d9 right, d15-d19 no class
    assert first["held_in_accuracy"]["value"] == 1.0 and first["held_out_accuracy"]["value"] == 0.5


def test_seeds_summarised_apart_from_sample_intervals(tmp_path):
    arms = {"lora": ARMS["lora"]}
    run = make_run(tmp_path / "run", arms=arms, seeds=(0, 1))
    # seed 1 forgets less: shapes right s0-s5 at epoch 2 (plus s20)
    rows = (tmp_path / "run" / "lora-s1" / "samples.jsonl").read_text().splitlines()
    rows = [json.loads(r) for r in rows]
    for r in rows:
        if r["dataset"] == "shapes" and r["epoch"] == 2 and r["id"] in {f"s{i}" for i in range(2, 6)}:
            r.update(correct=True, prediction=r["reference"])
    write_jsonl(tmp_path / "run" / "lora-s1" / "samples.jsonl", rows)
    summary = summarise_emt(run).to_dict()
    assert [a["folder"] for a in summary["arms"]] == ["lora-s0", "lora-s1"]
    last = summary["seed_summaries"]["lora"]["datasets"]["shapes"]["last"]
    assert last["values"] == pytest.approx([3 / 21, 7 / 21])
    assert last["mean"] == pytest.approx(5 / 21)
    assert last["std"] == pytest.approx((2 * (2 / 21) ** 2) ** 0.5)
    forgetting = summary["seed_summaries"]["lora"]["datasets"]["shapes"]["forgetting"]
    assert forgetting["values"] == pytest.approx([0.4, 0.2])
    assert {c["arm"] for c in summary["claims"]} == {"lora-s0", "lora-s1"}
    assert all("seed" in c["claim"] for c in summary["claims"])


def test_unfinished_epoch_is_left_out(tmp_path):
    run = make_run(tmp_path / "run", arms={"lora": ARMS["lora"]})
    metrics = tmp_path / "run" / "lora" / "metrics.json"
    metrics.write_text(json.dumps({"epochs": {"1": {}}}))  # epoch 2 was interrupted during its evaluation
    (tmp_path / "run" / "lora" / "DONE").unlink()
    summary = summarise_emt(run).to_dict()
    lora = _arm(summary, "lora")
    assert lora["epochs"] == [0, 1] and lora["partial_epochs"] == [2] and lora["last_epoch"] == 1
    assert any("only partly evaluated" in n for n in summary["notes"])
    assert _claims(summary, "long-fine-tuning-degrades")["lora"]["verdict"] == "not shown"


# ---------------------------------------------------------------------------------------------------- files


def test_metrics_json_is_the_summary(written, summary):
    doc = json.loads((written / "metrics.json").read_text())
    assert doc["study"] == "emt"
    assert [c["verdict"] for c in doc["claims"]] == [c["verdict"] for c in summary["claims"]]
    assert [c["evidence"] for c in doc["claims"]] == [c["evidence"] for c in summary["claims"]]


def test_html_embeds_every_plot_as_png(written):
    html = (written / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', html)
    plots = sorted((written / "plots").glob("*.png"))
    names = {p.stem for p in plots}
    assert {"accuracy", "label_leak", "concentration", "no_class", "alignment", "loss",
            "confusion-lora-digits", "confusion-lora-shapes"} <= names
    assert len(images) == len(plots)
    decoded = [base64.b64decode(data, validate=True) for data in images]
    assert all(d.startswith(PNG_MAGIC) for d in decoded)
    assert sorted(decoded) == sorted(p.read_bytes() for p in plots)
    assert "http://" not in html and "https://" not in html  # self-contained


def test_html_and_markdown_show_the_claims(written, summary):
    html = (written / "report.html").read_text()
    md = (written / "report.md").read_text()
    verdicts = [c["verdict"] for c in summary["claims"]]
    assert html.count('<span class="badge held">') == verdicts.count("held") == 4
    assert html.count('<span class="badge not-shown">') == verdicts.count("not shown") == 3
    assert md.count("**[HELD]**") == 4 and md.count("**[NOT SHOWN]**") == 3
    for c in summary["claims"]:
        assert escape(c["claim"]) in html
    assert "![" in md and "(plots/accuracy.png)" in md
    assert "| dataset | arm | base |" in md
    assert "0.400 [" in md  # lora's forgetting on shapes, with its interval


def test_rebuilding_removes_stale_plots(tmp_path):
    from unforget.reports.document import Figure, Report, Section, write_report
    from unforget.reports.plots import BarSeries, bar_chart

    png = bar_chart(["a", "b"], [BarSeries("x", [0.2, 0.4], [0.1, 0.3], [0.3, 0.5])], title="t", ylabel="y")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "old-figure.png").write_bytes(PNG_MAGIC)
    (tmp_path / "plots" / "notes.txt").write_text("not ours to delete")
    files = write_report(Report("r", sections=[Section("s", [Figure("bars", png)])]), tmp_path)
    assert [p.name for p in files.plots] == ["bars.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["bars.png", "notes.txt"]
    assert (tmp_path / "plots" / "bars.png").read_bytes() == png and png.startswith(PNG_MAGIC)


def test_text_from_the_run_folder_is_escaped():
    from unforget.reports.document import Claim, ClaimList, Paragraph, Report, Section, Table
    from unforget.reports.html import render_html
    from unforget.reports.markdown import render_markdown

    evil = "<script>alert(1)</script> | *x*"
    report = Report(evil, [("model", evil)], [Section(evil, [Paragraph(evil), Table([evil], [[evil]]),
                                                            ClaimList([Claim(evil, "not held", evil)])])])
    html = render_html(report)
    assert "<script>" not in html and html.count("&lt;script&gt;") == 9
    assert '<span class="badge not-held">not held</span>' in html
    md = render_markdown(report)
    assert "| \\<script>alert(1)\\</script> \\| \\*x\\* |" in md  # the table cell: no new column, no emphasis
    assert "**[NOT HELD]**" in md


def test_report_verb_and_kind_detection(tmp_path, run):
    import argparse

    from unforget.cli import VERBS
    from unforget.cli.report import add_report, run_report

    assert "report" in VERBS
    assert detect_report_kind(run).name == "emt"
    assert "emt" in report_writers() and "eval" in report_writers()
    eval_run = tmp_path / "eval"
    eval_run.mkdir()
    (eval_run / "config.yaml").write_text("model:\n  name: m\ndatasets: [shapes]\nsplit: test\nmode: generate\n")
    (eval_run / "metrics.json").write_text(json.dumps({"datasets": {"shapes": {
        "n": 4, "accuracy": 0.5, "accuracy_low": 0.15, "accuracy_high": 0.85, "per_class": {"circle": 1.0},
        "confusion": {"circle": {"circle": 2}, "square": {"<none>": 2}}, "no_class_rate": 0.5,
        "top1_share": 1.0, "normalised_entropy": 0.0, "leak_rates": {}, "baselines": {}}}}))
    parser = argparse.ArgumentParser()
    add_report(parser)
    assert run_report(parser.parse_args([str(eval_run)])) == 0
    html = (eval_run / "report.html").read_text()
    assert "0.500 [0.150, 0.850]" in html and "data:image/png;base64," in html
    assert (eval_run / "plots" / "confusion-shapes.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(DataError, match="no config.yaml"):
        write_run_report(tmp_path)
    with pytest.raises(DataError, match="Did you mean 'emt'"):
        write_run_report(run, kind="emtt")


def test_class_count_recovered_from_the_evaluators_metrics(tmp_path):
    run = make_run(tmp_path / "run", arms={"lora": ARMS["lora"]})
    metrics = json.loads((run / "base" / "metrics.json").read_text())
    # 1.5 bits at normalised entropy 0.5: log2(K) = 3, so shapes has 8 classes although the records show 4
    metrics["datasets"]["shapes"].update(prediction_entropy=1.5, normalised_entropy=0.5)
    (run / "base" / "metrics.json").write_text(json.dumps(metrics))
    summary = summarise_emt(run).to_dict()
    assert summary["class_counts"]["shapes"] == 8
    base = _arm(summary, "lora")["curves"]["shapes"][0]
    h = -(2 * 0.3 * math.log2(0.3) + 2 * 0.2 * math.log2(0.2))
    assert base["normalised_entropy"]["value"] == pytest.approx(h / 3)


def test_report_of_a_run_with_only_the_base_model(tmp_path):
    from unforget.studies.emt import build_emt_report

    run = make_run(tmp_path / "run", arms={"lora": ARMS["lora"]})
    shutil.rmtree(run / "lora")
    summary = summarise_emt(run)
    assert summary.arms == [] and summary.claims == [] and summary.missing_arms == ["lora"]
    report = build_emt_report(summary)
    assert "No fine-tuning arm has been evaluated yet." in [b.text for b in report.sections[0].blocks
                                                             if hasattr(b, "text")]
    assert all(f.png.startswith(PNG_MAGIC) for f in report.figures())
