"""Replay sets of the data-hybrid runs: the base model's own greedy answers to a source's questions, cached in the
run folder (``replay/<source>/``) as a JSONL VQA set that loads like any other dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ...config import to_dict
from ...data import load_dataset
from ...errors import ConfigError
from ...evaluation.config import EvalConfig
from ...evaluation.generation import GenerationRequest, generate_answers
from ...models.loading import LoadedModel
from ...runs import RunDir, atomic_write_json, atomic_write_text, dumps_strict, read_json, read_jsonl
from ...training.data import question_of
from .config import HybridSource
from ...runs.layout import DONE, REPLAY_FILE

ProgressFn = Callable[[str, int, int], None]



def replay_reference(folder: Path) -> str:
    """The dataset reference of a cached replay set (a JSONL VQA file whose rows are the train split)."""
    return f"jsonl:{(folder / REPLAY_FILE).resolve()}?split=train&id_column=id"


def replay_ready(folder: Path, count: int) -> bool:
    """A finished replay set with at least ``count`` answers (a larger ratio or budget later asks for more)."""
    meta = folder / "meta.json"
    return (folder / DONE).exists() and meta.exists() and read_json(meta).get("answers", 0) >= count


def write_replay_set(lm: LoadedModel, source: HybridSource, count: int, run: RunDir, ev: EvalConfig,
                     progress: ProgressFn | None = None) -> None:
    """The base model's greedy answers to the first questions of ``source`` (``count`` non-empty ones), as a JSONL
    VQA set in ``run``: images as PNGs, one row per answer. Appended as it goes; a rerun continues."""
    ds = load_dataset(source.dataset)
    samples = ds.split(source.split)
    text_only = next((s for s in samples if s.image is None), None)
    if text_only is not None:
        # a replay set is image + question + the base model's answer; a text-only (conversation) sample has no image
        raise ConfigError(f"replay source '{source.name}' ({source.dataset}) holds text-only samples (e.g. "
                          f"{text_only.id}): replay asks the base model about images. Use it as a plain hybrid "
                          f"source instead (hybrid.sources: replay: false), which trains on its own answers")
    done = {r["id"]: r for r in read_jsonl(run.file(REPLAY_FILE))}
    kept = sum(1 for r in done.values() if r["answer"])
    images = run.path / "images"
    images.mkdir(exist_ok=True)
    position = 0
    with run.appender(REPLAY_FILE) as app:
        while kept < count and position < len(samples):
            chunk = min(ev.batch_size * 4, count - kept)  # no more than still needed: empty answers ask for more
            batch = [(i, s) for i, s in enumerate(samples[position: position + chunk], start=position)
                     if s.id not in done]
            position += chunk
            if not batch:
                continue
            loaded = [s.load_image(ds.name) for _, s in batch]
            questions = [question_of(ds, s, i, "round-robin") for i, s in batch]
            answers = generate_answers(lm, [GenerationRequest(q, im) for q, im in zip(questions, loaded)],
                                       batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens)
            for (i, s), image, question, answer in zip(batch, loaded, questions, answers):
                file = images / f"{i:06d}.png"
                image.save(file)
                # an empty answer cannot be a training target: it is recorded (so a rerun skips it) and not used
                app.write({"id": s.id, "image": f"images/{file.name}", "question": question, "answer": answer,
                           "reference": ds.reference(s), "source": source.dataset})
                kept += bool(answer)
            if progress:
                progress("replay", min(kept, count), count)
    if kept < count:
        raise ConfigError(f"replay source '{source.name}' ({source.dataset}, split {source.split}) gave {kept} "
                          f"non-empty base-model answers, fewer than the {count} the largest ratio needs; "
                          "lower hybrid.budget or the ratios, or use a larger set")
    rows = [r for r in read_jsonl(run.file(REPLAY_FILE)) if r["answer"]]
    _rewrite_usable(run, rows)
    atomic_write_json(run.file("meta.json"), {"source": to_dict(source), "count": count, "answers": len(rows),
                                              "model": ev.model.name, "max_new_tokens": ev.max_new_tokens,
                                              "agree_with_reference": _agreement(rows)})
    run.mark_done()


def _rewrite_usable(run: RunDir, rows: list[dict[str, Any]]) -> None:
    """replay.jsonl keeps the rows with an answer only, so that it loads as a dataset."""
    atomic_write_text(run.file(REPLAY_FILE), "".join(dumps_strict(r, ensure_ascii=False) + "\n" for r in rows))


def _agreement(rows: list[dict[str, Any]]) -> float | None:
    """Share of replayed answers equal to the reference (case and spaces aside): how far replay is from the labels."""
    if not rows:
        return None
    same = sum(" ".join(str(r["answer"]).lower().split()) == " ".join(str(r["reference"]).lower().split())
               for r in rows)
    return same / len(rows)
