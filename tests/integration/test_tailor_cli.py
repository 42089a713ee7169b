"""`unforget tailor` and `unforget study tailor` end to end on a tiny random LLaVA.

Checkpoints come from `unforget finetune` (projector and lora); tailoring writes HF folders and patches, `tailor
apply` reproduces the HF output bit for bit, and the study runs to its report and resumes only what is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.finetune_helpers import COLOURS, colour_image, register_datasets
from tests.strict_json import assert_strict_json
from unforget.cli import main
from unforget.runs import read_jsonl
from unforget.tailoring import open_checkpoint

CAPTIONS = ["a {} square", "a {} image", "the image is {}"]


def colour_caption_dataset():
    from unforget.data import ImageDataset, Sample

    rng = np.random.default_rng(2)
    names = list(COLOURS)
    splits = {}
    for split, n in (("train", 8), ("test", 4)):
        splits[split] = [Sample(id=f"{split}-{i}", image=colour_image(i % 3, rng),
                                answer=CAPTIONS[0].format(names[i % 3]),
                                meta={"captions": [c.format(names[i % 3]) for c in CAPTIONS]}) for i in range(n)]
    return ImageDataset("ft-colours-caption", "caption", splits, templates=["Describe the image."])


@pytest.fixture(scope="module", autouse=True)
def setup():
    from unforget.data import DATASETS

    old = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: OpenMP spinning over 2 threads is far slower on tiny matmuls
    os.environ["HF_HUB_OFFLINE"] = "1"
    register_datasets()
    if "ft-colours-caption" not in DATASETS:
        DATASETS.register("ft-colours-caption", colour_caption_dataset, description="tailor test captions", task="test")
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def finetuned(random_llava_dir, tmp_path_factory):
    """Two `unforget finetune` runs: projector on ft-colours, lora on ft-colours-vqa (2 steps each)."""
    root = tmp_path_factory.mktemp("ft")
    for method, dataset in (("projector", "ft-colours"), ("lora", "ft-colours-vqa")):
        rc = main(["finetune", "--model", str(random_llava_dir), "--device", "cpu", "--datasets", dataset,
                   "--method", method, "--lr", "1e-2", "--max-steps", "2", "--batch-size", "3",
                   "--out", str(root / method)])
        assert rc == 0
    from unforget.training.checkpoints import latest_checkpoint

    return {"projector": root / "projector", "lora": latest_checkpoint(root / "lora").path}


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    checkpoint = open_checkpoint(folder)
    return {k: checkpoint.get(k) for k in checkpoint.keys()}


def test_tailor_projector_checkpoint_to_a_hf_folder(random_llava_dir, finetuned, tmp_path):
    out = tmp_path / "tailored"
    # a whole finetune run folder: its newest checkpoint is used; calibration defaults to its training data
    rc = main(["tailor", "--base", str(random_llava_dir), "--finetuned", str(finetuned["projector"]),
               "--calib-limit", "3", "--sparsity", "0.1", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["method"] == "model-tailor" and summary["format"] == "hf"
    from unforget.training.checkpoints import latest_checkpoint

    assert summary["finetuned"] == [str(latest_checkpoint(finetuned["projector"]).path)]
    projector = sum(t["numel"] for k, t in summary["tensors"].items() if "multi_modal_projector" in k)
    # only the projector moved, and it holds less than 10% of the considered entries: all of it is grafted
    assert projector < 0.1 * summary["considered"] and summary["changed"] == projector
    assert summary["seconds"]["calibrate"] > 0 and summary["calibration"] == ["ft-colours"]
    assert "calib:" in (out / "config.yaml").read_text()
    base, tailored = read_weights(random_llava_dir), read_weights(out)
    assert base.keys() == tailored.keys()
    changed = [k for k in base if not torch.equal(base[k], tailored[k])]
    # a projector fine-tune changes only the projector, so only projector entries can be grafted
    assert changed and all("multi_modal_projector" in k for k in changed)
    from transformers import LlavaForConditionalGeneration

    LlavaForConditionalGeneration.from_pretrained(out)  # a loadable model folder
    assert main(["report", str(out)]) == 0  # the standalone tailoring run's report, from the folder
    assert (out / "report.md").read_text().startswith("# Tailoring: model-tailor at 10%")


def test_multi_task_patch_applies_to_the_hf_output_bit_for_bit(random_llava_dir, finetuned, tmp_path):
    models = f"{finetuned['projector']},{finetuned['lora']}"
    common = ["tailor", "--base", str(random_llava_dir), "--finetuned", models, "--calib", "ft-colours,ft-colours-vqa",
              "--calib-limit", "3", "--sparsity", "0.2"]
    assert main([*common, "--out", str(tmp_path / "hf")]) == 0
    assert main([*common, "--format", "patch", "--out", str(tmp_path / "patch")]) == 0
    assert (tmp_path / "patch" / "patch.safetensors").is_file()
    assert not list((tmp_path / "patch").glob("model*.safetensors"))
    assert main(["tailor", "apply", "--base", str(random_llava_dir), "--patch",
                 str(tmp_path / "patch" / "patch.safetensors"), "--out", str(tmp_path / "applied")]) == 0
    hf, applied = read_weights(tmp_path / "hf"), read_weights(tmp_path / "applied")
    assert hf.keys() == applied.keys()
    for key in hf:
        assert torch.equal(hf[key].view(torch.uint8), applied[key].view(torch.uint8)), key
    summary = json.loads((tmp_path / "hf" / "metrics.json").read_text())
    tensors = summary["tensors"].values()
    assert any(t["per_task"][0] for t in tensors) and any(t["per_task"][1] for t in tensors)


def test_merging_baseline_without_calibration_and_option_errors(random_llava_dir, finetuned, tmp_path):
    rc = main(["tailor", "--base", str(random_llava_dir), "--finetuned", str(finetuned["lora"]), "--method", "ties",
               "density=0.5", "--format", "patch", "--out", str(tmp_path / "ties")])
    assert rc == 0
    summary = json.loads((tmp_path / "ties" / "metrics.json").read_text())
    assert summary["options"]["density"] == 0.5 and summary["seconds"]["calibrate"] == 0
    # a sparsity for a merging method, and an unknown option, are refused before any work
    assert main(["tailor", "--finetuned", str(finetuned["lora"]), "--method", "average", "--sparsity", "0.1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert main(["tailor", "--finetuned", str(finetuned["lora"]), "fusoin=0.5", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


STUDY = """name: it
model: {{name: {model}, device: cpu}}
original: [ft-colours]
targets:
  - {{name: vqa, dataset: ft-colours-vqa, checkpoint: {lora}}}
  - {{name: caption, dataset: ft-colours-caption}}
train: {{method: projector, max_steps: 2, batch_size: 4, lr: 0.01}}
sparsities: [0.05, 0.1]
methods:
  - {{name: model-tailor, method: model-tailor}}
  - {{name: average, method: average}}
calib: {{limit: 3, batch_size: 3}}
eval: {{limit: 3, batch_size: 4, max_new_tokens: 2, caption_max_new_tokens: 4}}
"""
SUB_RUNS = [f"{group}/{run}" for group in ("vqa", "caption", "multi")
            for run in ("model-tailor-5pct", "model-tailor-10pct", "average")]


def test_study_end_to_end_and_resume(random_llava_dir, finetuned, tmp_path):
    config = tmp_path / "tailor.yaml"
    config.write_text(STUDY.format(model=random_llava_dir, lora=finetuned["lora"]))
    out = tmp_path / "run"
    assert main(["study", "tailor", "-c", str(config), "--out", str(out)]) == 0

    for name in ["base", "finetune/vqa", "finetune/caption", *SUB_RUNS]:
        assert (out / name / "DONE").exists(), name
    assert not (out / "finetune" / "vqa" / "train").exists()  # its checkpoint was given
    assert (out / "finetune" / "caption" / "train" / "checkpoints").is_dir()
    base_sets = {r["dataset"] for r in read_jsonl(out / "base" / "samples.jsonl")}
    assert base_sets == {"ft-colours", "ft-colours-vqa", "ft-colours-caption"}
    multi = read_jsonl(out / "multi" / "model-tailor-10pct" / "samples.jsonl")
    assert {r["dataset"] for r in multi} == base_sets
    caption = [r for r in multi if r["dataset"] == "ft-colours-caption"]
    assert len(caption) == 3 and all(len(r["references"]) == 3 and "correct" not in r for r in caption)
    metrics = json.loads((out / "multi" / "model-tailor-10pct" / "metrics.json").read_text())
    assert metrics["eval"]["datasets"]["ft-colours-caption"]["accuracy"] is None
    assert "cider" in metrics["eval"]["datasets"]["ft-colours-caption"]
    tailor_json = json.loads((out / "vqa" / "model-tailor-10pct" / "tailor.json").read_text())
    assert abs(tailor_json["changed_fraction"] - 0.1) < 1e-3

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["study"] == "tailor" and set(summary["groups"]) == {"vqa", "caption", "multi"}
    assert [r["folder"] for r in summary["groups"]["multi"]["runs"]] == ["model-tailor-5pct", "model-tailor-10pct",
                                                                         "average"]
    assert {(c["group"], c["id"]) for c in summary["claims"]} == {(g, k) for g in ("vqa", "caption", "multi")
                                                                   for k in ("keep", "reach")}
    assert all(c["verdict"] in ("held", "not held", "not shown") for c in summary["claims"])
    assert summary["missing_runs"] == []
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    # every JSON file the study wrote (summary, sub-runs, fine-tuning checkpoints, run.json) parses strictly
    assert_strict_json(out, at_least=20)
    # the report is rebuilt from the folder without --kind (it once failed: "several run kinds")
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text().startswith("# Model Tailor study: it")

    # resume: finished sub-runs are skipped, a sub-run without DONE is evaluated again from its saved patch
    redo = out / "caption" / "model-tailor-5pct"
    (redo / "DONE").unlink()
    (redo / "samples.jsonl").unlink()
    untouched = {name: (out / name / "samples.jsonl").stat().st_mtime_ns for name in SUB_RUNS if name != str(
        redo.relative_to(out))}
    patch_time = (redo / "patch.safetensors").stat().st_mtime_ns
    assert main(["study", "tailor", "-c", str(config), "--out", str(out)]) == 0
    assert (redo / "DONE").exists() and len(read_jsonl(redo / "samples.jsonl")) == 6
    assert (redo / "patch.safetensors").stat().st_mtime_ns == patch_time
    assert all((out / name / "samples.jsonl").stat().st_mtime_ns == t for name, t in untouched.items())
    # a sub-run is reported on its own: the fine-tuned model's evaluation and the training that made it
    assert main(["report", str(out / "finetune" / "caption")]) == 0
    page = (out / "finetune" / "caption" / "report.md").read_text()
    assert page.startswith("# Evaluation") and "## Training" in page and "## Checkpoints" in page


def test_study_puts_the_base_weights_back_after_each_run(random_llava_dir, finetuned, tmp_path):
    from unforget.config import load_config
    from unforget.studies.tailor import SubRun, TailoringArm, TailorStudyConfig
    from unforget.studies.tailor.run import BaseWeights, _run_sub, _with_finetuned
    from unforget.runs import RunDir

    config = tmp_path / "tailor.yaml"
    config.write_text(STUDY.format(model=random_llava_dir, lora=finetuned["lora"]))
    cfg = load_config(TailorStudyConfig, config, ["eval.limit=1"])
    base = BaseWeights(cfg)
    before = {k: v.clone() for k, v in base.lm.model.state_dict().items()}
    seen: list[bool] = []
    _with_finetuned(base, finetuned["lora"], lambda: seen.append(any(
        not torch.equal(before[k], v) for k, v in base.lm.model.state_dict().items())))
    assert seen == [True]  # the fine-tuned weights were in place during the action
    spec = SubRun("vqa", ["vqa"], TailoringArm("model-tailor", "model-tailor"), 0.2)
    # calibration loads the fine-tuned weights into the study's model; the patch is applied for evaluation
    _run_sub(cfg, spec, RunDir(tmp_path / "sub"), base, [finetuned["lora"]], [cfg.targets[0]], {}, None)
    after = base.lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
