"""The run contract (issue "Trustworthy runs", items 1-3, 8, 9): run.json in every folder, a resume only into a
folder holding the same run, records keyed by dataset identity, strict JSON, names checked before any work."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from unforget.checks import checked_identity as run_identity
from unforget.cli import main
from unforget.config import load_config
from unforget.evaluation.config import EvalConfig
from unforget.runs import (RunIdentityError, atomic_write_json, check_resumable, prepare_run, read_jsonl,
                           read_manifest)
from unforget.runs.fingerprint import weights_fingerprint


def run_cli(*args):
    return main([str(a) for a in args])


def strict_load(path):
    def refuse(name):
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


# ------------------------------------------------------------------------------------------- identity per field
BASE = ["datasets=[digits]", "limit=8", "mode=rank"]
# every field of an eval that changes its numbers, and a value that differs from BASE's
IDENTITY_FIELDS = {
    "config.mode": "mode=generate",
    "config.split": "split=train",
    "config.limit": "limit=9",
    "config.sampling": "sampling=head",
    "config.seed": "seed=1",
    "config.template": "template=1",
    "config.max_new_tokens": "max_new_tokens=5",
    "config.rank_normalise": "rank_normalise=mean",
    "config.also_rank": "also_rank=true",
    "config.judges": "judges=[exact,embedding]",
    "config.leak_labels": "leak_labels=[shapes]",
    "config.baselines": "baselines=[linear-probe]",
    "config.probe_train_limit": "probe_train_limit=10",
    "config.skip_bad": "skip_bad=true",
    "config.model.dtype": "model.dtype=bfloat16",
    "config.judge_options.embedding.threshold": "judge_options={embedding: {threshold: 0.5}}",
}


@pytest.mark.parametrize("field", sorted(IDENTITY_FIELDS))
def test_each_identity_field_refuses_a_resume_and_names_itself(tmp_path, field):
    """Bug caught: a resume that reuses records made under other settings (rank records reported as generate)."""
    before = run_identity(load_config(EvalConfig, None, BASE))
    prepare_run(tmp_path / "run", "eval", before)
    after = run_identity(load_config(EvalConfig, None, [*BASE, IDENTITY_FIELDS[field]]))
    with pytest.raises(RunIdentityError) as err:
        check_resumable(tmp_path / "run", "eval", after)
    message = str(err.value)
    assert field in message and "--overwrite" in message and "--out" in message
    check_resumable(tmp_path / "run", "eval", before)  # the same settings resume


def test_settings_that_change_speed_only_do_not_block_a_resume(tmp_path):
    prepare_run(tmp_path / "run", "eval", run_identity(load_config(EvalConfig, None, BASE)))
    for override in ("model.device=cpu", "model.attn_implementation=eager", f"out={tmp_path}/elsewhere"):
        check_resumable(tmp_path / "run", "eval", run_identity(load_config(EvalConfig, None, [*BASE, override])))


def test_the_llm_judge_endpoint_and_model_are_identity_but_the_key_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("UNFORGET_JUDGE_BASE_URL", "http://a.example/v1")
    monkeypatch.setenv("UNFORGET_JUDGE_MODEL", "judge-a")
    monkeypatch.setenv("UNFORGET_JUDGE_API_KEY", "sk-first")
    cfg = [*BASE, "judges=[exact,llm]"]
    first = run_identity(load_config(EvalConfig, None, cfg))
    assert "sk-first" not in json.dumps(first)
    monkeypatch.setenv("UNFORGET_JUDGE_API_KEY", "sk-second")
    assert run_identity(load_config(EvalConfig, None, cfg)) == first
    monkeypatch.setenv("UNFORGET_JUDGE_MODEL", "judge-b")
    prepare_run(tmp_path / "run", "eval", first)
    with pytest.raises(RunIdentityError, match="judges.llm.model"):
        check_resumable(tmp_path / "run", "eval", run_identity(load_config(EvalConfig, None, cfg)))


def test_weights_fingerprint_tells_two_checkpoints_of_one_shape_apart(tmp_path):
    """Sizes and safetensors headers are equal for two fine-tunes of one architecture: the sampled bytes differ."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        save_file({"w": rng.standard_normal((300, 300)).astype(np.float32)}, str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text("{}")
    a, b = weights_fingerprint(tmp_path / "a"), weights_fingerprint(tmp_path / "b")
    assert a["bytes"] == b["bytes"] and a["digest"] != b["digest"]
    (tmp_path / "a" / "README.md").write_text("notes")  # documentation does not change the weights
    assert weights_fingerprint(tmp_path / "a") == a


def test_a_changed_image_folder_refuses_the_resume(tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / c / f"{i}.png")
    cfg = [f"datasets=[imagefolder:{root}]"]
    prepare_run(tmp_path / "run", "eval", run_identity(load_config(EvalConfig, None, cfg)))
    Image.new("RGB", (8, 8), (0, 255, 0)).save(root / "cat" / "0.png")  # same name, new content
    with pytest.raises(RunIdentityError, match="fingerprint"):
        check_resumable(tmp_path / "run", "eval", run_identity(load_config(EvalConfig, None, cfg)))


def test_a_folder_without_a_manifest_is_not_resumed_blindly(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "samples.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(RunIdentityError, match="no run.json"):
        check_resumable(tmp_path / "old", "eval", {})


# ---------------------------------------------------------------------------------------- through the real CLI
def test_resume_with_another_mode_is_refused_before_any_work(tmp_path, capsys):
    """The reported bug: a generate run into a finished rank run's folder reused its 50 records."""
    out = tmp_path / "run"
    common = ["eval", "--model", "tiny-llava", "--datasets", "digits", "--limit", 6, "--out", out]
    assert run_cli(*common, "--mode", "rank") == 0
    records = (out / "samples.jsonl").read_text()
    manifest = read_manifest(out)
    assert manifest.kind == "eval" and manifest.identity["config"]["mode"] == "rank"
    assert manifest.identity["models"]["tiny-llava"]["fingerprint"]
    assert run_cli(*common, "--mode", "generate") == 2
    said = capsys.readouterr().out
    assert "config.mode" in said and "--overwrite" in said
    assert (out / "samples.jsonl").read_text() == records  # nothing touched
    assert run_cli(*common, "--mode", "generate", "--overwrite") == 0
    assert {r["mode"] for r in read_jsonl(out / "samples.jsonl")} == {"generate"}
    assert read_manifest(out).identity["config"]["mode"] == "generate"


def _write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "t10k"):
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">IIII", 0x803, len(images), 28, 28) + images.astype(np.uint8).tobytes())
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def test_two_sets_with_the_same_folder_name_stay_apart(tmp_path):
    """The reported bug: mnist-idx:/a/mnist and mnist-idx:/b/mnist were both recorded as "mnist"; after a resume
    each reported the other's records. Here /a holds real digits (from the embedded set), /b the same images with
    every label shifted by one, so their accuracies must differ."""
    from unforget.data import load_dataset

    digits = load_dataset("digits").split("test")[:20]
    images = np.stack([np.asarray(s.load_image().convert("L").resize((28, 28))) for s in digits])
    labels = np.array([s.label for s in digits])
    _write_idx(tmp_path / "a" / "mnist", images, labels)
    _write_idx(tmp_path / "b" / "mnist", images, (labels + 1) % 10)
    refs = [f"mnist-idx:{tmp_path / 'a' / 'mnist'}", f"mnist-idx:{tmp_path / 'b' / 'mnist'}"]
    out = tmp_path / "run"
    args = ["eval", "--model", "tiny-llava", "--datasets", ",".join(refs), "--mode", "rank", "--out", out]
    assert run_cli(*args) == 0
    records = read_jsonl(out / "samples.jsonl")
    assert {r["dataset"] for r in records} == set(refs)
    fresh = strict_load(out / "metrics.json")["datasets"]
    assert fresh[refs[0]]["accuracy"] != fresh[refs[1]]["accuracy"]
    for ref in refs:  # each set's figure comes from its own records
        mine = [r for r in records if r["dataset"] == ref]
        assert len(mine) == 20 and fresh[ref]["accuracy"] == pytest.approx(sum(r["correct"] for r in mine) / 20)
    assert run_cli(*args) == 0  # a resume keeps them apart

    def figures(datasets):
        return {k: {f: v for f, v in m.items() if f != "seconds"} for k, m in datasets.items()}

    assert figures(strict_load(out / "metrics.json")["datasets"]) == figures(fresh)


# ------------------------------------------------------------------------------------------ checks before work
def test_a_typo_in_the_second_dataset_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import unforget.evaluation.evaluator as evaluator

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the names were checked")

    monkeypatch.setattr(evaluator, "load_configured_model", no_load)
    out = tmp_path / "run"
    assert run_cli("eval", "--model", "tiny-llava", "--datasets", "digits,shapez", "--out", out) == 2
    assert "Did you mean 'shapes'" in capsys.readouterr().out
    assert not out.exists()


def test_a_zoo_name_typo_gets_did_you_mean_and_no_hub_call(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def no_hub(*a, **k):
        raise AssertionError("the hub was asked for a zoo-name typo")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    out = tmp_path / "run"
    assert run_cli("eval", "--model", "tiny-lava", "--datasets", "digits", "--out", out) == 2
    assert "Did you mean 'tiny-llava'" in capsys.readouterr().out
    assert not out.exists()


@pytest.mark.parametrize("override,expected", [("eval.judges=[exact,embeding]", "embedding"),
                                               ("methods=[{name: p, method: projektor}]", "projector"),
                                               ("train.dataset=digitz", "digits")])
def test_a_study_checks_every_name_before_its_folder_exists(tmp_path, capsys, override, expected):
    out = tmp_path / "study"
    assert run_cli("study", "emt", "-c", "emt/quickstart", "--out", out, override) == 2
    assert f"Did you mean '{expected}'" in capsys.readouterr().out
    assert not out.exists()


def test_a_study_folder_refuses_another_config_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from unforget.checks import checked_identity as run_identity
    from unforget.studies.emt import EmtConfig

    out = tmp_path / "study"
    cfg = load_config(EmtConfig, "emt/quickstart", [f"out={out}"])
    prepare_run(out, "emt", run_identity(cfg))
    import unforget.evaluation.evaluator as evaluator

    monkeypatch.setattr(evaluator, "load_configured_model",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert run_cli("study", "emt", "-c", "emt/quickstart", "--out", out, "train.epochs=5") == 2
    assert "config.train.epochs" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ strict JSON
def test_json_files_never_hold_nan(tmp_path):
    from unforget.runs import JsonlAppender

    atomic_write_json(tmp_path / "m.json", {"agreement": float("nan"), "x": [1.0, float("inf")],
                                            "n": np.float32("nan")})
    assert strict_load(tmp_path / "m.json") == {"agreement": None, "x": [1.0, None], "n": None}
    with JsonlAppender(tmp_path / "s.jsonl") as app:
        app.write({"v": float("-inf")})
    assert json.loads((tmp_path / "s.jsonl").read_text(), parse_constant=lambda c: 1 / 0) == {"v": None}
