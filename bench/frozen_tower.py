"""A frozen vision tower computed once per image (models/feature_cache.py): what it saves, in one run.

Two comparisons, each in the same process on the same inputs:

* ``finetune``: projector-only fine-tuning for ``--epochs`` epochs on the bench model (or tiny-llava): unforget with
  the feature cache, unforget without it, and transformers' Trainer as a user writes it (model frozen by hand, a
  Dataset of (image, question, answer), a collator calling the processor; train_throughput.py's ``trainer``
  variant) for the same epochs, batch, learning rate and schedule. Time is the training loop's, from its first
  step to its last (data loading included, model loading outside), as wall time and as the process's CPU time
  (``time.process_time``: on a shared machine the wall time of a one-thread run stretches with the load, its CPU
  time much less); ``samples_per_s`` = samples x epochs / CPU time. Losses of the two unforget runs must be
  equal (checked).
* ``study``: the quickstart EMT study (``unforget study emt -c emt/quickstart``: two arms, 3 epochs each, every
  dataset evaluated after every epoch, baselines, report) with ``train.cache_vision_features`` true and false,
  each in a fresh folder: wall time and CPU time (user + system, from ``getrusage`` of the child) of the whole
  command; the two studies' answers and per-epoch metrics must be equal (checked).

    python bench/frozen_tower.py --threads 1
    python bench/frozen_tower.py --parts finetune --models bench --device cuda --samples 256 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import matmul_peak, run_info, synchronise, write_record  # noqa: E402
from train_throughput import PlainCollator, PlainDataset, StepTimer, bench_model_folder, plain_model  # noqa: E402

from unforget.evaluation.config import ModelConfig  # noqa: E402
from unforget.models.feature_cache import vision_feature_cache  # noqa: E402
from unforget.models.loading import resolve_model_path  # noqa: E402
from unforget.runs import read_jsonl  # noqa: E402
from unforget.training import FinetuneConfig, TrainDataConfig, finetune  # noqa: E402
from unforget.training.data import training_items  # noqa: E402
from unforget.training.methods.base import METHODS  # noqa: E402

log = logging.getLogger("frozen_tower")
ROOT = Path(__file__).resolve().parent


def run_unforget(path: str, args: argparse.Namespace, out: Path, cache: bool) -> dict[str, Any]:
    cfg = FinetuneConfig(
        model=ModelConfig(name=path, device=args.device, dtype=args.dtype),
        data=TrainDataConfig(datasets=[args.dataset], limit=args.samples), method="projector", epochs=args.epochs,
        batch_size=args.batch_size, mixed_precision=args.mixed_precision, log_every_steps=10**6, out=str(out),
        cache_vision_features=cache,
    )
    marks: list[tuple[float, float]] = []  # (wall, cpu) at the start and after every optimizer step

    def progress(label: str, done: int, total: int) -> None:
        synchronise(args.device)
        marks.append((time.perf_counter(), time.process_time()))

    t0 = time.perf_counter()
    with vision_feature_cache(cache) as store:
        finetune(cfg, progress=progress)
    wall = time.perf_counter() - t0
    records = read_jsonl(out / "train_log.jsonl")
    return {"step_seconds": [r["seconds"] for r in records], "losses": [r["loss"] for r in records],
            "train_s": marks[-1][0] - marks[0][0], "train_cpu_s": marks[-1][1] - marks[0][1],
            "wall_s": wall, "cache": vars(store.stats) if store else None}


def run_trainer(path: str, args: argparse.Namespace, items: list[Any], out: Path) -> dict[str, Any]:
    from transformers import AutoProcessor, Trainer, TrainingArguments

    t0 = time.perf_counter()
    model = plain_model(path, "projector", {}, getattr(torch, args.dtype), args.device)
    processor = AutoProcessor.from_pretrained(path)
    timer = StepTimer(args.device)
    steps = args.epochs * math.ceil(len(items) / args.batch_size)
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=METHODS.get("projector").default_lr, lr_scheduler_type="cosine",
        warmup_steps=math.ceil(0.03 * steps), weight_decay=0.0, max_grad_norm=1.0, seed=0, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=not args.device.startswith("cuda"),
        bf16=args.mixed_precision == "bf16", dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=PlainDataset(items),
                      data_collator=PlainCollator(processor), callbacks=[timer.callback])
    cpu0 = time.process_time()
    trainer.train()
    synchronise(args.device)
    return {"step_seconds": timer.seconds, "losses": timer.losses, "train_s": sum(timer.seconds),
            "train_cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - t0}


def bench_finetune(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    items, _ = training_items(TrainDataConfig(datasets=[args.dataset], limit=args.samples))
    out: dict[str, Any] = {}
    for name in args.models.split(","):
        if name == "bench":
            corpus = sorted({it.question for it in items} | {it.answer for it in items})
            path = str(bench_model_folder(work / "bench-model", corpus))
        else:
            path = resolve_model_path(name)
        runs: dict[str, list[dict[str, Any]]] = {"unforget_cached": [], "unforget_uncached": [], "trainer": []}
        for r in range(args.repeats):  # interleaved rounds: a change of machine load hits every variant alike
            for variant in runs:
                folder = work / f"{name}-{variant}-{r}"
                if variant == "trainer":
                    res = run_trainer(path, args, items, folder)
                else:
                    res = run_unforget(path, args, folder, cache=variant == "unforget_cached")
                res["load_average"] = os.getloadavg()
                log.info("%s %s round %d: train %.1f s, %.1f s CPU (wall %.1f s)", name, variant, r,
                         res["train_s"], res["train_cpu_s"], res["wall_s"])
                runs[variant].append(res)
        best = {v: min(x["train_cpu_s"] for x in rs) for v, rs in runs.items()}
        best_wall = {v: min(x["train_s"] for x in rs) for v, rs in runs.items()}
        n = len(items) * args.epochs
        out[name] = {
            "path": path, "samples": len(items), "epochs": args.epochs, "runs": runs,
            "samples_per_cpu_s": {v: n / s for v, s in best.items()},
            "samples_per_wall_s": {v: n / s for v, s in best_wall.items()},
            "wall_ratios": {"cached_vs_trainer": best_wall["trainer"] / best_wall["unforget_cached"],
                            "cached_vs_uncached": best_wall["unforget_uncached"] / best_wall["unforget_cached"]},
            "ratios": {"cached_vs_trainer": best["trainer"] / best["unforget_cached"],
                       "uncached_vs_trainer": best["trainer"] / best["unforget_uncached"],
                       "cached_vs_uncached": best["unforget_uncached"] / best["unforget_cached"]},
            "losses_equal": all(a["losses"] == b["losses"] for a, b in
                                zip(runs["unforget_cached"], runs["unforget_uncached"])),
        }
    return out


def bench_study(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for cache in [v.strip() == "cached" for v in args.study_order.split(",")]:
        folder = work / f"study-{'cached' if cache else 'uncached'}"
        cmd = [sys.executable, "-m", "unforget", "study", "emt", "-c", args.study_config, "--out", str(folder),
               f"train.cache_vision_features={str(cache).lower()}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        key = "cached" if cache else "uncached"
        runs[key] = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu, "command": " ".join(cmd),
                     "load_average": os.getloadavg()}
        log.info("study cache=%s: %.1f s, %.1f s CPU", cache, runs[key]["wall_s"], cpu)
    metrics = {k: _study_numbers(work / f"study-{k}") for k in ("cached", "uncached")}
    return {"config": args.study_config, "runs": runs,
            "speedup_cpu": runs["uncached"]["cpu_s"] / runs["cached"]["cpu_s"],
            "speedup_wall": runs["uncached"]["wall_s"] / runs["cached"]["wall_s"],
            "results_equal": metrics["cached"] == metrics["uncached"]}


def _study_numbers(folder: Path) -> Any:
    """Every arm's per-epoch metrics and every judged answer (timings left out)."""
    answers = sorted(json.dumps({k: v for k, v in r.items() if "second" not in k}, sort_keys=True)
                     for p in sorted(folder.rglob("samples.jsonl")) for r in read_jsonl(p))
    epochs = {str(p.relative_to(folder)): _drop_timing(json.loads(p.read_text()).get("epochs"))
              for p in sorted(folder.glob("*/metrics.json"))}
    return {"answers": answers, "epochs": epochs}


def _drop_timing(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_timing(v) for k, v in node.items() if "second" not in k}
    if isinstance(node, list):
        return [_drop_timing(v) for v in node]
    return node


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="finetune,study", help="comma-separated: finetune, study")
    p.add_argument("--models", default="bench", help="finetune part: comma-separated: bench, tiny-llava")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--samples", type=int, default=16, help="training samples (the first N, stratified)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--study-config", default="emt/quickstart")
    p.add_argument("--study-order", default="cached,uncached", help="which study runs first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("unforget", "accelerate", "transformers", "peft", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if cuda else "float32"
    if args.mixed_precision == "auto":
        args.mixed_precision = "bf16" if cuda else "no"
    info = run_info(args, paths=["bench/frozen_tower.py", "src/unforget/models/feature_cache.py",
                                 "src/unforget/training"])
    info["load_average_start"] = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="frozen_tower-"))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    record: dict[str, Any] = {"run_info": info, "config": vars(args),
                              "matmul_peak": matmul_peak(args.device, 8192 if cuda else 2048, 3,
                                                         torch.bfloat16 if cuda else torch.float32)}
    if "finetune" in parts:
        record["finetune"] = bench_finetune(args, work)
    if "study" in parts:
        record["study"] = bench_study(args, work)
    info["load_average_end"] = os.getloadavg()
    targets: dict[str, Any] = {}
    for name, res in record.get("finetune", {}).items():
        value = res["ratios"]["cached_vs_trainer"]
        targets[f"{name} projector {args.epochs} epochs >= 1.6x Trainer"] = {"value": value, "met": value >= 1.6}
    record["targets"] = targets
    path = write_record(record, args.out, "frozen_tower", cuda=cuda)
    for k, v in targets.items():
        log.info("target %-45s %.3f %s", k, v["value"], "met" if v["met"] else "MISSED")
    return path


if __name__ == "__main__":
    main()
