"""Every model family through every verb, on tiny random models built from transformers configs (tests/tiny_models.py).

``MATRIX`` says what each family supports (True) or why a verb does not apply (a reason); the README's family table
is checked against it, and each cell marked True has a test here or in test_eval_families.py (eval in generate and
rank mode) and test_model_families.py (prompts, batched generation, training batches). Each tiny model is built
once per session; verbs run in-process (the EMT study through the real CLI).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import FAMILIES, session_tiny_model
from unforget.cli import main
from unforget.models.families import FAMILIES as KNOWN_FAMILIES
from unforget.models.families import family_of
from unforget.models.features import base_model, image_token_features, vision_encoder_features
from unforget.models.loading import load_model
from unforget.runs import read_jsonl
from unforget.studies.survey.config import model_slug
from unforget.tailoring import open_checkpoint
from unforget.tailoring.keys import canonical_name

README = Path(__file__).resolve().parents[2] / "README.md"
VERBS = ("eval", "linear probe", "EMT study", "alignment", "finetune", "tailor", "survey")
NOT_BUILT = "no tiny checkpoint in the tests yet"
# True: supported and tested on the tiny model; a string: why not
MATRIX: dict[str, dict[str, bool | str]] = {
    family: {verb: True for verb in VERBS} for family in FAMILIES
}
for _family in KNOWN_FAMILIES:
    if _family not in MATRIX:
        MATRIX[_family] = {verb: NOT_BUILT for verb in VERBS}
for _family in MATRIX:
    if family_of(_family).no_alignment:
        MATRIX[_family]["alignment"] = family_of(_family).no_alignment

METHODS = ("projector", "lora", "full", "partial")
TAILOR_METHODS = ("model-tailor", "magnitude", "average", "task-arithmetic", "ties", "dare")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py: one torch thread


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def folder(family, tmp_path_factory):
    return session_tiny_model(family, tmp_path_factory)


@pytest.fixture
def no_study_report(family, monkeypatch):
    """Studies render their report (plots: seconds each) for LLaVA only: the report reads the run folder, whose
    files are the same for every family (the report's own tests cover it)."""
    if family != "llava":
        for study in ("emt", "survey"):
            monkeypatch.setattr(f"unforget.studies.{study}.run.write_study_report", lambda *a, **k: None)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((20, 28), (48, 12), (16, 16))]


# ------------------------------------------------------------------------------------------ the README's table


def readme_matrix() -> dict[str, dict[str, str]]:
    """The README's family table: family title -> verb -> cell text."""
    text = README.read_text()
    block = text.split("<!-- family-matrix -->")[1]  # the table sits between two such markers
    rows = [line for line in block.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0]] = dict(zip(header[1:], cells[1:]))
    return table


def test_readme_family_table_matches_the_matrix():
    table = readme_matrix()
    assert set(table) == {family_of(f).title for f in MATRIX}
    for family, verbs in MATRIX.items():
        row = table[family_of(family).title]
        assert list(row) == list(VERBS), f"README columns: {list(row)}"
        for verb, supported in verbs.items():
            cell = row[verb]
            if supported is True:
                assert cell == "✓", f"{family} / {verb}: README says {cell!r}, the matrix says tested"
            else:
                expected = "untested" if supported == NOT_BUILT else r"n/a \(\d\)"
                assert re.fullmatch(expected, cell), f"{family} / {verb}: README says {cell!r}, the matrix: {supported}"


# ------------------------------------------------------------------------------------ features: probe, alignment


def _language_input_embeds(lm, images):
    """What the language model receives at the image placeholder positions: mean per image (the reference)."""
    from unforget.models.prompting import build_prompt, encode_batch

    model = base_model(lm.model)
    inner = getattr(model, "model", model)  # InstructBLIP has no inner model: its causal LM sits beside the Q-Former
    language = getattr(inner, "language_model", None) or getattr(inner, "text_model", None)
    seen = []
    hook = language.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True)
    image_id = model.config.image_token_id if hasattr(model.config, "image_token_id") else \
        model.config.image_token_index
    out = []
    try:
        for image in images:
            seen.clear()
            enc = encode_batch(lm, [image], [build_prompt(lm, "Describe the image.")])
            with torch.no_grad():
                model(**enc)
            out.append(seen[0][0, enc["input_ids"][0] == image_id].float().mean(0))
    finally:
        hook.remove()
    return torch.stack(out)


def test_alignment_reads_what_the_language_model_receives(family, folder, images):
    """The image side of the alignment is the mean of the tokens the language model receives in place of the image
    (caught: features taken before the projector, a missing image_sizes / grid argument, tiles dropped)."""
    lm = load_model(str(folder), device="cpu")
    ours = image_token_features(lm, images)
    if family == "llava_next":
        # the language model receives the tiles unpadded, with a learned newline token after each row; the
        # alignment reads the projected tiles as get_image_features returns them for the image and its size
        from unforget.models.prompting import encode_batch

        model = base_model(lm.model)
        reference = []
        for image in images:
            enc = encode_batch(lm, [image], ["<image>"])
            with torch.no_grad():
                tiles = model.get_image_features(pixel_values=enc["pixel_values"], image_sizes=enc["image_sizes"])
            tiles = getattr(tiles, "pooler_output", tiles)
            reference.append(torch.cat([t.reshape(-1, t.shape[-1]) for t in tiles]).mean(0))
        torch.testing.assert_close(ours, torch.stack(reference), atol=1e-5, rtol=1e-4)
        return
    torch.testing.assert_close(ours, _language_input_embeds(lm, images), atol=1e-5, rtol=1e-4)


def test_linear_probe_features_come_from_the_vision_encoder(family, folder, images):
    """The features move with the vision encoder's weights and not with the projector's or the language model's,
    and an image's features do not depend on the batch it is in."""
    lm = load_model(str(folder), device="cpu")
    before = vision_encoder_features(lm, images, batch_size=2)
    assert before.shape[0] == len(images) and torch.isfinite(before).all()
    torch.testing.assert_close(vision_encoder_features(lm, images[1:2]), before[1:2])
    assert not torch.allclose(before[0], before[1])
    if family == "llava":  # the reference: the vision tower's feature layer without CLS, as LLaVA's projector reads it
        from unforget.models.prompting import encode_batch

        model = base_model(lm.model)
        pixels = encode_batch(lm, images, ["<image>"] * len(images))["pixel_values"]
        with torch.no_grad():
            hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        torch.testing.assert_close(before, hidden[model.config.vision_feature_layer][:, 1:].mean(1))
    fam = family_of(family)
    named = [(canonical_name(n), p) for n, p in lm.model.named_parameters()]
    projector = [p for n, p in named if any(re.search(x, n) for x in fam.projector)]
    language = [p for n, p in named if any(re.search(x, n) for x in fam.language_blocks)]
    assert projector and language
    with torch.no_grad():
        for p in projector + language:
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(vision_encoder_features(lm, images, batch_size=2), before)
    with torch.no_grad():
        for n, p in lm.model.named_parameters():
            if any(v in n for v in ("vision_tower", "vision_model", "visual.blocks")):
                p.add_(torch.randn_like(p))
    assert not torch.allclose(vision_encoder_features(lm, images, batch_size=2), before)


# ------------------------------------------------------------------------------------------------ the EMT study

EMT_CONFIG = """name: family
model: {{name: {model}, device: cpu}}
train: {{dataset: shapes, limit: 4, epochs: 1, batch_size: 2}}
methods:
  - {{name: projector, method: projector, lr: 1.0e-2}}
eval: {{datasets: [shapes], limit: 2, batch_size: 2, max_new_tokens: 2, baselines: [linear-probe],
        probe_train_limit: 6}}
probe: {{limit: 2, batch_size: 2}}
alignment_limit: 2
"""


def test_emt_study_with_alignment_and_probe(family, folder, tmp_path, caplog, no_study_report):
    config = tmp_path / "emt.yaml"
    config.write_text(EMT_CONFIG.format(model=folder))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(["study", "emt", "-c", str(config), "--out", str(out)]) == 0
    base = json.loads((out / "base" / "metrics.json").read_text())
    probe = base["datasets"]["shapes"]["baselines"]["linear-probe"]
    assert probe["n"] == 2 and probe["n_train"] == 6 and 0.0 <= probe["accuracy"] <= 1.0
    assert len(read_jsonl(out / "projector" / "probe.jsonl")) == 1
    if MATRIX[family]["alignment"] is True:
        rows = read_jsonl(out / "base" / "alignment.jsonl") + read_jsonl(out / "projector" / "alignment.jsonl")
        assert [(r["epoch"], r["n"]) for r in rows] == [(0, 2), (1, 2)]
        assert all(-1.0 <= r["cosine_true"] <= 1.0 for r in rows)
    else:
        assert "visual-text alignment left out" in caplog.text


# -------------------------------------------------------------------------------------------------- finetuning


def _weights(path: Path) -> dict[str, torch.Tensor]:
    checkpoint = open_checkpoint(path)
    return {k: checkpoint.get(k) for k in checkpoint.keys()}


@pytest.fixture(scope="module")
def finetuned(family, folder, tmp_path_factory):
    """One `unforget finetune` run per method (one optimizer step each)."""
    root = tmp_path_factory.mktemp(f"ft-{family}")
    for method in METHODS:
        rc = main(["finetune", "--model", str(folder), "--device", "cpu", "--datasets", "shapes", "--limit", "2",
                   "--method", method, "--lr", "1e-2", "--max-steps", "1", "--batch-size", "2",
                   "--out", str(root / method), "warmup_ratio=0", "lr_scheduler=constant"])
        assert rc == 0, f"{family}: finetune --method {method} failed"
    return root


def test_finetune_methods_train_the_parts_they_promise(family, folder, finetuned):
    from unforget.training.checkpoints import latest_checkpoint

    fam = family_of(family)
    base = _weights(folder)
    full = _weights(latest_checkpoint(finetuned / "full").path)
    changed = [canonical_name(k) for k in base if not torch.equal(base[k], full[k])]
    # full fine-tuning (vision tower frozen by default) moves the projector and the language model only
    assert any(re.search(p, k) for k in changed for p in fam.projector)
    assert any(re.search(p, k) for k in changed for p in fam.language_blocks)
    assert not [k for k in changed if any(v in k for v in ("vision_tower.", "vision_model.", "visual.blocks."))]
    for method in ("projector", "lora", "partial"):
        checkpoint = latest_checkpoint(finetuned / method)
        assert checkpoint is not None and any(checkpoint.path.iterdir()), f"{family}: no {method} checkpoint"


# ---------------------------------------------------------------------------------------- tailoring and merging


def test_tailor_and_merging_baselines_with_the_family_defaults(family, folder, finetuned, tmp_path):
    fam = family_of(family)
    for method in TAILOR_METHODS:
        out = tmp_path / method
        grafting = ["--calib-limit", "2", "--sparsity", "0.1"] if method in ("model-tailor", "magnitude") else []
        rc = main(["tailor", "--base", str(folder), "--finetuned", str(finetuned / "full"), "--method", method,
                   *grafting, "--out", str(out)])
        assert rc == 0, f"{family}: tailor --method {method} failed"
        summary = json.loads((out / "metrics.json").read_text())
        keys = [canonical_name(k) for k in summary["tensors"]]
        # the family's own language blocks and projector are what is considered by default
        assert any(re.search(p, k) for k in keys for p in fam.language_blocks)
        assert any(re.search(p, k) for k in keys for p in fam.projector)
        assert summary["changed"] > 0
    load_model(str(tmp_path / "model-tailor"), device="cpu")  # the tailored folder loads as the family


# ---------------------------------------------------------------------------------------------------- the survey


def test_survey(family, folder, tmp_path, no_study_report):
    model = tmp_path / family  # the survey names each model's folder after its path's last parts
    shutil.copytree(folder, model)
    out = tmp_path / "survey"
    rc = main(["study", "survey", "--models", str(model), "--datasets", "shapes", "--out", str(out),
               "eval.limit=2", "eval.batch_size=2", "eval.baselines=[linear-probe]", "eval.probe_train_limit=6",
               "eval.device=cpu"])
    assert rc == 0
    table = json.loads((out / "metrics.json").read_text())
    [row] = table["rows"]  # one model, one dataset: the MLLM (rank mode, the survey's default) and the probe
    assert row["model"] == str(model) and row["dataset"] == "shapes" and row["n"] == 2
    assert set(row) - {"model", "dataset", "n", "mllm"} == {"linear-probe"}  # the baselines, by kind
    assert read_jsonl(out / model_slug(str(model)) / "samples.jsonl")[0]["mode"] == "rank"
