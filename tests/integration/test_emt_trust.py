"""`unforget study emt` on a tiny random LLaVA with the trust additions: the probe every epoch (base distributions
stored once), also_rank records, and the report's probe and format-vs-knowledge sections."""

import json

import pytest

from unforget.cli import main
from unforget.runs import read_jsonl

CONFIG = """name: trust
model: {{name: {model}}}
train: {{dataset: digits, limit: 8, epochs: 2, batch_size: 4}}
methods:
  - {{name: projector, method: projector, lr: 1.0e-2}}
  - {{name: lora, method: lora, options: {{r: 4}}, lr: 1.0e-2}}
eval: {{datasets: [digits, shapes], limit: 3, batch_size: 3, max_new_tokens: 2, also_rank: true}}
probe: {{limit: 2, batch_size: 2}}
alignment_limit: 0
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py


def test_emt_study_records_the_probe_and_the_split(random_llava_dir, tmp_path):
    config = tmp_path / "emt.yaml"
    config.write_text(CONFIG.format(model=random_llava_dir))
    out = tmp_path / "run"
    assert main(["study", "emt", "-c", str(config), "--out", str(out)]) == 0
    assert (out / "probe_base.safetensors").is_file()
    base_probe = read_jsonl(out / "base" / "probe.jsonl")
    assert len(base_probe) == 1 and base_probe[0]["kl"]["value"] == pytest.approx(0.0, abs=1e-6)
    for arm in ("projector", "lora"):
        rows = read_jsonl(out / arm / "probe.jsonl")
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all(r["kl"]["value"] > 0 and set(r["by_dataset"]) == {"digits", "shapes"} for r in rows)
        metrics = json.loads((out / arm / "metrics.json").read_text())
        assert metrics["epochs"]["2"]["probe"]["kl"] == rows[1]["kl"]
        assert "format_knowledge" in metrics["epochs"]["1"]["datasets"]["shapes"]
        assert all("rank" in r for r in read_jsonl(out / arm / "samples.jsonl"))
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["probe"]["points"]) == 4 and summary["probe"]["correlation"]["n"] == 4
    assert all(a["format_knowledge"]["shapes"] for a in summary["arms"])
    html = (out / "report.html").read_text()
    assert "Judge-free forgetting probe" in html and "Format or knowledge" in html

    # a rerun finds everything done and measures nothing again
    stamp = (out / "probe_base.safetensors").stat().st_mtime_ns
    assert main(["study", "emt", "-c", str(config), "--out", str(out)]) == 0
    assert (out / "probe_base.safetensors").stat().st_mtime_ns == stamp
    assert len(read_jsonl(out / "lora" / "probe.jsonl")) == 2
