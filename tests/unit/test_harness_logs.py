"""`unforget compare-logs`: forgetting from lmms-eval and VLMEvalKit per-sample outputs, on replicas written here in
each harness's schema (lmms-eval: evaluation_tracker.save_results_samples' jsonl; VLMEvalKit: its score files as
vlmeval.smp.dump writes tsv/csv, quoting every field). Expected figures are computed by hand."""

import csv
import json

import pytest

from unforget.cli import main
from unforget.errors import DataError
from unforget.evaluation.harness_logs import compare_logs, read_harness_logs
from unforget.runs import read_json, read_jsonl, read_manifest


def lmms_line(doc_id, target, response, **metrics):
    """A line as lmms-eval writes it after save_results_samples: doc and arguments popped, input added."""
    return {"doc_id": doc_id, "target": str(target), "filtered_resps": [response], "doc_hash": "d" * 8,
            "prompt_hash": "p" * 8, "target_hash": "t" * 8, "input": "question?", **metrics}


def write_lmms(folder, model, task, lines):
    path = folder / model / f"20250101_120000_samples_{task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def lmms_runs(tmp_path):
    """Base: exact_match right on docs 0-9; fine-tuned: wrong on 0-4 (b = 5, c = 0); doc 10 logged by base only,
    11 by fine-tuned only. anls (continuous) drops by 0.1 .. 0.6 on docs 0-5. MME-style dict metric with a score;
    a gpt_eval_score dict without one is skipped."""
    base, tuned = tmp_path / "base", tmp_path / "ft"
    base_lines = [lmms_line(i, "a", "a", exact_match=1.0, anls=0.9 if i < 6 else 0.5,
                            mme_perception_score={"question_id": f"q{i}", "category": "color", "score": 1},
                            gpt_eval_score={"pred": "a"}) for i in range(11)]
    tuned_lines = [lmms_line(i, "a", "b" if i < 5 else "a", exact_match=0.0 if i < 5 else 1.0,
                             anls=0.9 - 0.1 * (i + 1) if i < 6 else 0.5,
                             mme_perception_score={"question_id": f"q{i}", "category": "color",
                                                   "score": 0 if i == 0 else 1},
                             gpt_eval_score={"pred": "b"}) for i in [*range(10), 11]]
    write_lmms(base, "llava-base", "vqav2_val", base_lines)
    write_lmms(tuned, "llava-ft", "vqav2_val", tuned_lines)
    return base, tuned


def by_metric(comparison):
    return {t.metric: t for t in comparison.tasks}


def test_lmms_eval_pairs_by_doc_id_and_tests_each_metric(lmms_runs):
    base, tuned = lmms_runs
    result = compare_logs(read_harness_logs(base), read_harness_logs(tuned))
    tasks = by_metric(result)
    assert set(tasks) == {"exact_match", "anls", "mme_perception_score"}
    em = tasks["exact_match"]
    assert (em.task, em.scale, em.n) == ("vqav2_val", "binary", 10)
    # forgetting = (b - c) / n = 5 / 10; exact McNemar p = 2 * 0.5**5
    assert em.forgetting.delta.value == pytest.approx(0.5)
    assert em.forgetting.test == "mcnemar_exact" and em.forgetting.p_value == pytest.approx(0.0625)
    assert em.base.value == 1.0 and em.finetuned.value == pytest.approx(0.5)
    assert (em.base_only, em.finetuned_only) == (["10"], ["11"])
    anls = tasks["anls"]
    # differences 0.1 .. 0.6 on 6 of 10 docs: mean 0.21; Wilcoxon (exact, n = 6 nonzero, all one sign) p = 2 / 2**6
    assert anls.scale == "continuous" and anls.forgetting.test == "paired_bootstrap"
    assert anls.forgetting.delta.value == pytest.approx(sum(0.1 * k for k in range(1, 7)) / 10)
    assert anls.wilcoxon_p == pytest.approx(2 / 64)
    assert tasks["mme_perception_score"].forgetting.delta.value == pytest.approx(0.1)
    assert [(s.metric, s.task) for s in result.skipped] == [("gpt_eval_score", "vqav2_val")]


def test_lm_eval_filter_field_splits_tasks_and_repeated_doc_ids_are_an_error(tmp_path):
    lines = [{**lmms_line(0, "a", "a", exact_match=1.0), "filter": f} for f in ("strict-match", "flexible-extract")]
    logs = read_harness_logs(write_lmms(tmp_path, "m", "gsm8k", lines))
    assert sorted(t.task for t in logs.tasks) == ["gsm8k/flexible-extract", "gsm8k/strict-match"]
    bad = write_lmms(tmp_path / "dup", "m", "gsm8k", [lmms_line(0, "a", "a", exact_match=1.0)] * 2)
    with pytest.raises(DataError, match=r"samples_gsm8k.jsonl:2: doc_id 0 appears twice"):
        read_harness_logs(bad)


def test_truncated_line_names_the_line(tmp_path):
    path = write_lmms(tmp_path, "m", "pope", [lmms_line(0, "yes", "yes", exact_match=1.0)])
    path.write_text(path.read_text() + '{"doc_id": 1, "exact')
    with pytest.raises(DataError, match=r"samples_pope.jsonl:2: not valid JSON"):
        read_harness_logs(path)


def write_vlmevalkit(path, rows, delimiter):
    """As vlmeval.smp.dump writes tsv / csv: pandas to_csv with quoting=csv.QUOTE_ALL, no index column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return path


def mcq_rows(hits):
    return [{"index": i, "question": f"what is\nshown {i}?", "A": "cat", "B": "dog", "answer": "A",
             "prediction": "A" if h else "B", "hit": h, "log": "Match Log"} for i, h in hits]


def test_vlmevalkit_mcq_and_yes_no_score_files(tmp_path):
    # base under VLMEvalKit's <work_dir>/<model>/<eval_id>/, fine-tuned under <work_dir>/<model>/
    base = tmp_path / "base" / "LLaVA" / "T20250101_Gabc1234"
    tuned = tmp_path / "ft" / "LLaVA-ft"
    write_vlmevalkit(base / "LLaVA_MMBench_DEV_EN_exact_matching_result.tsv",
                     mcq_rows([(i, 1) for i in range(8)]), "\t")
    write_vlmevalkit(tuned / "LLaVA-ft_MMBench_DEV_EN_exact_matching_result.tsv",
                     mcq_rows([(i, 0 if i < 3 else 1) for i in range(1, 8)]), "\t")
    yorn = [{"index": i, "answer": "Yes", "prediction": "yes", "extracted": "Yes", "score": "True"} for i in range(4)]
    write_vlmevalkit(base / "LLaVA_POPE_auxmatch.csv", yorn, ",")
    write_vlmevalkit(tuned / "LLaVA-ft_POPE_auxmatch.csv",
                     [{**r, "score": "False" if r["index"] == 2 else "True"} for r in yorn], ",")
    result = compare_logs(read_harness_logs(tmp_path / "base"), read_harness_logs(tmp_path / "ft"))
    tasks = {t.task: t for t in result.tasks}
    assert set(tasks) == {"MMBench_DEV_EN", "POPE"}
    mmb = tasks["MMBench_DEV_EN"]
    # ids 1..7 paired (0 base only); b = 2 (ids 1, 2), c = 0: forgetting 2/7, McNemar p = 2 * 0.5**2 = 0.5
    assert (mmb.metric, mmb.n, mmb.base_only, mmb.finetuned_only) == ("hit", 7, ["0"], [])
    assert mmb.forgetting.delta.value == pytest.approx(2 / 7) and mmb.forgetting.p_value == pytest.approx(0.5)
    assert tasks["POPE"].metric == "score" and tasks["POPE"].forgetting.delta.value == pytest.approx(0.25)


def test_a_prediction_file_without_scores_says_to_run_the_evaluation(tmp_path):
    rows = [{"index": 0, "question": "q", "answer": "A", "prediction": "A"}]
    path = write_vlmevalkit(tmp_path / "LLaVA" / "LLaVA_MMBench_DEV_EN.tsv", rows, "\t")
    with pytest.raises(DataError, match="run VLMEvalKit's evaluation"):
        read_harness_logs(path)


def test_vlmevalkit_xlsx_when_openpyxl_is_installed(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    rows = mcq_rows([(0, 1), (1, 0)])
    book.active.append(list(rows[0]))
    for r in rows:
        book.active.append(list(r.values()))
    path = tmp_path / "M" / "M_SEEDBench_IMG_exact_matching_result.xlsx"
    path.parent.mkdir()
    book.save(path)
    (log,) = read_harness_logs(path).tasks
    assert (log.task, {k: s.score for k, s in log.samples.items()}) == ("SEEDBench_IMG", {"0": 1.0, "1": 0.0})


def test_cli_writes_the_run_folder_and_report_rebuilds_it(lmms_runs, tmp_path):
    base, tuned = lmms_runs
    # a task the fine-tuned model was not evaluated on is listed, not dropped
    write_lmms(base, "llava-base", "pope", [lmms_line(0, "yes", "yes", exact_match=1.0)])
    out = tmp_path / "cmp"
    assert main(["compare-logs", "--base", str(base), "--finetuned", str(tuned), "--out", str(out),
                 "--metric", "exact_match", "--resamples", "200"]) == 0
    assert read_manifest(out).kind == "harness-compare"
    metrics = read_json(out / "metrics.json")
    (task,) = metrics["tasks"]
    assert task["unmatched"] == {"base_only": 1, "finetuned_only": 1, "base_only_ids": ["10"],
                                 "finetuned_only_ids": ["11"]}
    assert metrics["unmatched_tasks"]["base_only"] == ["pope/exact_match"]
    pairs = read_jsonl(out / "samples.jsonl")
    assert len(pairs) == 10 and pairs[0]["base_response"] == "a" and pairs[0]["finetuned_response"] == "b"
    html = (out / "report.html").read_text()
    assert "pope/exact_match" in html and "only in the base logs" in html
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == html


def test_two_files_of_one_task_named_after_two_models_are_paired(tmp_path):
    """Given directly, a base and a fine-tuned score file pair even when the model prefix could not be stripped."""
    base = write_vlmevalkit(tmp_path / "a" / "base-run_MME_auxmatch.tsv",
                            [{"index": i, "score": "True"} for i in range(3)], "\t")
    tuned = write_vlmevalkit(tmp_path / "b" / "ft-run_MME_auxmatch.tsv",
                             [{"index": i, "score": "False" if i == 0 else "True"} for i in range(3)], "\t")
    (task,) = compare_logs(read_harness_logs(base), read_harness_logs(tuned)).tasks
    assert task.task == "base-run_MME" and task.forgetting.delta.value == pytest.approx(1 / 3)
