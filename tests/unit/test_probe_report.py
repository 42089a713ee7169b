"""The EMT report's probe section on a hand-written run folder: KL curves and Spearman's rho with forgetting."""

import math

import pytest

from tests.synthetic_emt_run import make_run, write_jsonl
from unforget.studies.emt import kl_forgetting_correlation, summarise_emt


def probe_row(epoch, kl_shapes, kl_digits=0.0, seed=None):
    row = {"epoch": epoch, "n": 4, "kl": {"value": (kl_shapes + kl_digits) / 2, "low": 0.0, "high": 1.0, "n": 4},
           "label_mass": {"value": 0.1 + epoch / 10, "low": 0.0, "high": 0.5, "n": 4}, "base_label_mass": 0.1,
           "label_set": "digits", "label_tokens": [5, 6],
           "by_dataset": {"shapes": {"n": 2, "kl": kl_shapes, "label_mass": 0.2, "base_label_mass": 0.1},
                          "digits": {"n": 2, "kl": kl_digits, "label_mass": 0.3, "base_label_mass": 0.1}}}
    if seed is not None:
        row["seed"] = seed
    return row


@pytest.fixture
def run(tmp_path):
    root = make_run(tmp_path / "run")
    write_jsonl(root / "base" / "probe.jsonl", [probe_row(0, 0.0)])
    write_jsonl(root / "lora" / "probe.jsonl", [probe_row(1, 0.1, 5.0, seed=0), probe_row(2, 0.9, 5.0, seed=0)])
    write_jsonl(root / "projector" / "probe.jsonl", [probe_row(1, 0.2, seed=0), probe_row(2, 0.3, seed=0),
                                                     probe_row(3, 9.9, seed=0)])  # epoch 3 never finished
    return root


def test_probe_points_and_spearman(run):
    probe = summarise_emt(run).to_dict()["probe"]
    assert probe["datasets"] == ["shapes"] and probe["label_set"] == "digits"
    assert [p["epoch"] for p in probe["curves"]["projector"]] == [0, 1, 2]
    # KL on the other set (shapes) only: the digits KL of 5.0 is the fine-tuning set's
    points = {(p["arm"], p["epoch"]): p for p in probe["points"]}
    assert points[("lora", 2)]["kl"] == pytest.approx(0.9)
    # forgetting on shapes, paired (s20 unjudged at base): base 10/20 correct; lora e1 18, e2 2; projector 11
    assert points[("lora", 1)]["forgetting"] == pytest.approx(-0.4)
    assert points[("lora", 2)]["forgetting"] == pytest.approx(0.4)
    assert points[("projector", 1)]["forgetting"] == pytest.approx(-0.05)
    # ranks: KL 1 2 3 4 vs forgetting 1 2.5 2.5 4 -> rho = 4.5 / sqrt(5 * 4.5)
    corr = probe["correlation"]
    assert corr["n"] == 4 and corr["rho"] == pytest.approx(4.5 / math.sqrt(22.5))
    assert 0 < corr["p_value"] < 1


def test_probe_section_on_the_page(run):
    from unforget.studies.emt import build_emt_report
    from unforget.reports.markdown import render_markdown

    report = build_emt_report(summarise_emt(run))
    section = next(s for s in report.sections if s.title == "Judge-free forgetting probe")
    assert section.blocks
    assert "rho = 0.949" in render_markdown(report)


def test_no_probe_files_no_section(tmp_path):
    summary = summarise_emt(make_run(tmp_path / "run")).to_dict()
    assert summary["probe"] is None


def test_correlation_needs_points_that_vary():
    assert kl_forgetting_correlation([])["why_none"].startswith("needs at least 3")
    flat = [{"kl": 0.1 * i, "forgetting": 0.2} for i in range(4)]
    assert kl_forgetting_correlation(flat)["rho"] is None
    exact = [{"kl": 0.1 * i, "forgetting": 0.05 * i} for i in range(4)]
    assert kl_forgetting_correlation(exact)["rho"] == pytest.approx(1.0)
