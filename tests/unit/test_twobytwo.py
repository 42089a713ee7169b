"""The 2x2 study's pure parts (plan, cell metrics, Pareto front, heatmap grid) and its report, on a hand-written run
folder whose numbers are worked out below.

Cells (20 samples each, ids 0..19): target T, ID image + OOD text IO, OOD image + ID text OI, OOD image + OOD text OO.
Correct ids per evaluation:

    run                       T      IO     OI     OO    params
    base                      0-4    all    all    0-9
    sweep projector lr 1e-4   0-14   all    all    0-9    100
    sweep projector lr 1e-3   all    all    none   0-9    100
    sweep full      lr 1e-3   all    0-9    none   none   1000
    hybrid r0   (full 1e-3)   all    0-4    all    0-9    1000
    hybrid r0.5 (full 1e-3)   all    0-17   all    0-9    1000

Target gain: projector 1e-4 0.5, every other run 0.75. OOD-image cells pooled (40 samples, base 30 correct).
"""

import json
from pathlib import Path

import pytest

from unforget.config import from_dict, load_config
from unforget.errors import ConfigError
from unforget.studies.report import detect_report_kind
from unforget.studies.twobytwo import (
    Cells,
    LogGrid,
    TwoByTwoConfig,
    hybrid_plan,
    hybrid_probs,
    replay_counts_needed,
    summarise_twobytwo,
    sweep_plan,
    write_twobytwo_report,
)
from unforget.studies.twobytwo.summary import cell_metrics, pareto_front, sweep_grid

CELLS = {"id_image_id_text": "T", "id_image_ood_text": "IO", "ood_image_id_text": "OI", "ood_image_ood_text": "OO"}
ALL, NONE = range(20), range(0)
BASE = {"T": range(5), "IO": ALL, "OI": ALL, "OO": range(10)}
RUNS = {
    "sweep/projector-lr0.0001-e1": ({"kind": "sweep", "method": {"name": "projector", "method": "projector"},
                                     "lr": 1e-4, "epochs": 1}, 100,
                                    {"T": range(15), "IO": ALL, "OI": ALL, "OO": range(10)}),
    "sweep/projector-lr0.001-e1": ({"kind": "sweep", "method": {"name": "projector", "method": "projector"},
                                    "lr": 1e-3, "epochs": 1}, 100,
                                   {"T": ALL, "IO": ALL, "OI": NONE, "OO": range(10)}),
    "sweep/full-lr0.001-e1": ({"kind": "sweep", "method": {"name": "full", "method": "full"}, "lr": 1e-3,
                               "epochs": 1}, 1000, {"T": ALL, "IO": range(10), "OI": NONE, "OO": NONE}),
    "hybrid/r0": ({"kind": "hybrid", "method": {"name": "full", "method": "full"}, "lr": 1e-3, "epochs": 1,
                   "ratio": 0.0, "mix_by": "sample"}, 1000, {"T": ALL, "IO": range(5), "OI": ALL, "OO": range(10)}),
    "hybrid/r0.5": ({"kind": "hybrid", "method": {"name": "full", "method": "full"}, "lr": 1e-3, "epochs": 1,
                     "ratio": 0.5, "mix_by": "sample"}, 1000, {"T": ALL, "IO": range(18), "OI": ALL, "OO": range(10)}),
}
CONFIG = """name: synthetic
model: {name: tiny-test-model}
cells: {id_image_id_text: T, id_image_ood_text: IO, ood_image_id_text: OI, ood_image_ood_text: OO}
train: {limit: 8}
sweep:
  methods: [{name: projector, method: projector}, {name: full, method: full}]
  lrs: [0.0001, 0.001]
  epochs: [1]
hybrid: {sources: [{name: general, dataset: G}], ratios: [0.0, 0.5], budget: 8}
eval: {limit: 20}
alpha: 0.05
margin: 0.1
"""


def records(correct: dict[str, range], epoch: int) -> list[dict]:
    return [{"epoch": epoch, "id": f"{ref}{i}", "dataset": ref, "reference": "x",
             "prediction": "x" if i in correct[ref] else None, "correct": i in correct[ref]}
            for ref in ("T", "IO", "OI", "OO") for i in range(20)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(CONFIG)
    write_jsonl(tmp_path / "base" / "samples.jsonl", records(BASE, 0))
    (tmp_path / "base" / "DONE").write_text("")
    for name, (spec, params, correct) in RUNS.items():
        folder = tmp_path / name
        write_jsonl(folder / "samples.jsonl", records(correct, 1))
        (folder / "spec.json").write_text(json.dumps({"name": name, **spec}))
        (folder / "metrics.json").write_text(json.dumps({"trainable_parameters": params, "total_parameters": 2000}))
        (folder / "DONE").write_text("")
    return tmp_path


# ------------------------------------------------------------------------------------------------- plan


def plan_config(**overrides) -> TwoByTwoConfig:
    data = {"sweep": {"methods": [{"name": "projector", "method": "projector"},
                                  {"name": "lora-r4", "method": "lora", "options": {"r": 4}}],
                      "lr_grid": {"low": 1e-4, "high": 1e-2, "points": 3}, "epochs": [1, 2]},
            "train": {"limit": 100},
            "hybrid": {"sources": [{"name": "replay", "dataset": "R", "replay": True},
                                   {"name": "general", "dataset": "G", "weight": 3}],
                       "ratios": [0.0, 0.2], "mix_by": ["sample", "batch"]}}
    data.update(overrides)
    return from_dict(TwoByTwoConfig, data)


def test_log_grid_is_even_in_log_scale():
    assert LogGrid(1e-4, 1e-2, 3).values() == [1e-4, 1e-3, 1e-2]
    assert LogGrid(1e-5, 1e-5, 1).values() == [1e-5]


def test_sweep_plan_is_methods_x_lrs_x_epochs():
    cfg = plan_config()
    names = [s.name for s in sweep_plan(cfg)]
    assert len(names) == 2 * 3 * 2
    assert names[:3] == ["sweep/projector-lr0.0001-e1", "sweep/projector-lr0.0001-e2", "sweep/projector-lr0.001-e1"]
    assert all(s.datasets == ["scenes-vqa?qtypes=colour"] for s in sweep_plan(cfg))  # the target cell, train split


def test_hybrid_plan_shares_and_names():
    cfg = plan_config()
    plan = hybrid_plan(cfg, {"replay": "jsonl:/x/replay.jsonl?split=train"})
    assert [s.name for s in plan] == ["hybrid/r0", "hybrid/r0.2-sample", "hybrid/r0.2-batch"]
    assert plan[1].interleave_probs == pytest.approx([0.8, 0.05, 0.15])  # r=0.2 split 1:3 by weight
    assert plan[1].datasets == ["scenes-vqa?qtypes=colour", "jsonl:/x/replay.jsonl?split=train", "G"]
    assert {s.budget for s in plan} == {100}  # train.limit
    assert plan[0].lr == 1e-2 and plan[0].epochs == 2 and plan[0].method.name == "projector"  # the defaults


def test_hybrid_probs_and_replay_needs():
    assert hybrid_probs(0.5, [1, 1]) == [0.5, 0.25, 0.25]
    # budget 100, r = 0.2, shares (0.8, 0.05, 0.15): the replay source needs 5 answers
    assert replay_counts_needed(plan_config()) == {"replay": 5}


def test_config_checks():
    with pytest.raises(ConfigError, match="four different"):
        Cells(id_image_ood_text="scenes-vqa?qtypes=colour").validate()
    with pytest.raises(ConfigError, match="fixed budget"):
        plan_config(train={"limit": None})
    cfg = load_config(TwoByTwoConfig, None, ["cells.ood_image_ood_text=digits"])
    assert cfg.eval.datasets[-1] == "digits"  # eval.datasets follows the cells


# ------------------------------------------------------------------------------------------------- pure metrics


def test_cell_metrics_pairs_by_id():
    base = [{"dataset": "d", "id": str(i), "correct": c} for i, c in enumerate([1, 1, 1, 0])]
    tuned = [{"dataset": "d", "id": str(i), "correct": c} for i, c in enumerate([1, 0, 0, 1])]
    tuned.append({"dataset": "d", "id": "extra", "correct": True})  # not judged at base: left out
    m = cell_metrics(base, tuned)
    assert (m.base.value, m.after.value, m.n) == (0.75, 0.5, 4)
    assert m.forgetting.delta.value == pytest.approx(0.25) and m.gain == pytest.approx(-0.25)
    assert (m.forgetting.n_discordant_b, m.forgetting.n_discordant_c) == (2, 1)
    assert m.forgetting.p_value == pytest.approx(1.0)  # exact McNemar, b=2 c=1: 2 * P(X <= 1 | 3, 1/2) = 1
    assert cell_metrics(base, []) is None


def test_pareto_front():
    points = [(0.1, 0.3), (0.05, 0.2), (0.2, 0.25), (0.05, 0.1), (None, 1.0), (0.1, 0.3)]
    # (0.2, 0.25) loses to (0.1, 0.3); (0.05, 0.1) to (0.05, 0.2); the two equal (0.1, 0.3) do not beat each other
    assert pareto_front(points) == [1, 0, 5]
    assert pareto_front([]) == []


def test_sweep_grid_rows_methods_cols_lrs():
    points = [{"method_name": "a", "lr": 1e-3, "v": 0.5}, {"method_name": "b", "lr": 1e-4, "v": 0.1},
              {"method_name": "a", "lr": 1e-4, "v": 0.2}]
    grid = sweep_grid(points, "v", ["b", "a"])
    assert grid.rows == ["b", "a"] and grid.cols == ["0.0001", "0.001"]
    assert grid.values == [[0.1, None], [0.2, 0.5]]


# ------------------------------------------------------------------------------------------------- summary


def test_summary_numbers(run_dir):
    s = summarise_twobytwo(run_dir).to_dict()
    runs = {r["name"]: r for r in s["runs"]}
    assert list(runs) == list(RUNS)  # config order: sweep by method then lr, then hybrid by ratio
    assert s["base"]["ood_image_id_text"]["value"] == 1.0
    p = runs["sweep/projector-lr0.001-e1"]
    assert p["after"]["ood_image_id_text"] == 0.0 and p["forgetting"]["ood_image_id_text"] == 1.0
    assert p["cells"]["ood_image_id_text"]["forgetting"]["p_value"] == pytest.approx(2 * 0.5 ** 20)
    assert p["target_gain"] == pytest.approx(0.75)
    assert p["forgetting_other"] == pytest.approx(20 / 60)
    assert p["forgetting_ood_image"] == pytest.approx(0.5)
    assert runs["sweep/full-lr0.001-e1"]["forgetting_ood_image"] == pytest.approx(0.75)
    assert runs["sweep/projector-lr0.0001-e1"]["target_gain"] == pytest.approx(0.5)
    # Pareto, 3 other cells: projector 1e-4 (0, 0.5) and hybrid r0.5 (2/60, 0.75) beat the rest
    assert [n for n, r in runs.items() if r["pareto_other"]] == ["sweep/projector-lr0.0001-e1", "hybrid/r0.5"]
    # OOD images: hybrid r0 and r0.5 tie at (0, 0.75) and beat projector 1e-4 (0, 0.5)
    assert [n for n, r in runs.items() if r["pareto_ood_image"]] == ["hybrid/r0", "hybrid/r0.5"]
    oi = s["heatmaps"]["1"]["ood_image_id_text"]
    assert oi == {"rows": ["projector", "full"], "cols": ["0.0001", "0.001"], "values": [[0.0, 1.0], [None, 1.0]]}
    assert s["heatmaps"]["1"]["trainable_parameters"]["values"] == [[100, 100], [None, 1000]]


def test_claims(run_dir):
    claims = summarise_twobytwo(run_dir).to_dict()["claims"]
    by = {(c["id"], tuple(c["runs"])): c for c in claims}
    assert len(claims) == 3 + 1 + 1 + 3
    keep = by[("no-ood-image-forgetting", ("sweep/projector-lr0.0001-e1",))]
    assert keep["verdict"] == "held" and keep["test"]["delta"]["value"] == 0.0  # within +/-0.1 at n=40
    assert by[("no-ood-image-forgetting", ("sweep/projector-lr0.001-e1",))]["verdict"] == "not held"
    lower = by[("lower-lr-forgets-less", ("sweep/projector-lr0.0001-e1", "sweep/projector-lr0.001-e1"))]
    assert lower["verdict"] == "held"
    assert lower["test"]["delta"]["value"] == pytest.approx(0.5)  # 20 of 40 better, none worse
    assert lower["test"]["p_value"] == pytest.approx(2 * 0.5 ** 20)
    fewer = by[("fewer-parameters-forget-less", ("sweep/projector-lr0.001-e1", "sweep/full-lr0.001-e1"))]
    assert fewer["verdict"] == "held" and fewer["test"]["p_value"] == pytest.approx(2 * 0.5 ** 10)
    overfit = by[("task-alone-overfits-ood-text", ("hybrid/r0",))]
    assert overfit["verdict"] == "held" and overfit["test"]["p_value"] == pytest.approx(2 * 0.5 ** 15)
    recovers = by[("hybrid-recovers-ood-text", ("hybrid/r0.5", "hybrid/r0"))]
    assert recovers["verdict"] == "held" and recovers["test"]["p_value"] == pytest.approx(2 * 0.5 ** 13)
    # the same 20/20 on the target: no change, but n=20 gives an interval wider than +/-0.1
    stays = by[("hybrid-keeps-target-gain", ("hybrid/r0.5", "hybrid/r0"))]
    assert stays["verdict"] == "not shown" and stays["test"]["delta"]["value"] == 0.0


def test_report_files_and_detection(run_dir):
    assert detect_report_kind(run_dir).name == "2x2"
    files = write_twobytwo_report(run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["study"] == "2x2"
    names = sorted(p.name for p in files.plots)
    assert names == ["grid-full.png", "grid-hybrid.png", "grid-projector.png", "hybrid.png", "pareto.png",
                     "sweep-forgetting-e1.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in files.plots)
    md = files.markdown.read_text()
    assert "Pareto front" in md and "[HELD]" in md and "[NOT HELD]" in md and "hybrid/r0.5" in md
    assert "sweep/full-lr0.001-e1" in files.html.read_text()


def test_an_unfinished_run_is_noted(run_dir):
    (run_dir / "hybrid" / "r0.5" / "DONE").unlink()
    notes = summarise_twobytwo(run_dir).to_dict()["notes"]
    assert notes == ["hybrid/r0.5: not finished (no DONE); its figures use the samples judged so far."]


def test_records_are_matched_by_the_dataset_names_in_cells_json(run_dir):
    before = summarise_twobytwo(run_dir).to_dict()["runs"]
    # the cells loaded under other names than their references (e.g. jsonl:/x/test.jsonl -> "test")
    names = {ref: f"{ref}-name" for ref in CELLS.values()}
    for path in run_dir.rglob("samples.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        write_jsonl(path, [{**r, "dataset": names[r["dataset"]]} for r in rows])
    (run_dir / "cells.json").write_text(json.dumps({k: {"ref": ref, "dataset": names[ref]} for k, ref in CELLS.items()}))
    assert summarise_twobytwo(run_dir).to_dict()["runs"] == before


def test_cells_from_files_of_one_name_stay_apart_and_one_reference_twice_is_rejected(tmp_path):
    """Two jsonl files both named test.jsonl were both recorded as "test" (the folder-name bug of the trustworthy-runs
    issue): now each cell's records carry its reference; only the very same reference in two cells collides."""
    from PIL import Image

    from unforget.runs import RunDir
    from unforget.studies.twobytwo import write_cell_names

    refs = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "1.png")
        (tmp_path / folder / "test.jsonl").write_text('{"image": "1.png", "question": "q?", "answer": "x"}\n')
        refs.append(f"jsonl:{tmp_path / folder / 'test.jsonl'}")
    small = {"id_image_id_text": "scenes-vqa?qtypes=colour&n_train=1&n_test=1",
             "ood_image_id_text": "easy-vqa?qtypes=colour&n_train=1&n_test=1"}
    cfg = from_dict(TwoByTwoConfig, {"cells": {**small, "id_image_ood_text": refs[0], "ood_image_ood_text": refs[1]}})
    names = write_cell_names(cfg, RunDir(tmp_path / "run"))
    assert names["id_image_ood_text"] == refs[0] and names["ood_image_ood_text"] == refs[1]
    saved = json.loads((tmp_path / "run" / "cells.json").read_text())
    assert saved["ood_image_ood_text"] == {"ref": refs[1], "dataset": refs[1]}
    cfg.cells.ood_image_ood_text = refs[0]
    with pytest.raises(ConfigError, match="same name"):
        write_cell_names(cfg, RunDir(tmp_path / "run"))


# ------------------------------------------------------------------------------------------------- probe

# per run: KL on (T, IO, OI, OO), label mass. OOD-image KL = mean of OI and OO (2 probe samples each).
PROBE = {
    "sweep/projector-lr0.0001-e1": ((0.5, 0.1, 0.1, 0.1), 0.10),
    "sweep/projector-lr0.001-e1": ((0.5, 0.0, 0.9, 0.3), 0.40),
    "sweep/full-lr0.001-e1": ((0.5, 0.6, 1.5, 1.1), 0.60),
    "hybrid/r0": ((0.5, 0.2, 0.3, 0.1), 0.20),
    "hybrid/r0.5": ((0.5, 0.0, 0.05, 0.05), 0.15),
}


def probe_row(kls, mass, epoch):
    by = {ref: {"n": 2, "kl": kl, "label_mass": mass, "base_label_mass": 0.1} for ref, kl in zip(CELLS.values(), kls)}
    return {"epoch": epoch, "n": 8, "kl": {"value": sum(kls) / 4, "low": 0.0, "high": 2.0, "n": 8},
            "label_mass": {"value": mass, "low": mass - 0.05, "high": mass + 0.05, "n": 8}, "base_label_mass": 0.1,
            "label_set": "T", "label_tokens": [3], "by_dataset": by}


@pytest.fixture()
def probed_dir(run_dir: Path) -> Path:
    write_jsonl(run_dir / "base" / "probe.jsonl", [probe_row((0.0,) * 4, 0.1, 0)])
    for name, (kls, mass) in PROBE.items():
        write_jsonl(run_dir / name / "probe.jsonl", [probe_row(kls, mass, 1)])
    return run_dir


def test_probe_points_against_measured_forgetting(probed_dir):
    probe = summarise_twobytwo(probed_dir).to_dict()["probe"]
    points = {p["name"]: p for p in probe["points"]}
    assert list(points) == list(RUNS) and probe["missing"] == []
    p = points["sweep/projector-lr0.001-e1"]
    assert p["kl_ood_image"] == pytest.approx(0.6)  # (0.9 + 0.3) / 2: the target's KL is not in it
    assert p["kl_other"] == pytest.approx(0.4)  # (0.0 + 0.9 + 0.3) / 3
    assert p["kl_cells"]["id_image_id_text"] == pytest.approx(0.5)
    assert p["forgetting_ood_image"] == pytest.approx(0.5) and p["forgetting_other"] == pytest.approx(20 / 60)
    assert probe["base_label_mass"] == pytest.approx(0.1) and probe["label_set"] == "T"
    # OOD images: KL ranks (2, 4, 5, 3, 1), forgetting 0, 0.5, 0.75, 0, 0 -> ranks (2, 4, 5, 2, 2): rho = 8 / sqrt(80)
    corr = probe["correlation"]["ood_image"]
    assert corr["n"] == 5 and corr["rho"] == pytest.approx(8 / 80 ** 0.5)
    from scipy.stats import spearmanr

    expected = spearmanr([0.1, 0.6, 1.3, 0.2, 0.05], [0, 0.5, 0.75, 0, 0])
    assert corr["p_value"] == pytest.approx(expected.pvalue)
    # other cells: KL 0.1, 0.4, 16/15, 0.2, 0.1/3 and forgetting 0, 20/60, 40/60, 15/60, 2/60 order the runs alike
    assert probe["correlation"]["other"]["rho"] == pytest.approx(0.9)
    assert probe["correlation"]["label_mass_ood_image"]["rho"] == pytest.approx(
        spearmanr([0.1, 0.4, 0.6, 0.2, 0.15], [0, 0.5, 0.75, 0, 0]).statistic)


def test_probe_section_and_plot(probed_dir):
    files = write_twobytwo_report(probed_dir)
    assert "probe.png" in [p.name for p in files.plots]
    md = files.markdown.read_text()
    assert "Judge-free forgetting probe" in md and "rho = 0.894" in md
    assert "over 5 run points" in md


def test_probe_missing_for_a_run_and_absent_altogether(probed_dir, run_dir):
    (probed_dir / "hybrid" / "r0.5" / "probe.jsonl").unlink()
    probe = summarise_twobytwo(probed_dir).to_dict()["probe"]
    assert probe["missing"] == ["hybrid/r0.5"] and probe["correlation"]["ood_image"]["n"] == 4
    for path in probed_dir.rglob("probe.jsonl"):
        path.unlink()
    assert summarise_twobytwo(probed_dir).to_dict()["probe"] is None


def test_replay_of_a_text_only_source_is_refused_before_generating(tmp_path):
    # conversation / text sets have no image to ask the base model about: the error names the source and the fix
    from unforget.runs import RunDir
    from unforget.studies.twobytwo.config import HybridSource
    from unforget.studies.twobytwo.replay import write_replay_set

    source = HybridSource(name="chat", dataset="text", replay=True, split="test")
    with pytest.raises(ConfigError, match=r"replay source 'chat' \(text\) holds text-only samples.*replay: false"):
        write_replay_set(None, source, 4, RunDir(tmp_path), None)  # type: ignore[arg-type]
    assert not (tmp_path / "replay.jsonl").exists()
