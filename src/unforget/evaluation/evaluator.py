"""Evaluate an MLLM as an image classifier (EMT): prompt, predict (generate + judge, or rank), record, score.

Each judged sample is appended to samples.jsonl as soon as it is known; a rerun on the same folder skips the
samples already there, so an interrupted evaluation resumes and ends with the same metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from ..data import ImageDataset, Sample, load_dataset
from ..data.sampling import Sampling, SamplingStrategy, select_split
from ..errors import BadSampleError, ConfigError
from ..models.loading import LoadedModel, load_configured_model
from ..runs import RunDir
from ..runs.records import SampleRecord
from ..scale import sharding  # looked up at each call (sharding.shard_records): a wrapper installed later applies
from ..scale.batching import with_oom_backoff
from . import ranking  # looked up at each call (ranking.rank_classes), as for sharding
from .captioning import CaptionMetrics, caption_metrics, sample_references
from .choices import ChoiceSummary, choice_records, choice_summary
from .config import EvalConfig
from .encoder import find_encoder, linear_probe_accuracy, zero_shot_accuracy
from .generation import GenerationRequest, generate_answers
from .judges.base import JUDGES, JudgeItem, Verdict, build_judges, judge_stats
from .judges.exact import ExactJudge
from .metrics import ClassificationMetrics, FormatKnowledgeSplit, classification_metrics, split_records
from .scorers import answer_vocabulary, benchmark_score, get_scorer, outside_vocabulary_rate, score_answer

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (dataset, done, total)


@dataclass
class DatasetResult:
    dataset: str
    metrics: ClassificationMetrics | CaptionMetrics  # caption sets: CIDEr-D and BLEU, accuracy None
    by_judge: dict[str, ClassificationMetrics] = field(default_factory=dict)
    judge_agreement: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)  # "zero-shot" / "linear-probe" -> BaselineResult
    seconds: float = 0.0
    format_knowledge: FormatKnowledgeSplit | None = None  # generate mode with also_rank: why answers are wrong
    sampling: Sampling | None = None  # how the evaluated samples were drawn from the split
    choice: ChoiceSummary | None = None  # multiple-choice sets: mischoice, no-option rate, CircularEval figures


@dataclass
class EvalResult:
    results: dict[str, DatasetResult]
    run_dir: str | None = None
    judge_stats: dict[str, Any] = field(default_factory=dict)  # per judge: calls, cache hits, failures, tokens
    main_process: bool = True  # false on the other processes of a sharded run: only the main one writes metrics

    def accuracy(self, dataset: str) -> float:
        return self.results[dataset].metrics.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "datasets": {
                name: {
                    **r.metrics.to_dict(),
                    "by_judge": {j: m.to_dict() for j, m in r.by_judge.items()},
                    "judge_agreement": r.judge_agreement,
                    "baselines": {k: b.to_dict() for k, b in r.baselines.items()},
                    "seconds": r.seconds,
                    **({"format_knowledge": r.format_knowledge.to_dict()} if r.format_knowledge else {}),
                    **({"sampling": r.sampling.to_dict()} if r.sampling else {}),
                    **({"choice": r.choice.to_dict()} if r.choice else {}),
                }
                for name, r in self.results.items()
            },
            "judge_stats": self.judge_stats,
        }


def select_samples(ds: ImageDataset, split: str, limit: int | None, strategy: SamplingStrategy = "stratified",
                   seed: int = 0) -> tuple[list[Sample], Sampling]:
    """The samples a run evaluates (:func:`~unforget.data.sampling.select_split`): the same for every model, epoch
    and arm, so that paired tests compare like with like."""
    return select_split(ds, split, limit, strategy=strategy, seed=seed)


def evaluate(
    cfg: EvalConfig,
    *,
    lm: LoadedModel | None = None,
    run: RunDir | None = None,
    progress: ProgressFn | None = None,
    tag: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``cfg.datasets``; records go to ``run`` (resumable). ``tag`` is added to every record
    (a study puts its epoch / method there) and selects the records this call resumes from.

    Under ``accelerate launch`` / torchrun the samples are sharded over the processes (scale/sharding.py): each
    appends its own shard file, all score the gathered records, the main process merges the files."""
    shard = sharding.current_shard()
    lm = lm or load_configured_model(cfg.model)
    judges = build_judges(cfg.judges, cfg.judge_options)
    tag = tag or {}
    previous = (run.samples() + sharding.shard_records(run)) if run else []
    existing = [r for r in previous if all(r.get(k) == v for k, v in tag.items())]
    # no process appends before every process has read what is done: one that read late would take records
    # another just wrote for resumed ones, shard a shorter list differently and leave samples unevaluated
    shard.barrier()
    appender = run.appender(shard.samples_name) if run else None
    if not shard.is_main:
        progress = None
    leak_sets = {name: load_dataset(name) for name in cfg.leak_labels}
    results: dict[str, DatasetResult] = {}
    try:
        for ds_name in cfg.datasets:
            t0 = time.perf_counter()
            ds = load_dataset(ds_name)
            samples, sampling = select_samples(ds, cfg.split, cfg.limit, cfg.sampling, cfg.seed)
            done = {r["id"]: r for r in existing if r["dataset"] == ds.name}
            todo = [s for s in samples if s.id not in done]
            if progress:
                progress(ds_name, len(done), len(samples))
            new = _predict_and_judge(cfg, lm, ds, shard.take(todo), judges, leak_sets, appender, tag,
                                     lambda k: progress(ds_name, k, len(samples)) if progress else None,
                                     start=len(samples) - len(todo))
            done.update((r["id"], r) for r in shard.gather(new))
            # dataset order, however the records were produced (resumed, sharded): the same metrics either way
            records = [done[s.id] for s in samples if s.id in done]
            results[ds_name] = score_records(ds, records, cfg.judges, list(leak_sets))
            results[ds_name].sampling = sampling
            if ds.task == "classification":
                results[ds_name].baselines = encoder_baselines(cfg, lm, ds)
            results[ds_name].seconds = time.perf_counter() - t0
    finally:
        if appender:
            appender.close()
        for j in judges:
            j.close()
    stats = judge_stats(judges)
    if shard.world > 1:
        stats = sharding.sum_stats(shard.gather([stats]))
        shard.barrier()  # every shard file is complete and closed
        if run and shard.is_main:
            sharding.merge_shards(run)
        shard.barrier()
    return EvalResult(results, str(run.path) if run else None, stats, main_process=shard.is_main)


def _predict_and_judge(cfg, lm, ds, todo, judges, leak_sets, appender, tag, on_progress, start: int) -> list[dict]:
    records: list[dict] = []
    exact = ExactJudge()
    candidates = rank_candidates(ds) if cfg.mode == "rank" and ds.task not in ("caption", "text") else []
    done = start
    for chunk_start in range(0, len(todo), cfg.batch_size * 4):
        chunk = todo[chunk_start : chunk_start + cfg.batch_size * 4]
        loaded: list[tuple[Sample, Any]] = []
        for s in chunk:
            try:
                loaded.append((s, s.load_image(ds.name) if s.image is not None else None))
            except BadSampleError as exc:
                if not cfg.skip_bad:
                    raise
                rec = SampleRecord(s.id, ds.name, tag=dict(tag), skipped=True, error=str(exc)).to_dict()
                records.append(rec)
                if appender:
                    appender.write(rec)
        if not loaded:
            continue
        questions = [ds.question_for(s, cfg.template) for s, _ in loaded]
        if ds.task == "caption":
            records.extend(_caption_records(cfg, lm, ds, loaded, questions, appender, tag))
            done += len(chunk)
            on_progress(done)
            continue
        if ds.task == "multiple_choice":  # read by the set's letter matcher, every rotation asked (choices.py)
            new = choice_records(cfg, lm, ds, loaded, tag, lambda answer: {
                name: exact.match(answer, other.class_names, other.synonyms)[0] is not None
                for name, other in leak_sets.items()})
            records.extend(new)
            for rec in new:
                if appender:
                    appender.write(rec)
            done += len(chunk)
            on_progress(done)
            continue
        # a text set (no image, free answers) has no class list to rank: it is always generated and judged
        mode = "generate" if ds.task == "text" else cfg.mode
        if mode == "generate":
            requests = [GenerationRequest(q, im) for q, (_, im) in zip(questions, loaded)]
            answers = with_oom_backoff(lambda b: generate_answers(lm, requests, batch_size=b,
                                                                  max_new_tokens=cfg.max_new_tokens), cfg.batch_size)
            ranked: list[dict | None] = [None] * len(loaded)
            also = (_rank(cfg, lm, ds, loaded, questions) if cfg.also_rank and ds.class_names
                    else [None] * len(loaded))
        else:
            ranked = _rank(cfg, lm, ds, loaded, questions, candidates)
            answers = [r["prediction"] for r in ranked]
            also = [None] * len(loaded)
        items = [judge_item(ds, q, a, ds.reference(s)) for q, a, (s, _) in zip(questions, answers, loaded)]
        if mode == "generate":
            verdicts_by_judge = {j.name: j.judge(items) for j in judges}
        else:  # the ranked class is the prediction itself: nothing to interpret, no judge call to pay for
            ranked_verdicts = [Verdict(prediction=it.answer, correct=it.answer == it.reference, judge="rank",
                                       raw=it.answer) for it in items]
            verdicts_by_judge = {j.name: ranked_verdicts for j in judges}
        for i, (s, _) in enumerate(loaded):
            record = SampleRecord(
                s.id, ds.name, tag=dict(tag), split=cfg.split, task=ds.task, question=questions[i], answer=answers[i],
                reference=items[i].reference, label=s.label,
                **verdict_fields(judges, {name: v[i] for name, v in verdicts_by_judge.items()}), mode=mode,
                leaks={name: exact.match(answers[i], other.class_names, other.synonyms)[0] is not None
                       for name, other in leak_sets.items()},
                qtype=s.meta.get("qtype") or None,
                score=score_answer(ds.metric, answers[i], items[i].reference, s.meta.get("answers"))
                if ds.metric else None)
            if ranked[i] is not None:
                record.rank_of_reference = ranked[i]["rank_of_reference"]
                record.top_k = ranked[i]["top_k"]
            if also[i] is not None:  # kept apart from the generated answer's fields: only the split reads it
                record.rank = {**also[i], "correct": also[i]["prediction"] == items[i].reference}
            rec = record.to_dict()
            records.append(rec)
            if appender:
                appender.write(rec)
        done += len(chunk)
        on_progress(done)
    return records


def rank_candidates(ds: ImageDataset) -> list[str]:
    """What rank mode ranks: the class list, else the free-answer set's answer list or vocabulary (its distinct
    reference answers over every split)."""
    return answer_vocabulary(ds.class_names, ds.answer_list,
                             [s.answer for samples in ds.splits.values() for s in samples if s.answer])


def _rank(cfg: EvalConfig, lm: LoadedModel, ds: ImageDataset, loaded: Sequence[tuple[Sample, Any]],
          questions: Sequence[str], candidates: Sequence[str] | None = None) -> list[dict]:
    names = list(candidates) if candidates else ds.class_names
    return with_oom_backoff(
        lambda b: ranking.rank_classes(lm, names, [im for _, im in loaded], questions,
                               [ds.reference(s) for s, _ in loaded], batch_size=b, normalise=cfg.rank_normalise),
        cfg.batch_size)


def judge_item(ds: ImageDataset, question: str, answer: str, reference: str) -> JudgeItem:
    """What a judge sees of one answer: the question, the answer, the reference and the dataset's label set."""
    return JudgeItem(question=question, answer=answer, reference=reference, class_names=ds.class_names,
                     synonyms=ds.synonyms)


def verdict_fields(judges: Sequence[Any], verdicts: dict[str, Verdict]) -> dict[str, Any]:
    """The verdict fields of a record: the first judge decides (prediction, correct, judge, confident), every
    judge's verdict is kept under ``judgements``. Used by evaluation and by rejudging alike."""
    primary = verdicts[judges[0].name]
    return {"prediction": primary.prediction, "correct": primary.correct, "judge": primary.judge,
            "confident": primary.confident, "judge_identity": judges[0].identity(),
            "judgements": {name: v.to_dict() for name, v in verdicts.items()}}


def _caption_records(cfg, lm, ds, loaded, questions, appender, tag) -> list[dict]:
    """Caption sets: generate (no judge: captions are scored against all references as a set)."""
    if cfg.mode != "generate":
        raise ConfigError(f"dataset '{ds.name}' is a captioning set: evaluate it in generate mode, not {cfg.mode}")
    answers = generate_answers(lm, [GenerationRequest(q, im) for q, (_, im) in zip(questions, loaded)],
                               batch_size=cfg.batch_size, max_new_tokens=cfg.caption_max_new_tokens)
    records = []
    for (s, _), question, answer in zip(loaded, questions, answers):
        rec = SampleRecord(s.id, ds.name, tag=dict(tag), split=cfg.split, task="caption", question=question,
                           answer=answer, reference=ds.reference(s),
                           references=sample_references(ds.reference(s),
                                                        s.meta.get("captions") or s.meta.get("answers")),
                           mode=cfg.mode).to_dict()
        records.append(rec)
        if appender:
            appender.write(rec)
    return records


def score_records(ds: ImageDataset, records: Sequence[dict], judge_names: Sequence[str],
                  leak_names: Sequence[str]) -> DatasetResult:
    """Metrics of one dataset from its records (also used by reports reading samples.jsonl)."""
    kept = [r for r in records if not r.get("skipped")]
    skipped = len(records) - len(kept)
    if ds.task == "caption":
        return DatasetResult(ds.name, caption_metrics([r["answer"] for r in kept], [r["references"] for r in kept],
                                                      skipped=skipped, meteor=ds.metric == "coco"))
    class_names = ds.class_names or sorted({r["reference"] for r in kept})
    refs = [r["reference"] for r in kept]
    ranks = [r.get("rank_of_reference") for r in kept] if kept and "rank_of_reference" in kept[0] else None
    leaks = {name: [bool(r.get("leaks", {}).get(name)) for r in kept] for name in leak_names}
    by_judge = {}
    for j in judge_names:
        verdicts = [r["judgements"][j] for r in kept]
        by_judge[j] = classification_metrics(refs, [v["prediction"] for v in verdicts],
                                             [v["correct"] for v in verdicts], class_names, leaks=leaks,
                                             ranks=ranks, skipped=skipped)
    primary = by_judge[judge_names[0]]
    if ds.task == "vqa" and not ds.class_names:  # free answers: "names no class" = outside the answer vocabulary
        normalize = get_scorer(ds.metric).normalize if ds.metric else None
        rate = outside_vocabulary_rate([r.get("answer") or "" for r in kept], rank_candidates(ds),
                                       **({"normalize": normalize} if normalize else {}))
        by_judge = {j: replace(m, no_class_rate=rate, outside_label_set_rate=rate) for j, m in by_judge.items()}
        primary = by_judge[judge_names[0]]
    if ds.metric:
        primary = benchmark_metrics(ds.metric, primary, kept)
    agreement: dict[str, float] = {}
    for a_i, a in enumerate(judge_names):
        for b in judge_names[a_i + 1:]:
            pairs = [(r["judgements"][a]["correct"], r["judgements"][b]["correct"]) for r in kept]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            agreement[f"{a}~{b}"] = sum(x == y for x, y in pairs) / len(pairs) if pairs else float("nan")
    split = split_records(kept) if any(isinstance(r.get("rank"), dict) for r in kept) else None
    # a benchmark set keeps every judge's own accuracy apart from the benchmark figure
    return DatasetResult(ds.name, primary, by_judge if len(judge_names) > 1 or ds.metric else {}, agreement,
                         format_knowledge=split,
                         choice=choice_summary(kept, ds.choice) if ds.task == "multiple_choice" else None)


def benchmark_metrics(metric: str, judged: ClassificationMetrics, records: Sequence[dict]) -> ClassificationMetrics:
    """The judged metrics with ``accuracy`` (and its interval) replaced by the dataset's benchmark score."""
    scored = [r for r in records if r.get("score") is not None]
    est = benchmark_score(metric, [r["score"] for r in scored], [r.get("answer") or "" for r in scored],
                          [r.get("reference") or "" for r in scored])
    if est is None:
        return replace(judged, metric=metric)
    return replace(judged, n=est.score.n, accuracy=est.score.value, accuracy_low=est.score.low,
                   accuracy_high=est.score.high, metric=metric, interval=est.score.method,
                   others={k: v.to_dict() for k, v in est.others.items()})


def encoder_baselines(cfg: EvalConfig, lm: LoadedModel, ds: ImageDataset) -> dict[str, Any]:
    """EMT's comparison: the MLLM's own vision encoder as a zero-shot and a linear-probe classifier."""
    out: dict[str, Any] = {}
    if "zero-shot" in cfg.baselines:
        encoder = find_encoder(lm, cfg.encoder)
        if encoder is None:
            log.warning("no CLIP text side for %s: zero-shot baseline skipped (pass --encoder CLIP_FOLDER)", lm.source)
        else:
            out["zero-shot"] = zero_shot_accuracy(encoder, ds, cfg.split, cfg.limit, skip_bad=cfg.skip_bad,
                                                  sampling=cfg.sampling, seed=cfg.seed)
    if "linear-probe" in cfg.baselines:
        out["linear-probe"] = linear_probe_accuracy(lm, ds, split=cfg.split, limit=cfg.limit,
                                                    train_limit=cfg.probe_train_limit, seed=cfg.seed,
                                                    skip_bad=cfg.skip_bad, sampling=cfg.sampling)
    return out


def check_judges(names: Sequence[str]) -> None:
    for n in names:
        if n not in JUDGES:
            JUDGES.get(n)  # raises with did-you-mean
    if not names:
        raise ConfigError("no judge given")
