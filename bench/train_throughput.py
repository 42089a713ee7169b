"""Training throughput: unforget finetune against transformers' Trainer on the same model, data, batch and method.

Variants, each a fresh model loaded from the same folder, trained on the same instructions (``--dataset``, the first
``batch x steps`` training samples, one epoch) with the same batch, AdamW learning rate, schedule and clipping:

* ``unforget``              unforget.training.finetune(cfg): the library's loop, data pipeline and run folder
* ``trainer``               what a user writes today: the model frozen by hand or wrapped with peft's
                            get_peft_model, a Dataset of (image, question, answer) and a collator that calls the
                            processor on the batch and masks the prompt out of the labels, transformers' Trainer
* ``trainer_same_examples`` Trainer fed unforget's own dataset and collator: the same token sequences as
                            ``unforget``, so that the loops alone are compared

Methods: ``projector`` (only the multimodal projector trains) and ``lora`` (peft LoRA on the language model's
q/k/v/o/gate/up/down, unforget's default options). Throughput is measured per optimizer step, after
``--warmup-steps``: the time between the ends of consecutive steps (data loading, forward, backward, clipping,
optimizer, logging; unforget's from its train_log.jsonl, Trainer's from a callback), median over the measured
steps. Checkpoint writing and model loading are outside those steps and reported apart as ``wall_s``.

FLOPs per step are counted from the config with unforget.flops.train_step_flops (model FLOPs: frozen parts the
gradient passes through cost 2x, trained parts 3x) on each sample's real (unpadded) token count, for what each loop
computes (unforget: vocabulary logits at the answer positions only; Trainer: at every position), and utilisation is
their rate over the matmul peak measured in the same run (fp32 on CPU; bf16 8192^3 on CUDA, where training runs in
bf16 mixed precision and each run's torch.cuda.max_memory_allocated is recorded).

    python bench/train_throughput.py --models bench --threads 2
    python bench/train_throughput.py --models tiny-llava,bench --device cuda --batch-size 16 --steps 20
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import BENCH_SHAPE, matmul_peak, run_info, synchronise, write_record  # noqa: E402

from unforget.evaluation.config import ModelConfig  # noqa: E402
from unforget.flops import train_step_flops  # noqa: E402
from unforget.models.loading import LoadedModel, load_model, resolve_model_path  # noqa: E402
from unforget.runs import read_jsonl  # noqa: E402
from unforget.training import FinetuneConfig, TrainDataConfig, finetune  # noqa: E402
from unforget.training.data import InstructionDataset, TrainItem, processor_only, training_items  # noqa: E402
from unforget.training.examples import IGNORE_INDEX, build_example, collate_examples  # noqa: E402
from unforget.training.methods.base import METHODS  # noqa: E402
from unforget.training.methods.lora import LLAMA_LINEAR, LoraOptions  # noqa: E402

log = logging.getLogger("train_throughput")
ROOT = Path(__file__).resolve().parent
VARIANTS = ("unforget", "trainer", "trainer_same_examples")
FLOP_TARGET_NAMES = dict(zip(LLAMA_LINEAR, ("q", "k", "v", "o", "gate", "up", "down")))


@dataclass
class RunResult:
    model: str
    method: str
    variant: str
    step_seconds: list[float]  # every optimizer step, warm-up included
    warmup_steps: int
    batch_size: int
    tokens_per_sample: float  # mean real (unpadded) tokens, image tokens included
    flops_per_sample: float
    trainable_parameters: int
    wall_s: float  # load + train (+ checkpoints for unforget)
    load_average: dict[str, list[float]] = field(default_factory=dict)
    peak_memory_gib: float | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def measured(self) -> list[float]:
        return self.step_seconds[self.warmup_steps:]

    def summary(self, peak_flops: float) -> dict[str, Any]:
        step = statistics.median(self.measured)
        samples_per_s = self.batch_size / step
        achieved = self.flops_per_sample * samples_per_s
        return {
            "samples_per_s": samples_per_s,
            "tokens_per_s": samples_per_s * self.tokens_per_sample,
            "step_s_median": step,
            "step_s_mean": statistics.fmean(self.measured),
            "samples_per_s_mean": self.batch_size / statistics.fmean(self.measured),
            "flops_per_step": self.flops_per_sample * self.batch_size,
            "achieved_flops_per_s": achieved,
            "utilisation": achieved / peak_flops,
            "tokens_per_sample": self.tokens_per_sample,
            "trainable_parameters": self.trainable_parameters,
            "wall_s": self.wall_s,
            "peak_memory_gib": self.peak_memory_gib,
            "step_seconds": self.step_seconds,
            "warmup_steps": self.warmup_steps,
            "losses": self.losses,
            "load_average": self.load_average,
        }


# ----------------------------------------------------------------------------------------------------------------
# models


def bench_model_folder(folder: Path, corpus: Sequence[str]) -> Path:
    """The ~200M LLaVA of eval_throughput (random weights) with a tokenizer trained on the training texts, saved."""
    from unforget.models.build import build_llava
    from unforget.models.tokenizer import train_tokenizer

    tok = train_tokenizer(list(corpus) * 4, vocab_size=1024)
    model, proc = build_llava(tok, BENCH_SHAPE, seed=0)
    model.save_pretrained(folder, safe_serialization=True)
    proc.save_pretrained(folder)
    return folder


def method_options(method: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"r": args.lora_r} if method == "lora" else {}


def flops_per_sample(config: Any, tokens: Sequence[int], logits: Sequence[int | None], method: str,
                     options: dict[str, Any]) -> float:
    """Mean model FLOPs of one sample's training step; ``logits``: the positions whose vocabulary logits the loop
    computes (None: all of them, as a model called with labels does)."""
    if method == "projector":
        kwargs: dict[str, Any] = {"trainable": ("projector",)}
    else:
        lora = METHODS.get("lora").parse_options(options)
        assert isinstance(lora, LoraOptions)
        kwargs = {"trainable": () if lora.freeze_multi_modal_projector else ("projector",), "lora_rank": lora.r,
                  "lora_targets": [FLOP_TARGET_NAMES[t] for t in lora.target_modules]}
    return statistics.fmean(train_step_flops(config, n, 1, logits_tokens=k, **kwargs).total
                            for n, k in zip(tokens, logits))


# ----------------------------------------------------------------------------------------------------------------
# the plain transformers way


class PlainDataset(torch.utils.data.Dataset):
    """(image, question, answer) rows, images read on access (as unforget's InstructionDataset reads them)."""

    def __init__(self, items: Sequence[TrainItem]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        return {"image": it.sample.load_image(it.dataset), "question": it.question, "answer": it.answer}


class PlainCollator:
    """The collator a user writes: the chat template, one processor call for the batch (right padding), labels
    that keep the answer tokens only (the answer's own token count, from the end of each row)."""

    def __init__(self, processor: Any):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "right"

    def prompt(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        answers = [r["answer"] + tok.eos_token for r in rows]
        texts = [self.prompt(r["question"]) + a for r, a in zip(rows, answers)]
        batch = self.processor(images=[r["image"] for r in rows], text=texts, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        lengths = batch["attention_mask"].sum(1).tolist()
        for i, (answer, length) in enumerate(zip(answers, lengths)):
            n = len(tok(answer, add_special_tokens=False)["input_ids"])
            labels[i, length - n:length] = batch["input_ids"][i, length - n:length]
        batch["labels"] = labels
        return dict(batch)


def plain_model(path: str, method: str, options: dict[str, Any], dtype: torch.dtype, device: str) -> Any:
    """The model as a user prepares it: frozen by hand for projector-only, get_peft_model for LoRA."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device)
    if method == "projector":
        for name, p in model.named_parameters():
            p.requires_grad_("multi_modal_projector" in name)
        return model
    from peft import LoraConfig, get_peft_model

    lora = METHODS.get("lora").parse_options(options)
    targets = "|".join(lora.target_modules)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha if lora.alpha is not None else 2 * lora.r,
                        lora_dropout=lora.dropout, bias="none",
                        target_modules=rf".*language_model.*\.({targets})")
    return get_peft_model(model, config)


class StepTimer:
    """Trainer callback: seconds between the ends of consecutive optimizer steps (the first from train begin)."""

    def __init__(self, device: str):
        from transformers import TrainerCallback

        timer = self
        self.device = device
        self.seconds: list[float] = []
        self.losses: list[float] = []
        self.t = 0.0

        class _Callback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                synchronise(timer.device)
                timer.t = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                synchronise(timer.device)
                now = time.perf_counter()
                timer.seconds.append(now - timer.t)
                timer.t = now

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
                if logs and "loss" in logs:
                    timer.losses.append(float(logs["loss"]))

        self.callback = _Callback()


def run_trainer(path: str, method: str, options: dict[str, Any], items: list[TrainItem], same_examples: bool,
                args: argparse.Namespace, out: Path) -> tuple[list[float], list[float], int]:
    from transformers import AutoProcessor, Trainer, TrainingArguments

    model = plain_model(path, method, options, getattr(torch, args.dtype), args.device)
    processor = AutoProcessor.from_pretrained(path)
    if same_examples:
        pad = processor.tokenizer.pad_token_id
        pad = pad if pad is not None else processor.tokenizer.eos_token_id
        dataset: Any = InstructionDataset(LoadedModel(processor_only(), processor, "llava", path), items)
        collator: Any = functools.partial(collate_examples, pad_token_id=pad)
    else:
        dataset, collator = PlainDataset(items), PlainCollator(processor)
    timer = StepTimer(args.device)
    steps = args.warmup_steps + args.steps
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, max_steps=steps,
        learning_rate=METHODS.get(method).default_lr, lr_scheduler_type="cosine", warmup_steps=math.ceil(0.03 * steps),
        weight_decay=0.0, max_grad_norm=1.0, seed=0, logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=not args.device.startswith("cuda"), bf16=args.mixed_precision == "bf16", dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True, gradient_checkpointing=args.gradient_checkpointing,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collator,
                      callbacks=[timer.callback])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer.train()
    return timer.seconds, timer.losses, trainable


def run_unforget(path: str, method: str, options: dict[str, Any], dataset: str, args: argparse.Namespace,
                 out: Path) -> tuple[list[float], list[float], int]:
    cfg = FinetuneConfig(
        model=ModelConfig(name=path, device=args.device, dtype=args.dtype),
        data=TrainDataConfig(datasets=[dataset], limit=args.batch_size * (args.warmup_steps + args.steps)),
        method=method, method_options=options, epochs=1, batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing, log_every_steps=10**6, out=str(out),
    )
    result = finetune(cfg)
    records = read_jsonl(out / "train_log.jsonl")
    return [r["seconds"] for r in records], [r["loss"] for r in records], result.trainable_parameters


def load_average() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


# ----------------------------------------------------------------------------------------------------------------


def example_checks(path: str, items: list[TrainItem]) -> dict[str, Any]:
    """Does the plain collator build the very sequences unforget builds (tokens and loss positions)?"""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    lm = LoadedModel(processor_only(), processor, "llava", path)
    examples = [build_example(lm, it.sample.load_image(it.dataset), it.question, it.answer) for it in items]
    pad = processor.tokenizer.pad_token_id
    ours = collate_examples(examples, pad if pad is not None else processor.tokenizer.eos_token_id)
    plain = PlainCollator(processor)(list(PlainDataset(items)))
    same_shape = ours["input_ids"].shape == plain["input_ids"].shape
    return {
        "tokens_per_sample": [len(e.input_ids) for e in examples],
        "answer_tokens_per_sample": [int((e.labels != IGNORE_INDEX).sum()) for e in examples],
        "plain_collator_same_input_ids": bool(same_shape and torch.equal(ours["input_ids"], plain["input_ids"])),
        "plain_collator_same_labels": bool(same_shape and torch.equal(ours["labels"], plain["labels"])),
        "plain_collator_same_pixel_values": bool(torch.equal(ours["pixel_values"], plain["pixel_values"])),
    }


def targets(models: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, data in models.items():
        for method, variants in data["methods"].items():
            if "unforget" in variants and "trainer" in variants:
                ratio = variants["unforget"]["samples_per_s"] / variants["trainer"]["samples_per_s"]
                out[f"{name} {method}: unforget >= 1.2x Trainer"] = {"value": ratio, "met": ratio >= 1.2}
    bench_lora = models.get("bench", {}).get("methods", {}).get("lora", {}).get("unforget")
    if bench_lora:
        u = bench_lora["utilisation"]
        out["bench lora: unforget >= 35% of matmul peak"] = {"value": u, "met": u >= 0.35}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="tiny-llava,bench", help="comma-separated: tiny-llava, bench")
    p.add_argument("--methods", default="projector,lora")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--dataset", default="digits", help="a shipped training set (its first batch x steps samples)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=6, help="measured optimizer steps per run")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="rounds over every (model, method, variant), interleaved")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="weights' dtype; auto: bfloat16 on cuda (as unforget loads them there), float32 on cpu")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16"],
                   help="autocast of both loops; auto: bf16 on cuda (unforget's default there), no on cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-size", type=int, default=None,
                   help="matmul size for the peak (size^3); default 8192 on cuda, 2048 on cpu")
    p.add_argument("--tiny-llava", default="tiny-llava", help="zoo name or a folder built by its recipe")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/train_throughput-<machine>-<date>.json)")
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
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but CUDA is not available here")
    if args.peak_size is None:
        args.peak_size = 8192 if cuda else 2048
    if args.dtype == "auto":
        args.dtype = "bfloat16" if cuda else "float32"
    if args.mixed_precision == "auto":
        args.mixed_precision = "bf16" if cuda else "no"
    # the matmuls run in bf16 under autocast or with bf16 weights
    bf16 = args.dtype == "bfloat16" or args.mixed_precision == "bf16"
    peak_dtype = torch.bfloat16 if bf16 else torch.float32
    info = run_info(args, paths=["bench/train_throughput.py", "bench/eval_throughput.py", "src/unforget/flops.py",
                                 "src/unforget/training", "src/unforget/models"])
    import accelerate
    import peft

    info |= {"peft": peft.__version__, "accelerate": accelerate.__version__}
    peaks = [matmul_peak(args.device, args.peak_size, 5, peak_dtype)]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}: use {', '.join(VARIANTS)}")

    n_samples = args.batch_size * (args.warmup_steps + args.steps)
    items, _ = training_items(TrainDataConfig(datasets=[args.dataset], limit=n_samples))
    if len(items) < n_samples:
        raise SystemExit(f"dataset '{args.dataset}' has {len(items)} training samples; {n_samples} are needed")
    work = Path(tempfile.mkdtemp(prefix="train_throughput-"))
    paths: dict[str, str] = {}
    for name in models:
        if name == "tiny-llava":
            try:
                paths[name] = resolve_model_path(args.tiny_llava)
                load_model(paths[name], device="cpu", dtype="float32")  # fails early when not built
            except Exception as exc:  # the embedded model may not be built yet
                log.warning("tiny-llava skipped: %s", exc)
                continue
        elif name == "bench":
            corpus = sorted({it.question for it in items} | {it.answer for it in items})
            paths[name] = str(bench_model_folder(work / "bench-model", corpus))
        else:
            raise SystemExit(f"unknown model '{name}': use tiny-llava or bench")

    per_model: dict[str, dict[str, Any]] = {}
    results: list[RunResult] = []
    for name, path in paths.items():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        checks = example_checks(path, items)
        tokens = checks["tokens_per_sample"]
        per_model[name] = {"path": path, "checks": checks, "tokens_per_sample_mean": statistics.fmean(tokens),
                           "parameters": sum(p.numel() for p in load_model(path, device="cpu", dtype="float32")
                                             .model.parameters())}
        # unforget computes the vocabulary logits of the answer positions only (training/loss.py), a model called
        # with labels those of every position
        answer = checks["answer_tokens_per_sample"]
        per_model[name]["flops_per_sample"] = {
            m: {"unforget": flops_per_sample(config, tokens, answer, m, method_options(m, args)),
                "trainer": flops_per_sample(config, tokens, [None] * len(tokens), m, method_options(m, args))}
            for m in methods}

    for r in range(args.repeats):  # interleaved, so that a change of machine load hits every variant alike
        for name, path in paths.items():
            for method in methods:
                options = method_options(method, args)
                for variant in variants:
                    out = work / f"{name}-{method}-{variant}-{r}"
                    before = load_average()
                    reset_peak_memory(args.device)
                    t0 = time.perf_counter()
                    if variant == "unforget":
                        seconds, losses, trainable = run_unforget(path, method, options, args.dataset, args, out)
                    else:
                        seconds, losses, trainable = run_trainer(path, method, options, items,
                                                                 variant == "trainer_same_examples", args, out)
                    wall = time.perf_counter() - t0
                    result = RunResult(name, method, variant, seconds, args.warmup_steps, args.batch_size,
                                       per_model[name]["tokens_per_sample_mean"],
                                       per_model[name]["flops_per_sample"][method][
                                           "unforget" if variant == "unforget" else "trainer"], trainable, wall,
                                       {"before": before, "after": load_average()}, peak_memory_gib(args.device),
                                       losses)
                    results.append(result)
                    log.info("%s %s %s round %d: median step %.3f s (%s)", name, method, variant, r,
                             statistics.median(result.measured), " ".join(f"{s:.2f}" for s in seconds))
                    if cuda:
                        torch.cuda.empty_cache()
            peaks.append(matmul_peak(args.device, args.peak_size, 3, peak_dtype))
    peaks.append(matmul_peak(args.device, args.peak_size, 5, peak_dtype))
    peak = max(p["best_flops_per_s"] for p in peaks)
    info["load_average_end"] = load_average()

    out_models: dict[str, Any] = {}
    for name, data in per_model.items():
        by_method: dict[str, dict[str, Any]] = {}
        for method in methods:
            by_method[method] = {}
            for variant in variants:
                runs = [x for x in results if (x.model, x.method, x.variant) == (name, method, variant)]
                # rounds pooled: the median step over every measured step of every round
                pooled = RunResult(name, method, variant, [s for x in runs for s in x.measured], 0,
                                   args.batch_size, runs[0].tokens_per_sample, runs[0].flops_per_sample,
                                   runs[0].trainable_parameters, statistics.fmean(x.wall_s for x in runs),
                                   {f"round{i}": x.load_average["before"] + x.load_average["after"]
                                    for i, x in enumerate(runs)},
                                   max((x.peak_memory_gib or 0 for x in runs), default=0) if cuda else None,
                                   runs[0].losses)
                summary = pooled.summary(peak)
                summary["rounds"] = [x.summary(peak) for x in runs]
                by_method[method][variant] = summary
            ratios: dict[str, float] = {}
            base = by_method[method].get("trainer")
            for variant, s in by_method[method].items():
                if base and variant != "trainer":
                    ratios[f"{variant}_vs_trainer"] = s["samples_per_s"] / base["samples_per_s"]
            by_method[method]["ratios"] = ratios
        out_models[name] = {**data, "methods": by_method}

    record = {
        "run_info": info,
        "config": vars(args) | {"bench_shape": asdict(BENCH_SHAPE), "samples": n_samples,
                                "lr": {m: METHODS.get(m).default_lr for m in methods},
                                "schedule": "cosine, warmup_ratio 0.03, weight_decay 0, max_grad_norm 1.0, AdamW"},
        "matmul_peak": {"flops_per_s": peak, "runs": peaks},
        "models": out_models,
        "targets": targets(out_models),
    }
    out = write_record(record, args.out, "train_throughput", cuda=cuda)
    for name, data in out_models.items():
        for method, variants_ in data["methods"].items():
            for variant, s in variants_.items():
                if variant == "ratios":
                    continue
                log.info("%-10s %-9s %-22s %8.3f samples/s %9.1f tokens/s  utilisation %.3f", name, method, variant,
                         s["samples_per_s"], s["tokens_per_s"], s["utilisation"])
    for k, v in record["targets"].items():
        log.info("target %-45s %.3f %s", k, v["value"], "met" if v["met"] else "MISSED")
    return out


if __name__ == "__main__":
    main()
