"""Model Tailor's cost on CPU: seconds and peak memory to score, mask, compensate and write.

Models: tiny-llava (when built) and LLaVA-shaped models with random weights (``--sizes``: ``1b`` = CLIP ViT-B/16 +
a TinyLlama-1.1B-shaped Llama; ``300m`` = ViT-B/16 + a 16-layer 1024-wide Llama), saved in bf16 as LLaVA-1.5
ships; the "fine-tuned" copy perturbs every language-model and projector weight (a dense task vector, the worst
case for the patch size). Each phase runs in a child process, which reports its stage seconds
(``TailorResult.seconds``), its peak RSS (``ru_maxrss``: counts memory-mapped checkpoint pages it touched) and its
peak private memory (``RssAnon``, sampled every 20 ms: what the process allocated itself).

Phases per model:

* ``cp``        plain ``cp`` of the base model's safetensors files (the disk / page-cache floor, same run)
* ``salience``  Model Tailor with salience only (fusion 1, no compensation: no calibration), written as a HF
                folder: the scoring + masking + writing path, compared with ``cp`` in GB/s of model bytes
* ``full``      Model Tailor as shipped (Fisher + salience, OBS compensation) with synthetic calibration batches;
                its compensation seconds per transformer layer
* ``layer7b``   the compensation of one LLaMA-7B decoder layer (q, k, v, o, gate, up, down at 7B shapes, random
                Hessians from 2x in_features tokens, a random mask at ``--sparsity``): x32 projects the 7B
                compensation cost (written to docs/scaling.md by hand from the JSON)

    python bench/tailor_cost.py --sizes 1b --full-sizes 300m
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("tailor_cost")
ROOT = Path(__file__).resolve().parent

SHAPES: dict[str, dict[str, Any]] = {
    "1b": dict(image_size=224, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12,
               vision_intermediate=3072, text_hidden=2048, text_layers=22, text_heads=32, text_kv_heads=4,
               text_intermediate=5632, max_positions=2048, vision_feature_layer=-2, vocab_size=32000,
               projection_dim=512),
    "smoke": dict(image_size=32, patch_size=8, vision_hidden=64, vision_layers=2, vision_heads=2,
                  vision_intermediate=128, text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=4,
                  text_intermediate=128, max_positions=512, vision_feature_layer=-2, vocab_size=512,
                  projection_dim=64),  # seconds, for checking the script
    "300m": dict(image_size=224, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12,
                 vision_intermediate=3072, text_hidden=1024, text_layers=16, text_heads=16, text_kv_heads=4,
                 text_intermediate=4096, max_positions=2048, vision_feature_layer=-2, vocab_size=32000,
                 projection_dim=512),
}
# one LLaMA-7B decoder layer: name -> (out_features, in_features)
LLAMA7B_LAYER = {"q_proj": (4096, 4096), "k_proj": (4096, 4096), "v_proj": (4096, 4096), "o_proj": (4096, 4096),
                 "gate_proj": (11008, 4096), "up_proj": (11008, 4096), "down_proj": (4096, 11008)}
LLAMA7B_LAYERS = 32
LLAMA7B_BYTES = 13.5e9  # llava-1.5-7b-hf in fp16/bf16 (7.06B parameters)


# ----------------------------------------------------------------------------------------------- memory probe


class PeakMemory:
    """Peak RssAnon of this process, sampled in a thread (ru_maxrss also counts mapped file pages)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def anon_bytes() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, self.anon_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.peak_anon = self.anon_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, self.anon_bytes())


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------------------------- models


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def build_random_llava(size: str, folder: Path, seed: int = 0) -> Path:
    """A randomly initialised LLaVA of ``SHAPES[size]`` saved in bf16 (config only, no processor: the bench
    calibrates on synthetic token ids)."""
    from transformers import LlavaForConditionalGeneration

    from unforget.models.build import LlavaShape, llava_config

    shape = LlavaShape(**SHAPES[size])
    config = llava_config(shape, shape.vocab_size, image_token_id=shape.vocab_size - 1, pad_token_id=0)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: no fp32 copy of a 1B model in memory
    try:
        model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(folder, max_shard_size="1GB")
    del model
    return folder


def perturbed_copy(base: Path, out: Path, scale: float = 2e-3, seed: int = 1) -> Path:
    """``base`` with every considered weight moved by ``scale * randn`` (a dense stand-in for a fine-tune)."""
    from safetensors.torch import save_file

    from unforget.tailoring import considered_keys, open_checkpoint

    checkpoint = open_checkpoint(base)
    moved = set(considered_keys(checkpoint))
    out.mkdir(parents=True, exist_ok=True)
    for path in base.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors"):
            shutil.copyfile(path, out / path.name)
    generator = torch.Generator().manual_seed(seed)
    from safetensors import safe_open

    for shard in sorted(base.glob("*.safetensors")):
        tensors = {}
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if key in moved:
                    noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
                    tensor = (tensor.float() + scale * noise).to(tensor.dtype)
                tensors[key] = tensor
        save_file(tensors, str(out / shard.name), metadata={"format": "pt"})
    return out


def synthetic_batches(folder: Path, count: int, text_tokens: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` one-sample batches: the image's tokens then ``text_tokens`` random tokens, loss on the text."""
    config = json.loads((folder / "config.json").read_text())
    image_token = config.get("image_token_id", config.get("image_token_index"))
    size = config["vision_config"]["image_size"]
    image_tokens = (size // config["vision_config"]["patch_size"]) ** 2  # "default" strategy: CLS dropped
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        text = torch.randint(1, image_token, (1, text_tokens), generator=g)
        ids = torch.cat([torch.full((1, image_tokens), image_token), text], dim=1)
        labels = ids.clone()
        labels[:, :image_tokens] = -100
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                        "pixel_values": torch.randn(1, 3, size, size, generator=g)})
    return batches


# ----------------------------------------------------------------------------------------------- phases


def phase_cp(base: Path, work: Path) -> dict[str, Any]:
    dest = work / "cp"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    files = sorted(base.glob("*.safetensors"))
    start = time.perf_counter()
    subprocess.run(["cp", *[str(f) for f in files], str(dest)], check=True)  # no sync: tailoring does not either
    seconds = time.perf_counter() - start
    nbytes = weight_bytes(base)
    shutil.rmtree(dest)
    return {"seconds": seconds, "bytes": nbytes, "gb_per_s": nbytes / seconds / 1e9}


def run_child(phase: str, base: Path, finetuned: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one tailoring phase in a fresh process (its own peak memory), return its JSON."""
    result = out.parent / f"{phase}-result.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", phase, "--base", str(base),
               "--finetuned", str(finetuned), "--child-out", str(out), "--child-json", str(result),
               "--sparsity", str(args.sparsity), "--threads", str(args.threads),
               "--calib-batches", str(args.calib_batches), "--calib-tokens", str(args.calib_tokens)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        log.error("%s failed:\n%s", phase, proc.stderr[-4000:])
        return {"failed": proc.stderr[-2000:]}
    data = json.loads(result.read_text())
    data["process_seconds"] = time.perf_counter() - start
    return data


def child(args: argparse.Namespace) -> None:
    """The body of a child process: one tailoring run, timed and measured."""
    import gc

    from unforget.tailoring import tailor, write_tailored

    torch.set_num_threads(args.threads)
    base, finetuned, out = Path(args.base), Path(args.finetuned), Path(args.child_out)
    if out.exists():
        shutil.rmtree(out)
    gc.collect()
    idle_anon = PeakMemory.anon_bytes()
    with PeakMemory() as memory:
        if args.child == "salience":
            result = tailor(base, finetuned, None, "model-tailor", sparsity=args.sparsity, fusion=1.0,
                            compensate=False, device="cpu")
        else:
            batches = synthetic_batches(base, args.calib_batches, args.calib_tokens)
            result = tailor(base, finetuned, batches, "model-tailor", sparsity=args.sparsity, device="cpu")
        write_tailored(result, out, format="hf", max_shard_size="1GB")
    summary = result.summary()
    compensated = sum(1 for t in summary["tensors"].values() if any(e is not None for e in t["error_after"]))
    layers = {".".join(k.split(".")[:k.split(".").index("layers") + 2]) for k in summary["tensors"]
              if ".layers." in k}
    data = {
        "phase": args.child, "seconds": asdict(result.seconds), "considered": result.considered,
        "changed": result.patch.size, "changed_fraction": result.changed_fraction,
        "compensated_tensors": compensated, "layers": len(layers),
        "idle_anon_bytes": idle_anon, "peak_anon_bytes": memory.peak_anon, "peak_rss_bytes": peak_rss_bytes(),
        "written_bytes": weight_bytes(out),
    }
    Path(args.child_json).write_text(json.dumps(data, indent=2))
    shutil.rmtree(out)


def layer7b_compensation(sparsity: float, seed: int = 0) -> dict[str, Any]:
    """Seconds of ``compensate`` on each matrix of one LLaMA-7B layer (random weights, Hessian and mask)."""
    from unforget.tailoring.compensation import compensate

    g = torch.Generator().manual_seed(seed)
    per_matrix = {}
    for name, (rows, cols) in LLAMA7B_LAYER.items():
        base = torch.randn(rows, cols, generator=g) * 0.02
        finetuned = base + torch.randn(rows, cols, generator=g) * 2e-3
        x = torch.randn(cols, 2 * cols, generator=g)
        hessian = 2.0 * (x @ x.T) / x.shape[1]
        del x
        delta = (finetuned - base).abs().reshape(-1)
        k = round(sparsity * delta.numel())
        keep = torch.zeros(delta.numel(), dtype=torch.bool)
        keep[torch.topk(delta, k).indices] = True
        keep = keep.reshape(rows, cols)
        start = time.perf_counter()
        compensate(finetuned, base, keep, hessian)
        seconds = time.perf_counter() - start
        kept = keep.sum(1).float()
        per_matrix[name] = {"shape": [rows, cols], "seconds": seconds, "kept_per_row_mean": float(kept.mean()),
                            "kept_per_row_max": int(kept.max())}
        log.info("7B %s %dx%d: %.1f s", name, rows, cols, seconds)
        del base, finetuned, hessian, keep
    layer = sum(m["seconds"] for m in per_matrix.values())
    return {"sparsity": sparsity, "matrices": per_matrix, "layer_seconds": layer,
            "projected_7b_seconds": layer * LLAMA7B_LAYERS, "layers": LLAMA7B_LAYERS,
            "note": "random mask (kept entries spread evenly over rows); real masks concentrate on some rows, and "
                    "the exact solver's cost grows with the cube of a row's kept count"}


# ----------------------------------------------------------------------------------------------- the run


def bench_model(name: str, base: Path, finetuned: Path, work: Path, args: argparse.Namespace,
                phases: list[str]) -> dict[str, Any]:
    model_bytes = weight_bytes(base)
    out: dict[str, Any] = {"model_bytes": model_bytes}
    cp = phase_cp(base, work)
    out["cp"] = cp
    log.info("%s: cp %.2f GB in %.2f s (%.2f GB/s)", name, model_bytes / 1e9, cp["seconds"], cp["gb_per_s"])
    for phase in phases:
        data = run_child(phase, base, finetuned, work / f"{phase}-out", args)
        if "failed" not in data:
            s = data["seconds"]
            streaming = s["score"] + s["mask"] + s["merge"] + s["write"]
            data["score_mask_write_seconds"] = streaming
            data["gb_per_s"] = model_bytes / streaming / 1e9
            data["vs_cp"] = data["gb_per_s"] / cp["gb_per_s"]
            data["peak_anon_over_model"] = data["peak_anon_bytes"] / model_bytes
            data["peak_anon_above_idle_over_model"] = (data["peak_anon_bytes"] - data["idle_anon_bytes"]) / model_bytes
            data["peak_rss_over_model"] = data["peak_rss_bytes"] / model_bytes
            if data["compensated_tensors"] and data["layers"]:
                data["compensate_seconds_per_layer"] = s["compensate"] / data["layers"]
            log.info("%s %s: %s; %.2f GB/s (%.2fx cp); peak anon %.2fx the model, peak rss %.2fx", name, phase,
                     {k: round(v, 2) for k, v in s.items()}, data["gb_per_s"], data["vs_cp"],
                     data["peak_anon_over_model"], data["peak_rss_over_model"])
        out[phase] = data
    return out


def targets(models: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's targets per model: >= 0.3x cp speed, peak private memory < 2.5x one model copy."""
    out = {}
    for name, m in models.items():
        sal = m.get("salience") or {}
        if "vs_cp" not in sal:
            continue
        out[name] = {
            "score_mask_write_vs_cp": {"value": sal["vs_cp"], "target": ">= 0.3", "met": sal["vs_cp"] >= 0.3},
            "salience_peak_anon_over_model": {"value": sal["peak_anon_over_model"], "target": "< 2.5",
                                              "met": sal["peak_anon_over_model"] < 2.5},
        }
        full = m.get("full") or {}
        if "peak_anon_over_model" in full:
            out[name]["full_peak_anon_over_model"] = {"value": full["peak_anon_over_model"], "target": "< 2.5",
                                                      "met": full["peak_anon_over_model"] < 2.5}
    return out


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    """eval_throughput's run record (versions, machine, threads, git sha, load) plus what a cost benchmark needs.
    Imported here, not at the top: the timed child processes should not load the evaluation code."""
    import safetensors

    sys.path.insert(0, str(ROOT))
    from eval_throughput import run_info as common_run_info

    info = common_run_info(args, paths=["bench/tailor_cost.py", "src/unforget/tailoring"])
    memory = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), None)
    return {**info, "safetensors": safetensors.__version__, "cpu_count": os.cpu_count(), "memory_bytes": memory}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1b", help="random models for the salience (score/mask/write) phase: 1b,300m")
    p.add_argument("--full-sizes", default="300m", help="random models for the full phase (calibration + "
                                                        "compensation): its Fisher, Hessians and scores need "
                                                        "several model copies of memory")
    p.add_argument("--no-tiny", action="store_true", help="skip tiny-llava even when it is built")
    p.add_argument("--no-layer7b", action="store_true", help="skip the 7B-layer compensation timing")
    p.add_argument("--sparsity", type=float, default=0.1)
    p.add_argument("--calib-batches", type=int, default=2)
    p.add_argument("--calib-tokens", type=int, default=32, help="text tokens per calibration sample (after the "
                                                               "image's 196)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", help="where the models are written (default: a temporary folder, removed)")
    p.add_argument("--out", help="JSON path (default bench/results/tailor_cost-<machine>-<date>.json)")
    # child-process mode (internal)
    p.add_argument("--child", choices=["salience", "full"], help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--finetuned", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--child-json", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path | None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args)
        return None
    torch.set_num_threads(args.threads)
    info = run_info(args)
    sizes = [s for s in args.sizes.split(",") if s]
    full_sizes = [s for s in args.full_sizes.split(",") if s]
    unknown = sorted(set(sizes + full_sizes) - set(SHAPES))
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}: use {', '.join(SHAPES)}")
    keep = args.workdir is not None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tailor-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {}
    try:
        if not args.no_tiny:
            from unforget.errors import ModelLoadError
            from unforget.models.loading import resolve_model_path

            try:
                tiny = Path(resolve_model_path("tiny-llava"))
            except ModelLoadError as exc:
                log.warning("tiny-llava skipped: %s", exc)
                models["tiny-llava"] = {"skipped": str(exc)}
            else:
                finetuned = perturbed_copy(tiny, work / "tiny-ft")
                models["tiny-llava"] = bench_model("tiny-llava", tiny, finetuned, work, args, ["salience", "full"])
        for size in dict.fromkeys(sizes + full_sizes):
            start = time.perf_counter()
            base = build_random_llava(size, work / f"{size}-base")
            finetuned = perturbed_copy(base, work / f"{size}-ft")
            log.info("built %s (%.2f GB) and its perturbed copy in %.0f s", size, weight_bytes(base) / 1e9,
                     time.perf_counter() - start)
            phases = [p for p, wanted in (("salience", size in sizes), ("full", size in full_sizes)) if wanted]
            models[size] = {"shape": SHAPES[size], **bench_model(size, base, finetuned, work, args, phases)}
            shutil.rmtree(base)
            shutil.rmtree(finetuned)
        layer7b = None if args.no_layer7b else layer7b_compensation(args.sparsity)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    info["load_average_end"] = os.getloadavg()
    projection = None
    reference = next((models[s] for s in sizes if "salience" in models.get(s, {})), None)
    if reference and "gb_per_s" in reference["salience"]:
        projection = {"score_mask_write_seconds": LLAMA7B_BYTES / (reference["salience"]["gb_per_s"] * 1e9),
                      "compensate_seconds": layer7b["projected_7b_seconds"] if layer7b else None,
                      "basis": "score+mask+write at the measured GB/s of the largest salience run; compensation "
                               "= 32 x the measured 7B layer"}
    record = {"run_info": info, "config": vars(args), "models": models, "layer7b_compensation": layer7b,
              "projection_7b_cpu": projection, "targets": targets(models)}
    from eval_throughput import write_record

    return write_record(record, args.out, "tailor_cost", cuda=False)


if __name__ == "__main__":
    main()
