"""One hand-written run folder of every kind `unforget report` knows (no model, no training), each made to stress
its plots the way real runs did: a 2x2 sweep whose runs all sit at the origin of the Pareto plot (the labels piled
up there), a sweep heatmap with a pale "+0.18" cell, a tailor study whose legend is wider than its one panel, a
64-class confusion matrix with long class names. Shared by the plot legibility test and the browser test.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from tests.synthetic_emt_run import make_run as make_emt_run
from tests.unit.test_report_kinds import (
    A_MNIST,
    B_MNIST,
    classification,
    make_tailor_study,
    mark,
    write_json,
    write_jsonl,
    write_training_folder,
)

KINDS = ("eval", "finetune", "emt", "2x2", "continual", "survey", "tailor-study", "tailor", "judge-validate")
CLASSES_64 = [f"aquarium-fish-{i:02d}" for i in range(64)]  # long names, as CIFAR-100's


def confusion_64(seed: int = 0) -> dict[str, dict[str, int]]:
    """64 classes with long names, most answers right, a few confusions and no-class answers."""
    rng = random.Random(seed)
    out: dict[str, dict[str, int]] = {}
    for c in CLASSES_64:
        row = {c: rng.randint(3, 9)}
        for _ in range(rng.randint(0, 3)):
            p = rng.choice(CLASSES_64)
            row[p] = row.get(p, 0) + rng.randint(1, 4)
        if rng.random() < 0.3:
            row["<none>"] = rng.randint(1, 3)
        out[c] = row
    return out


def eval_folder(folder: Path) -> Path:
    mark(folder, "eval")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "m"}, "datasets": ["cifar100", A_MNIST],
                                                        "split": "test", "mode": "generate"}))
    confusion = confusion_64()
    n = sum(sum(r.values()) for r in confusion.values())
    right = sum(r.get(c, 0) for c, r in confusion.items())
    wide = {"n": n, "accuracy": right / n, "accuracy_low": right / n - 0.05, "accuracy_high": right / n + 0.05,
            "per_class": {c: 0.5 for c in CLASSES_64}, "confusion": confusion, "no_class_rate": 0.1,
            "top1_share": 0.05, "normalised_entropy": 0.9, "leak_rates": {}, "baselines": {}}
    small = {"n": 4, "accuracy": 0.5, "accuracy_low": 0.15, "accuracy_high": 0.85, "per_class": {"1": 1.0},
             "confusion": {"1": {"1": 2}, "2": {"<none>": 2}}, "no_class_rate": 0.5, "top1_share": 1.0,
             "normalised_entropy": 0.0, "leak_rates": {}, "baselines": {}}
    write_json(folder / "metrics.json", {"datasets": {"cifar100": wide, A_MNIST: small}})
    return folder


TWOBYTWO_CONFIG = {"name": "crowded", "model": {"name": "m"},
                   "cells": {"id_image_id_text": "T", "id_image_ood_text": "IO", "ood_image_id_text": "OI",
                             "ood_image_ood_text": "OO"},
                   "train": {"limit": 20},
                   "sweep": {"methods": [{"name": "projector", "method": "projector"},
                                         {"name": "lora", "method": "lora"}, {"name": "full", "method": "full"}],
                             "lrs": [1e-5, 1e-4, 1e-3], "epochs": [1]},
                   "eval": {"limit": 50}, "alpha": 0.05, "margin": 0.1}
CELLS = ("T", "IO", "OI", "OO")


def twobytwo_folder(run: Path) -> Path:
    """Nine sweep runs: seven exactly as good as the base everywhere (all at the Pareto plot's origin), one that
    gains 9 target answers while forgetting 9 OOD-image ones (its sweep cell reads -0.18 / +0.18 on a +/-0.3 scale,
    pale), one that forgets 15 (dark)."""
    (run / "base").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(TWOBYTWO_CONFIG))
    n = 50
    base = {c: set(range(25)) for c in CELLS}
    write_jsonl(run / "base" / "samples.jsonl", [r for c in CELLS for r in classification(c, n, base[c], epoch=0)])
    (run / "base" / "DONE").write_text("")
    for method, params in (("projector", 4_000_000), ("lora", 20_000_000), ("full", 7_000_000_000)):
        for lr in (1e-5, 1e-4, 1e-3):
            correct = dict(base)
            if (method, lr) == ("lora", 1e-3):
                correct = {"T": set(range(34)), "IO": set(range(25)), "OI": set(range(16)), "OO": set(range(16))}
            if (method, lr) == ("full", 1e-3):
                correct = {"T": set(range(40)), "IO": set(range(10)), "OI": set(range(10)), "OO": set(range(10))}
            name = f"{method}-lr{lr:g}-e1"
            sub = run / "sweep" / name
            write_jsonl(sub / "samples.jsonl",
                        [r for c in CELLS for r in classification(c, n, correct[c], epoch=1)])
            write_json(sub / "spec.json", {"name": f"sweep/{name}", "kind": "sweep",
                                           "method": {"name": method, "method": method}, "lr": lr, "epochs": 1})
            write_json(sub / "metrics.json", {"trainable_parameters": params, "total_parameters": 7_000_000_000})
            write_training_folder(sub / "train")
            (sub / "DONE").write_text("")
    return mark(run, "2x2")


def continual_folder(run: Path) -> Path:
    from unforget.studies.continual import step_folder_name  # loads the study registry (torch) only when built

    tasks = [A_MNIST, B_MNIST]
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "name": "t", "tasks": tasks, "strategies": [{"name": "naive", "strategy": "naive", "options": {}}],
        "alpha": 0.05, "n_resamples": 50, "eval": {"split": "test", "limit": 4}}))
    write_jsonl(run / "base" / "samples.jsonl", [r for t in tasks for r in classification(t, 4, {0}, step=-1)])
    write_json(run / "base" / "metrics.json", {"tasks": [{"index": j, "ref": t, "dataset": t}
                                                         for j, t in enumerate(tasks)]})
    (run / "base" / "DONE").write_text("")
    for i, task in enumerate(tasks):
        folder = run / "naive" / step_folder_name(i, task)
        write_jsonl(folder / "samples.jsonl", [r for t in tasks for r in classification(t, 4, {0, 1, 2}, step=i)])
        (folder / "DONE").write_text("")
    return mark(run, "continual")


def tailor_run_folder(run: Path) -> Path:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"base": "/models/base", "finetuned": ["/runs/ft/a"],
                                                     "method": "model-tailor", "sparsity": 0.1, "format": "patch"}))
    tensors = {}
    for layer in range(3):
        for proj in ("q_proj", "v_proj"):
            key = f"model.layers.{layer}.self_attn.{proj}.weight"
            tensors[key] = {"key": key, "numel": 100, "changed": 10 * (layer + 1), "per_task": [10 * (layer + 1)],
                            "overlap": 0, "error_before": [0.5], "error_after": [0.25], "kept_fraction": 0.1}
    write_json(run / "metrics.json", {
        "base": "/models/base", "finetuned": ["/runs/ft/a/checkpoints/epoch-1"], "calibration": ["digits"],
        "format": "patch", "model": str(run / "patch.safetensors"), "method": "model-tailor",
        "options": {"sparsity": 0.1, "fusion": 0.5, "compensate": True}, "considered": 600, "changed": 120,
        "changed_fraction": 0.2, "base_fingerprint": "abc", "seconds": {"calibrate": 1.0, "score": 0.5},
        "tensors": tensors})
    return mark(run, "tailor")


def survey_folder(run: Path) -> Path:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "s", "models": ["tiny-llava"],
                                                     "datasets": [A_MNIST, B_MNIST], "eval": {"limit": 4}}))
    cell = {"accuracy": 0.5, "low": 0.2, "high": 0.8}
    write_json(run / "metrics.json", {"models": ["tiny-llava"], "datasets": [A_MNIST, B_MNIST], "rows": [
        {"model": "tiny-llava", "dataset": d, "n": 4, "mllm": cell, "linear-probe": cell} for d in (A_MNIST, B_MNIST)]})
    return mark(run, "survey")


def judge_validate_folder(run: Path) -> Path:
    mark(run, "judge-validate")
    accuracy = {"value": 0.8, "low": 0.6, "high": 0.9, "n": 6, "method": "wilson", "confidence": 0.95}
    judge = {"judge": "exact", "n": 6, "judged": 6, "unjudged": 0, "accuracy": accuracy, "kappa": accuracy,
             "false_accepts": 1, "false_rejects": 0, "by_dataset": {A_MNIST: accuracy, B_MNIST: accuracy},
             "disagreements": []}
    write_json(run / "metrics.json", {
        "config": {"gold": "g.jsonl", "judges": ["exact", "embedding"]}, "gold": "g.jsonl", "n": 6,
        "datasets": {A_MNIST: 3, B_MNIST: 3}, "human_correct": 5, "confidence": 0.95, "unavailable": {},
        "judges": {"exact": judge, "embedding": {**judge, "judge": "embedding"}}})
    return run


def every_kind(root: Path) -> dict[str, Path]:
    """kind -> a folder of that kind under ``root``, ready for `unforget report`."""
    finetune = root / "finetune"
    write_training_folder(finetune)
    mark(finetune, "finetune")
    return {
        "eval": eval_folder(root / "eval"),
        "finetune": finetune,
        "emt": mark(make_emt_run(root / "emt"), "emt"),
        "2x2": twobytwo_folder(root / "2x2"),
        "continual": continual_folder(root / "continual"),
        "survey": survey_folder(root / "survey"),
        "tailor-study": mark(make_tailor_study(root / "tailor-study"), "tailor-study"),
        "tailor": tailor_run_folder(root / "tailor"),
        "judge-validate": judge_validate_folder(root / "judge-validate"),
    }


__all__ = ["KINDS", "CLASSES_64", "confusion_64", "every_kind"]
