"""A hand-written EMT run folder (no model, no training): records whose numbers the report tests work out by hand.

Layout written by `make_run`: fine-tuning set digits (classes "0".."9"), other set shapes (circle, square, triangle,
star), arms projector and lora, epochs 1 and 2. Correct answers name their reference; wrong ones name no class.

shapes (20 ids s0..s19, plus s20: unjudged at base, correct in every arm)
    base      correct s0-s9                   10/20
    lora  e1  correct s0-s17, s20             19/21    base->e1: b=0 c=8   p = 2 * 0.5^8
    lora  e2  correct s0-s1, s20               3/21    e1->e2:   b=16 c=0  p = 2 * 0.5^16
              s10-s19 answer with a digit (leak)        base->e2 leaks: b=0 c=10  p = 2 * 0.5^10
    proj  e1  correct s0-s10, s20             12/21    base->e1: b=0 c=1   p = 1
    proj  e2  same as e1                      12/21
    lora e2 -> proj e2: b=0 c=9 (s2-s10)  p = 2 * 0.5^9
digits (20 ids d0..d19, reference = id % 10)
    base correct d0-d1; lora e1 d0-d14, e2 all; proj e1 d0-d9, e2 d0-d11
"""

from __future__ import annotations

import json
from pathlib import Path

SHAPES = ["circle", "square", "triangle", "star"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(dataset: str, i: int, correct: bool | None, *, epoch: int, seed: int | None = None,
            leak: bool = False, prediction: str | None = None) -> dict:
    reference = str(i % 10) if dataset == "digits" else SHAPES[i % 4]
    if prediction is None and correct:
        prediction = reference
    rec = {"epoch": epoch, "id": f"{dataset[0]}{i}", "dataset": dataset, "split": "test", "question": "q?",
           "answer": prediction or ("7" if leak else "blah"), "reference": reference, "label": i % 10 if dataset ==
           "digits" else i % 4, "prediction": prediction, "correct": correct, "judge": "exact", "confident": True,
           "mode": "generate", "judgements": {"exact": {"prediction": prediction, "correct": correct}},
           "leaks": {"digits": bool(leak or (dataset == "digits" and prediction is not None))}}
    if seed is not None:
        rec["seed"] = seed
    return rec


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


CONFIG = """name: synthetic
model:
  name: tiny-test-model
train:
  dataset: digits
  classes: {classes}
  epochs: 2
methods:
{methods}
eval:
  datasets: [digits, shapes]
  split: test
  mode: generate
  judges: [exact]
  limit: 21
seeds: {seeds}
alpha: 0.05
"""


def _shapes_epoch(correct_ids: set[int], epoch: int, seed: int | None, leak_ids: set[int] = frozenset()) -> list:
    return [record("shapes", i, i in correct_ids, epoch=epoch, seed=seed, leak=i in leak_ids) for i in range(21)]


def _digits_epoch(correct_ids: set[int], epoch: int, seed: int | None) -> list:
    return [record("digits", i, i in correct_ids, epoch=epoch, seed=seed) for i in range(20)]


ARMS = {
    # name -> {epoch: (digits correct ids, shapes correct ids (s20 always added), shapes leak ids)}
    "projector": {1: (set(range(10)), set(range(11)), set()), 2: (set(range(12)), set(range(11)), set())},
    "lora": {1: (set(range(15)), set(range(18)), set()), 2: (set(range(20)), {0, 1}, set(range(10, 20)))},
}


def make_run(root: Path, *, arms: dict = ARMS, seeds: tuple[int, ...] = (0,), classes: list[int] | None = None,
             digits_override: dict | None = None) -> Path:
    """Write a complete EMT run folder. ``digits_override[(arm, epoch)]`` replaces that epoch's digits records."""
    methods = "\n".join(f"- name: {n}\n  method: {n}" for n in arms)
    (root / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(CONFIG.format(classes=json.dumps(classes), methods=methods,
                                                    seeds=json.dumps(list(seeds))))
    base = _digits_epoch({0, 1}, 0, None) + _shapes_epoch(set(range(10)), 0, None)
    base[-1] = record("shapes", 20, None, epoch=0)  # s20: the judge failed on the base model's answer
    write_jsonl(root / "base" / "samples.jsonl", base)
    (root / "base" / "metrics.json").write_text(json.dumps({"epoch": 0, "datasets": {
        "digits": {"per_class": {str(c): 0.0 for c in range(10)}, "baselines": {"linear-probe": {
            "kind": "linear-probe", "dataset": "digits", "n": 20, "accuracy": 0.9, "accuracy_low": 0.7,
            "accuracy_high": 0.97, "n_train": 100, "encoder": "x"}}},
        "shapes": {"per_class": {c: 0.0 for c in SHAPES}, "baselines": {}}}}))
    write_jsonl(root / "base" / "alignment.jsonl", [
        {"epoch": 0, "dataset": "digits", "n": 20, "cosine_true": 0.1, "cosine_margin": -0.1, "mean_rank": 4.0,
         "top1": 0.1},
        {"epoch": 0, "dataset": "shapes", "n": 20, "cosine_true": 0.2, "cosine_margin": -0.05, "mean_rank": 1.0,
         "top1": 0.25}])
    (root / "base" / "DONE").write_text("")
    for seed in seeds:
        for name, epochs in arms.items():
            folder = root / (name if len(seeds) == 1 else f"{name}-s{seed}")
            rows, align, log = [], [], []
            for epoch, (digit_ids, shape_ids, leak_ids) in epochs.items():
                if digits_override and (name, epoch) in digits_override:
                    rows += digits_override[(name, epoch)]
                else:
                    rows += _digits_epoch(digit_ids, epoch, seed)
                rows += _shapes_epoch(shape_ids | {20}, epoch, seed, leak_ids)
                align += [{"epoch": epoch, "dataset": d, "n": 20, "cosine_true": 0.1 + 0.1 * epoch,
                           "cosine_margin": 0.0, "mean_rank": 2.0, "top1": 0.5} for d in ("digits", "shapes")]
                log += [{"step": 2 * epoch - 1 + k, "epoch": epoch - 0.5 + 0.5 * k, "loss": 3.0 / (2 * epoch + k),
                         "lr": 1e-3, "grad_norm": 1.0, "seconds": 0.1} for k in range(2)]
            write_jsonl(folder / "samples.jsonl", rows)
            write_jsonl(folder / "alignment.jsonl", align)
            write_jsonl(folder / "train" / "train_log.jsonl", log)
            (folder / "metrics.json").write_text(json.dumps({"method": name, "name": name, "seed": seed,
                                                             "epochs": {str(e): {} for e in epochs}}))
            (folder / "train_result.json").write_text(json.dumps({
                "out": str(folder / "train"), "method": name, "global_step": 4, "epochs_done": 2,
                "trainable_parameters": 10, "total_parameters": 100, "losses": [1.0] * 4, "seconds": 1.5,
                "final_loss": 0.75}))
            (folder / "DONE").write_text("")
    return root
