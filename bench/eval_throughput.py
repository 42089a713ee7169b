"""Evaluation throughput: unforget's generate and rank modes against the plain transformers loops, in one run.

Modes, on the same images and prompt:

* ``forward``          one batched image+prompt forward, logits of the last position only: the floor under every mode
* ``plain_generate``   what a user writes today: one image at a time, processor -> model.generate (greedy)
* ``generate``         unforget.evaluation.generation.generate_answers (batched, left padding)
* ``rank_10``, ``rank_100``  unforget.evaluation.ranking.score_candidates(method="tree") over 10 / 100 classes
* ``naive_rank_K``     score_candidates(method="naive"): one full forward per (image, class), classes batched
* ``plain_rank_K``     the hand-written loop: one forward per (image, class), one at a time

The naive modes are timed on ``--naive-classes`` classes and ``--naive-images`` images (their cost is exactly one
full forward per class, so a 100-class figure is the per-class time x 100; the JSON says which figures are
extrapolated). The machine's matmul peak (in the model's dtype) is measured in the same run, and every mode's FLOPs
are counted from the config with unforget.flops (dense attention, see its docstring), so utilisation = FLOPs / time /
peak. On a GPU (``--device cuda``) the model runs in bf16, every timing is bracketed by ``torch.cuda.synchronize()``,
the peak is a bf16 8192^3 product and each mode's ``torch.cuda.max_memory_allocated`` is recorded.

    python bench/eval_throughput.py --models bench --n-images 8 --device cpu
    python bench/eval_throughput.py --models tiny-llava,bench --device cuda --n-images 64 --batch-size 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from unforget.evaluation.generation import GenerationRequest, generate_answers
from unforget.evaluation.ranking import CandidateTrie, candidate_token_ids, score_candidates
from unforget.flops import FlopCount, forward_flops, generate_flops
from unforget.models.build import LlavaShape, build_llava
from unforget.models.loading import LoadedModel, load_model
from unforget.models.prompting import build_prompt, encode_batch
from unforget.models.tokenizer import train_tokenizer

log = logging.getLogger("eval_throughput")
ROOT = Path(__file__).resolve().parent
QUESTION = "What is the object in the image? Answer with its name."

# ~200M parameters: CLIP ViT-B/16 at 224 px (196 image tokens) + a 12-layer 768-wide Llama with a 32k vocabulary.
BENCH_SHAPE = LlavaShape(
    image_size=224, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12, vision_intermediate=3072,
    text_hidden=768, text_layers=12, text_heads=12, text_kv_heads=12, text_intermediate=2048, max_positions=1024,
    vision_feature_layer=-2, vocab_size=32000, projection_dim=512,
)


@dataclass
class ModeResult:
    mode: str
    images: int  # images per timed call
    seconds: list[float]  # one per repeat
    flops_per_image: int  # counted from the config for what this mode computes
    note: str = ""
    extrapolated_from: str = ""  # set when the figure is scaled from a smaller measured run
    scale: float = 1.0  # seconds of the reported workload = measured seconds x scale
    flops_breakdown: dict[str, int] = field(default_factory=dict)
    peak_memory_bytes: int | None = None  # CUDA: max_memory_allocated over the repeats

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds) * self.scale

    def images_per_s(self) -> float:
        return self.images / self.median_s

    def summary(self, peak_flops: float) -> dict[str, Any]:
        achieved = self.flops_per_image * self.images_per_s()
        return {
            "images_per_s": self.images_per_s(),
            "seconds_median": self.median_s,
            "seconds_per_image": self.median_s / self.images,
            "seconds_all": [s * self.scale for s in self.seconds],
            "images": self.images,
            "flops_per_image": self.flops_per_image,
            "flops_breakdown_per_image": self.flops_breakdown,
            "achieved_flops_per_s": achieved,
            "utilisation": achieved / peak_flops,
            "note": self.note,
            "extrapolated_from": self.extrapolated_from,
            "peak_memory_gib": self.peak_memory_bytes / 2**30 if self.peak_memory_bytes is not None else None,
        }


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, size: int, tries: int, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Best torch.matmul rate of ``tries`` size^3 products in ``dtype`` (the denominator of every utilisation)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2 if device.startswith("cuda") else 1):  # warm-up (cuBLAS picks its kernel on the first call)
        a @ b
    synchronise(device)
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        a @ b
        synchronise(device)
        times.append(time.perf_counter() - t0)
    flops = 2 * size**3
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "best_flops_per_s": flops / min(times),
            "median_flops_per_s": flops / statistics.median(times), "seconds": times}


def synthetic_class_names(n: int, seed: int = 0) -> list[str]:
    """Pronounceable made-up names; every 4th is two words sharing a first word with another (as "maple tree",
    "oak tree" do in CIFAR-100), so the trie has shared prefixes."""
    rng = np.random.default_rng(seed)
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    names: list[str] = []
    while len(names) < n:
        word = "".join(rng.choice(list(consonants)) + rng.choice(list(vowels)) for _ in range(rng.integers(2, 4)))
        if len(names) % 4 == 3:
            word = f"{names[-1].split()[0]} {word}"
        if word not in names:
            names.append(word)
    return names


def build_bench_model(device: str, class_names: list[str], dtype: torch.dtype = torch.float32) -> LoadedModel:
    corpus = [QUESTION, "Describe the image.", "a photo of the object"] + [f"a photo of a {c}." for c in class_names]
    tok = train_tokenizer(corpus * 4, vocab_size=1024)
    model, proc = build_llava(tok, BENCH_SHAPE, seed=0)
    # random weights: without this greedy decoding may stop at a random end token; every answer runs its full length
    model.generation_config.eos_token_id = None
    return LoadedModel(model.to(device=device, dtype=dtype).eval(), proc, "llava", "bench (random weights)")


def random_images(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def plain_generate(model: Any, processor: Any, images: list, question: str, max_new_tokens: int) -> list[int]:
    """The loop a transformers user writes today; returns the number of new tokens per image."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    lengths = []
    answers = []
    for image in images:
        inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device, dtype=model.dtype)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:]
        answers.append(processor.decode(new, skip_special_tokens=True).strip())
        lengths.append(int(new.shape[0]))
    plain_generate.last_answers = answers  # type: ignore[attr-defined]
    return lengths


def plain_rank(model: Any, processor: Any, images: list, question: str, class_names: list[str]) -> np.ndarray:
    """The hand-written ranking loop: one forward per (image, class name + end token), one at a time."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    tok = processor.tokenizer
    scores = np.zeros((len(images), len(class_names)))
    for i, image in enumerate(images):
        inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device, dtype=model.dtype)
        for k, name in enumerate(class_names):
            cand = torch.tensor([tok(name + tok.eos_token, add_special_tokens=False)["input_ids"]], device=model.device)
            ids = torch.cat([inputs["input_ids"], cand], dim=1)
            with torch.inference_mode():
                logits = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits
            logp = torch.log_softmax(logits[0, -cand.shape[1] - 1 : -1].float(), dim=-1)
            scores[i, k] = logp.gather(-1, cand[0, :, None]).sum().item()
    return scores


def batched_forward(lm: LoadedModel, images: list, prompts: list[str], batch_size: int) -> None:
    for start in range(0, len(images), batch_size):
        enc = encode_batch(lm, images[start : start + batch_size], prompts[start : start + batch_size])
        with torch.inference_mode():
            lm.model(**enc, logits_to_keep=1)


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def time_call(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    synchronise(device)
    t0 = time.perf_counter()
    out = fn()
    synchronise(device)
    return time.perf_counter() - t0, out


def bench_model(name: str, lm: LoadedModel, args: argparse.Namespace, peaks: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = lm.model.config
    device = args.device
    size = cfg.vision_config.image_size
    images = random_images(args.n_images, size)
    naive_images = images[: args.naive_images]
    classes_100 = synthetic_class_names(100)
    classes_10 = classes_100[:10]
    classes_naive = classes_100[: args.naive_classes]
    prompts = [build_prompt(lm, QUESTION)] * len(images)
    prompt_tokens = int(encode_batch(lm, images[:1], prompts[:1])["input_ids"].shape[1])
    tok = lm.tokenizer

    def trie_nodes(names: list[str]) -> int:
        return len(CandidateTrie.build(candidate_token_ids(lm, names)).fed_nodes())

    def tree_flops(names: list[str]) -> FlopCount:
        m = trie_nodes(names)
        return forward_flops(cfg, prompt_tokens, 1, logits_tokens=1) + forward_flops(cfg, m, 0, prompt_tokens)

    def naive_flops(names: list[str]) -> FlopCount:
        total = FlopCount()
        for seq in candidate_token_ids(lm, names):
            total = total + forward_flops(cfg, prompt_tokens + len(seq), 1)  # HF returns every position's logits
        return total

    modes: dict[str, Callable[[], Any]] = {
        "forward": lambda: batched_forward(lm, images, prompts, args.batch_size),
        "plain_generate": lambda: plain_generate(lm.model, lm.processor, images, QUESTION, args.max_new_tokens),
        "generate": lambda: generate_answers(lm, [GenerationRequest(QUESTION, im) for im in images],
                                             batch_size=args.batch_size, max_new_tokens=args.max_new_tokens),
        "rank_10": lambda: score_candidates(lm, images, [QUESTION] * len(images), classes_10,
                                            batch_size=args.batch_size, method="tree"),
        "rank_100": lambda: score_candidates(lm, images, [QUESTION] * len(images), classes_100,
                                             batch_size=args.batch_size, method="tree"),
    }
    naive_modes: dict[str, Callable[[], Any]] = {
        "naive_rank": lambda: score_candidates(lm, naive_images, [QUESTION] * len(naive_images), classes_naive,
                                               batch_size=args.batch_size, method="naive"),
        "plain_rank": lambda: plain_rank(lm.model, lm.processor, naive_images, QUESTION, classes_naive),
    }

    log.info("%s: warm-up", name)
    warm = images[: min(2, len(images))]
    batched_forward(lm, warm, prompts[: len(warm)], args.batch_size)
    plain_generate(lm.model, lm.processor, warm[:1], QUESTION, 2)
    generate_answers(lm, [GenerationRequest(QUESTION, im) for im in warm], batch_size=args.batch_size,
                     max_new_tokens=2)
    score_candidates(lm, warm, [QUESTION] * len(warm), classes_10[:3], method="tree")
    score_candidates(lm, warm[:1], [QUESTION], classes_10[:2], method="naive")
    plain_rank(lm.model, lm.processor, warm[:1], QUESTION, classes_10[:1])

    seconds: dict[str, list[float]] = {m: [] for m in [*modes, *naive_modes]}
    memory: dict[str, int | None] = {m: None for m in [*modes, *naive_modes]}
    dtype = next(lm.model.parameters()).dtype
    outputs: dict[str, Any] = {}
    loads: list[tuple[float, ...]] = []
    for r in range(args.repeats):  # interleaved, so a change of machine load hits every mode alike
        peaks.append(matmul_peak(device, args.peak_size, 3, dtype))  # the peak too, in every round
        loads.append(_load_average())
        for mode, fn in modes.items():
            reset_peak_memory(device)
            s, outputs[mode] = time_call(fn, device)
            seconds[mode].append(s)
            memory[mode] = max(memory[mode] or 0, peak_memory(device) or 0) if device.startswith("cuda") else None
            log.info("%s repeat %d %s: %.2f s", name, r, mode, s)
        if r < args.naive_repeats:
            for mode, fn in naive_modes.items():
                reset_peak_memory(device)
                s, outputs[mode] = time_call(fn, device)
                seconds[mode].append(s)
                memory[mode] = max(memory[mode] or 0, peak_memory(device) or 0) if device.startswith("cuda") else None
                log.info("%s repeat %d %s: %.2f s", name, r, mode, s)

    new_tokens = outputs["plain_generate"]
    gen_flops = sum((generate_flops(cfg, prompt_tokens, n, 1) for n in new_tokens), FlopCount())
    n = len(images)
    per_image = {
        "forward": forward_flops(cfg, prompt_tokens, 1, logits_tokens=1),
        "plain_generate": gen_flops * 1,
        "generate": gen_flops * 1,
        "rank_10": tree_flops(classes_10),
        "rank_100": tree_flops(classes_100),
    }
    results: dict[str, ModeResult] = {}
    for mode in modes:
        total = per_image[mode]
        per = total.total // n if mode.endswith("generate") else total.total
        breakdown = {k: v // n for k, v in total.to_dict().items()} if mode.endswith("generate") else total.to_dict()
        results[mode] = ModeResult(mode, n, seconds[mode], per, flops_breakdown=breakdown,
                                   peak_memory_bytes=memory[mode])
    results["generate"].note = results["plain_generate"].note = (
        f"{args.max_new_tokens} new tokens max; FLOPs counted for the tokens the plain loop generated "
        f"(mean {np.mean(new_tokens):.1f}) for both")
    naive_k = len(classes_naive)
    for mode in naive_modes:
        measured = naive_flops(classes_naive)
        results[f"{mode}_{naive_k}"] = ModeResult(
            f"{mode}_{naive_k}", len(naive_images), seconds[mode], measured.total, flops_breakdown=measured.to_dict(),
            note=f"measured on {len(naive_images)} image(s)", peak_memory_bytes=memory[mode])
        for k in (10, 100):
            if k == naive_k:
                continue
            names = classes_100[:k]
            full = naive_flops(names)
            # one full forward per class: time scales with the FLOPs of the K forwards
            results[f"{mode}_{k}"] = ModeResult(
                f"{mode}_{k}", len(naive_images), seconds[mode], full.total, flops_breakdown=full.to_dict(),
                extrapolated_from=f"{mode}_{naive_k}", scale=full.total / measured.total,
                note=f"{mode}_{naive_k} seconds x {full.total / measured.total:.2f} (FLOPs ratio of the K forwards)")

    checks: dict[str, Any] = {}
    tree = score_candidates(lm, naive_images, [QUESTION] * len(naive_images), classes_naive, method="tree")
    checks["tree_vs_naive_max_abs_diff"] = float(np.abs(tree - outputs["naive_rank"]).max())
    checks["tree_vs_plain_loop_max_abs_diff"] = float(np.abs(tree - outputs["plain_rank"]).max())
    batched = outputs["generate"]
    plain = plain_generate.last_answers  # type: ignore[attr-defined]
    checks["generate_answers_equal_plain_loop"] = sum(a == b for a, b in zip(batched, plain)) / len(plain)
    return {
        "model": name,
        "source": lm.source,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "dtype": str(next(lm.model.parameters()).dtype),
        "prompt_tokens": prompt_tokens,
        "image_tokens": int((encode_batch(lm, images[:1], prompts[:1])["input_ids"] == cfg.image_token_id).sum()),
        "trie_fed_nodes": {"10": trie_nodes(classes_10), "100": trie_nodes(classes_100)},
        "candidate_tokens_mean": {
            "10": float(np.mean([len(s) for s in candidate_token_ids(lm, classes_10)])),
            "100": float(np.mean([len(s) for s in candidate_token_ids(lm, classes_100)])),
        },
        "vocab_size": cfg.text_config.vocab_size,
        "tokenizer_size": len(tok),
        "results": results,
        "checks": checks,
        "load_average_per_repeat": loads,
    }


def ratios(results: dict[str, ModeResult]) -> dict[str, float]:
    ips = {m: r.images_per_s() for m, r in results.items()}
    out = {
        "generate_vs_plain_generate": ips["generate"] / ips["plain_generate"],
        "rank_100_cost_vs_forward": ips["forward"] / ips["rank_100"],
        "rank_10_cost_vs_forward": ips["forward"] / ips["rank_10"],
        "rank_100_vs_naive_rank_100": ips["rank_100"] / ips["naive_rank_100"],
        "rank_100_vs_plain_rank_100": ips["rank_100"] / ips["plain_rank_100"],
        "rank_10_vs_naive_rank_10": ips["rank_10"] / ips["naive_rank_10"],
        "rank_10_vs_plain_rank_10": ips["rank_10"] / ips["plain_rank_10"],
        # floors and ceilings the measured ratios are bounded by:
        # rank costs at least its FLOPs (prefix forward + one token per trie node) relative to a forward's FLOPs,
        "rank_100_flops_vs_forward": results["rank_100"].flops_per_image / results["forward"].flops_per_image,
        "rank_10_flops_vs_forward": results["rank_10"].flops_per_image / results["forward"].flops_per_image,
        # and batching can at most remove the decoding steps: every image still needs its prompt forward
        "generate_ceiling_vs_plain_generate": ips["forward"] / ips["plain_generate"],
    }
    return out


def targets(ratio: dict[str, float], summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        "generate >= 3x plain loop": {"value": ratio["generate_vs_plain_generate"],
                                      "met": ratio["generate_vs_plain_generate"] >= 3},
        "rank 100 <= 1.3x one forward": {"value": ratio["rank_100_cost_vs_forward"],
                                         "met": ratio["rank_100_cost_vs_forward"] <= 1.3},
        "rank 100 >= 20x naive": {"value": ratio["rank_100_vs_naive_rank_100"],
                                  "met": ratio["rank_100_vs_naive_rank_100"] >= 20},
        "rank 100 >= 40% of matmul peak": {"value": summary["rank_100"]["utilisation"],
                                           "met": summary["rank_100"]["utilisation"] >= 0.4},
    }


def write_record(record: dict[str, Any], out: str | None, bench: str, *, cuda: bool) -> Path:
    """Write a benchmark's JSON atomically to ``out`` or bench/results/<bench>-<machine>-<date>.json."""
    info = record["run_info"]
    machine = "cuda-" + torch.cuda.get_device_name().replace(" ", "_") if cuda else (
        "cpu-" + "".join(ch if ch.isalnum() else "_" for ch in info["cpu"]).strip("_"))
    path = Path(out) if out else ROOT / "results" / f"{bench}-{machine}-{dt.date.today()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    log.info("wrote %s", path)
    return path


def _load_average() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:  # not on every OS
        return ()


EVAL_CODE = ["bench/eval_throughput.py", "src/unforget/flops.py", "src/unforget/evaluation", "src/unforget/models"]


def run_info(args: argparse.Namespace, paths: list[str] | None = None) -> dict[str, Any]:
    """Versions, machine, threads, git sha; ``git_dirty`` when ``paths`` (the code the benchmark runs) have
    uncommitted changes."""
    import transformers

    import unforget

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        # uncommitted changes in the code this benchmark runs (others' work elsewhere in the tree does not count)
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", *(paths or EVAL_CODE)],
                                    cwd=ROOT.parent, capture_output=True, text=True).stdout.strip())
    except OSError:
        sha, dirty = "", False
    info = {
        "unforget": unforget.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "device": getattr(args, "device", "cpu"),
        "gpu": torch.cuda.get_device_name() if getattr(args, "device", "cpu").startswith("cuda") else None,
        "git_sha": sha,
        "git_dirty": dirty,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    info["load_average_start"] = _load_average()
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="tiny-llava,bench", help="comma-separated: tiny-llava, bench")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-images", type=int, default=1)
    p.add_argument("--naive-classes", type=int, default=10, help="classes the naive modes are timed on (10 or 100)")
    p.add_argument("--naive-repeats", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="model and peak dtype; auto: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-size", type=int, default=None,
                   help="matmul size for the peak (size^3); default 8192 on cuda, 2048 on cpu")
    p.add_argument("--tiny-llava", default="tiny-llava",
                   help="the tiny-llava model: the zoo name, or a folder built by its recipe")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/eval_throughput-<machine>-<date>.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for but CUDA is not available here")
        if args.device != "cuda" and ":" in args.device:
            torch.cuda.set_device(int(args.device.split(":", 1)[1]))
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.peak_size is None:
        args.peak_size = 8192 if args.device.startswith("cuda") else 2048
    dtype = getattr(torch, args.dtype)
    if args.naive_classes not in (10, 100):
        raise SystemExit("--naive-classes must be 10 or 100")
    info = run_info(args)
    peaks = [matmul_peak(args.device, args.peak_size, 5, dtype)]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    per_model = {}
    for name in models:
        if name == "tiny-llava":
            try:
                lm = load_model(args.tiny_llava, device=args.device, dtype=args.dtype)
            except Exception as exc:  # the embedded model may not be built yet
                log.warning("tiny-llava skipped: %s", exc)
                per_model[name] = {"skipped": str(exc)}
                continue
        elif name == "bench":
            lm = build_bench_model(args.device, synthetic_class_names(100), dtype)
        else:
            raise SystemExit(f"unknown model '{name}': use tiny-llava or bench")
        per_model[name] = bench_model(name, lm, args, peaks)
        del lm
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    peaks.append(matmul_peak(args.device, args.peak_size, 5, dtype))  # again at the end: the load may have changed
    peak = max(p["best_flops_per_s"] for p in peaks)
    info["load_average_end"] = _load_average()
    out_models = {}
    for name, data in per_model.items():
        if "skipped" in data:
            out_models[name] = data
            continue
        results = data.pop("results")
        summary = {m: r.summary(peak) for m, r in results.items()}
        ratio = ratios(results)
        out_models[name] = {**data, "modes": summary, "ratios": ratio, "targets": targets(ratio, summary)}
    record = {
        "run_info": info,
        "config": {k: v for k, v in vars(args).items()} | {"bench_shape": asdict(BENCH_SHAPE), "question": QUESTION},
        "matmul_peak": {"flops_per_s": peak, "runs": peaks},
        "models": out_models,
    }
    out = write_record(record, args.out, "eval_throughput", cuda=args.device.startswith("cuda"))
    for name, data in out_models.items():
        if "skipped" in data:
            continue
        for mode, s in data["modes"].items():
            log.info("%-10s %-18s %8.3f images/s  utilisation %.2f%s", name, mode, s["images_per_s"],
                     s["utilisation"], "  (extrapolated)" if s["extrapolated_from"] else "")
        for k, v in data["targets"].items():
            log.info("%-10s target %-32s %.3f %s", name, k, v["value"], "met" if v["met"] else "MISSED")
    return out


if __name__ == "__main__":
    main()
