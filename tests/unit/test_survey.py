"""The EMT survey: every model evaluated with its encoder baselines, a table and bar charts from the folders."""

from __future__ import annotations

import json

import pytest

from unforget.errors import ConfigError
from unforget.studies.survey import SurveyConfig, SurveyEval, model_slug, run_survey, survey_table


def test_model_slugs_are_distinct_folder_names():
    assert model_slug("tiny-llava") == "tiny-llava"
    assert model_slug("/runs/emt/a/lora/final") == "lora-final"
    assert model_slug("tiny-llava@runs/emt/a/lora/adapter") == "tiny-llava-lora-adapter"
    with pytest.raises(ConfigError, match="share a folder name"):
        SurveyConfig(models=["/a/x/m", "/b/x/m"]).validate()


def test_survey_runs_tiny_llava_to_a_report_and_resumes(tmp_path):
    cfg = SurveyConfig(models=["tiny-llava"], datasets=["digits", "shapes"], out=str(tmp_path / "s"),
                       eval=SurveyEval(limit=12, batch_size=12, probe_train_limit=60, device="cpu"))
    out = run_survey(cfg)
    table = json.loads((out / "metrics.json").read_text())
    assert [(r["model"], r["dataset"]) for r in table["rows"]] == [("tiny-llava", "digits"), ("tiny-llava", "shapes")]
    for row in table["rows"]:
        for kind in ("mllm", "zero-shot", "linear-probe"):  # tiny-llava ships a CLIP encoder/: zero-shot too
            assert 0.0 <= row[kind]["accuracy"] <= 1.0 and row[kind]["low"] <= row[kind]["high"]
    html = (out / "report.html").read_text()
    assert "MLLM vs its vision encoder" in html and (out / "plots" / "survey-tiny-llava.png").is_file()
    # a second run finds the model done and rebuilds the same table from the folders only
    done = (out / "tiny-llava" / "DONE").stat().st_mtime
    assert run_survey(cfg) == out and (out / "tiny-llava" / "DONE").stat().st_mtime == done
    assert survey_table(out, cfg.models, cfg.datasets).to_dict() == table


def test_survey_report_is_detected_from_its_folder(tmp_path):
    from unforget.runs import RunDir
    from unforget.studies.report import detect_report_kind

    run = RunDir(tmp_path / "s")
    run.write_config(SurveyConfig())
    assert detect_report_kind(run.path).name == "survey"
