"""Which tailoring methods sweep the study's sparsities is said once, by the registered method
(``TailoringMethod.sweeps_sparsity``): the study's plan runs them at each sparsity, and the summary lists the same
planned folders as missing until they are done."""

from __future__ import annotations

from pathlib import Path

import yaml

from unforget.studies.tailor import TailoringArm, TailorStudyConfig, TargetTask, plan
from unforget.studies.tailor.summary import summarise_numbers
from unforget.tailoring import TAILORING_METHODS


def test_grafting_methods_sweep_and_merges_run_once():
    sweeping = {e.name for e in TAILORING_METHODS.entries() if e.obj.sweeps_sparsity}
    assert sweeping == {"model-tailor", "magnitude"}
    cfg = TailorStudyConfig(sparsities=[0.05, 0.1], targets=[TargetTask("vqa", "scenes-vqa")])
    folders = [s.folder_name for s in plan(cfg)]
    assert folders == ["model-tailor-5pct", "model-tailor-10pct", "magnitude-5pct", "magnitude-10pct", "average",
                       "task-arithmetic", "ties", "dare"]
    # an arm's own ``sweep`` decides over the method's registration
    cfg.methods = [TailoringArm("mt", "model-tailor", sweep=False), TailoringArm("ties", "ties", sweep=True)]
    assert [s.folder_name for s in plan(cfg)] == ["mt", "ties-5pct", "ties-10pct"]


def test_the_summary_lists_the_plan_as_missing(tmp_path: Path):
    cfg = TailorStudyConfig(name="x", original=["digits"], sparsities=[0.1, 0.2],
                            targets=[TargetTask("a", "scenes-vqa"), TargetTask("b", "scenes-caption")],
                            methods=[TailoringArm("model-tailor", "model-tailor"), TailoringArm("ties", "ties")])
    raw = {"name": "x", "original": ["digits"], "sparsities": [0.1, 0.2],
           "targets": [{"name": "a", "dataset": "scenes-vqa"}, {"name": "b", "dataset": "scenes-caption"}],
           "methods": [{"name": "model-tailor", "method": "model-tailor"}, {"name": "ties", "method": "ties"}],
           "headline": {"sparsity": 0.1, "keep": 0.99, "reach": 0.97}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "samples.jsonl").write_text('{"id": "0", "dataset": "digits", "correct": true}\n')
    summary = summarise_numbers(tmp_path)
    assert summary.missing_runs == [f"{s.group}/{s.folder_name}" for s in plan(cfg)]
    assert "multi/ties" in summary.missing_runs and "a/model-tailor-20pct" in summary.missing_runs
