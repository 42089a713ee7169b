"""`unforget eval` end to end through the real CLI: files, resume after a kill, skip-bad, errors."""

import json
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests.child_process import child_env
from unforget.cli import main
from unforget.runs import read_jsonl


def run_cli(*args):
    return main([str(a) for a in args])


def test_eval_writes_config_samples_metrics(random_llava_dir, tmp_path):
    out = tmp_path / "run"
    rc = run_cli("eval", "--model", random_llava_dir, "--datasets", "digits,shapes", "--limit", 6,
                 "--batch-size", 4, "--max-new-tokens", 3, "--out", out)
    assert rc == 0
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 12
    assert {r["dataset"] for r in records} == {"digits", "shapes"}
    assert all({"id", "question", "answer", "prediction", "correct", "judge"} <= set(r) for r in records)
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("digits", "shapes"):
        m = metrics["datasets"][name]
        hits = sum(bool(r["correct"]) for r in records if r["dataset"] == name)
        assert m["n"] == 6 and m["accuracy"] == pytest.approx(hits / 6)
        assert m["accuracy_low"] <= m["accuracy"] <= m["accuracy_high"]
    assert "run_info" in metrics and metrics["config"]["limit"] == 6
    assert "limit: 6" in (out / "config.yaml").read_text()


def test_rank_mode_with_topk(random_llava_dir, tmp_path):
    out = tmp_path / "rank"
    assert run_cli("eval", "--model", random_llava_dir, "--datasets", "shapes", "--limit", 4, "--mode", "rank",
                   "--out", out) == 0
    records = read_jsonl(out / "samples.jsonl")
    assert all(r["mode"] == "rank" and 0 <= r["rank_of_reference"] < 10 for r in records)
    assert all(r["prediction"] == r["top_k"][0][0] for r in records)
    m = json.loads((out / "metrics.json").read_text())["datasets"]["shapes"]
    assert m["top_k"]["top1"] == pytest.approx(m["accuracy"])
    assert m["top_k"]["top3"] >= m["top_k"]["top1"]


def test_rerun_resumes_without_duplicates(random_llava_dir, tmp_path):
    out = tmp_path / "resume"
    args = ["eval", "--model", random_llava_dir, "--datasets", "digits", "--limit", 5, "--max-new-tokens", 2,
            "--out", out]
    assert run_cli(*args) == 0
    first = json.loads((out / "metrics.json").read_text())["datasets"]["digits"]
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # lost work + torn line
    assert run_cli(*args) == 0
    records = read_jsonl(out / "samples.jsonl")
    assert sorted(r["id"] for r in records) == sorted({r["id"] for r in records})
    assert len(records) == 5
    again = json.loads((out / "metrics.json").read_text())["datasets"]["digits"]
    assert again["accuracy"] == first["accuracy"] and again["confusion"] == first["confusion"]


def test_killed_run_resumes_to_the_same_metrics(random_llava_dir, tmp_path):
    """SIGKILL a real `unforget eval` process mid-run; the rerun ends with the uninterrupted metrics."""
    base = [sys.executable, "-m", "unforget", "eval", "--model", str(random_llava_dir), "--datasets", "digits",
            "--limit", "40", "--batch-size", "1", "--max-new-tokens", "2"]
    env = child_env()
    full = tmp_path / "full"
    subprocess.run(base + ["--out", str(full)], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    samples = killed / "samples.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and len(samples.read_bytes().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(read_jsonl(samples))
    assert 0 < n_before < 40, "the kill should land mid-run"
    subprocess.run(base + ["--out", str(killed)], check=True, env=env, capture_output=True)
    a = json.loads((full / "metrics.json").read_text())["datasets"]["digits"]
    b = json.loads((killed / "metrics.json").read_text())["datasets"]["digits"]
    assert len(read_jsonl(samples)) == 40
    for key in ("n", "accuracy", "confusion", "per_class", "no_class_rate"):
        assert a[key] == b[key]


def test_bad_image_stops_with_its_name_or_is_skipped(random_llava_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (20, 20), (255, 0, 0)).save(data / "ok.png")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    lines = [{"image": "ok.png", "question": "What colour?", "answer": "red"},
             {"image": "broken.png", "question": "What colour?", "answer": "red"}]
    (data / "vqa.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ref = f"jsonl:{data / 'vqa.jsonl'}"
    rc = run_cli("eval", "--model", random_llava_dir, "--datasets", ref, "--out", tmp_path / "strict")
    assert rc == 2  # clear error, nothing crashes
    assert run_cli("eval", "--model", random_llava_dir, "--datasets", ref, "--skip-bad", "--max-new-tokens", 2,
                   "--out", tmp_path / "skip") == 0
    records = read_jsonl(tmp_path / "skip" / "samples.jsonl")
    skipped = [r for r in records if r.get("skipped")]
    assert len(skipped) == 1 and "broken.png" in skipped[0]["error"]
    m = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    (only,) = m["datasets"].values()
    assert only["skipped"] == 1 and only["n"] == 1


def test_unknown_dataset_and_model_errors(random_llava_dir, tmp_path, capsys):
    assert run_cli("eval", "--model", random_llava_dir, "--datasets", "digitz", "--out", tmp_path / "x") == 2
    assert "Did you mean 'digits'" in capsys.readouterr().out
    assert run_cli("eval", "--model", "someone/not-here", "--datasets", "digits", "--out", tmp_path / "y") == 2
    assert "download it where there is network" in " ".join(capsys.readouterr().out.lower().split())


def test_ls_lists_everything(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich would otherwise truncate names in narrow captured output
    assert run_cli("ls") == 0
    out = capsys.readouterr().out
    for word in ("tiny-llava", "digits", "colour-shapes", "imagefolder", "exact"):
        assert word in out
