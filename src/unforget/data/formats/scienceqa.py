"""``scienceqa``: ScienceQA's official release (lupantech/ScienceQA ``data/scienceqa/``): problems.json, the split
lists in pid_splits.json, images under ``images/<split>/<pid>/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ...errors import DataError
from ..types import ImageDataset, Sample
from ..choices import POST_PROMPT, answer_letter, choice_dataset, choice_sample, choice_settings, option_texts
from ._common import register_format, wanted_splits

PROBLEMS = "problems.json"
PID_SPLITS = "pid_splits.json"


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def _problems_file(path: str) -> Path:
    given = Path(path).expanduser()
    file = given / PROBLEMS if given.is_dir() else given
    if not file.is_file():
        raise DataError(f"scienceqa: {file} does not exist; give the folder holding {PROBLEMS} (ScienceQA's "
                        f"data/scienceqa) or the file itself")
    return file


@register_format("scienceqa",
                 description="ScienceQA's official problems.json (question, choices, answer index, hint, image) with "
                             "pid_splits.json or each problem's split field; images/<split>/<pid>/; options: "
                             "image_only, matcher=vlmevalkit|strict, circular, rank_by=letter|text, class_field",
                 source="lupantech/ScienceQA data/scienceqa folder")
def load_scienceqa(
    path: str,
    *,
    image_root: str | None = None,
    image_only: bool = False,
    class_field: str | None = None,
    splits: Sequence[str] | str | None = None,
    matcher: str = "vlmevalkit",
    circular: bool = False,
    rank_by: str = "letter",
    post_prompt: str = POST_PROMPT,
    name: str | None = None,
) -> ImageDataset:
    """``path``: ScienceQA's ``data/scienceqa`` folder (or its problems.json). Splits come from ``pid_splits.json``
    next to it (train, val, test, minitrain, minival, minitest, ...) or, without it, from each problem's ``split``
    field. A problem's image is ``<image_root>/<its split>/<pid>/<its image field>``; ``image_root`` defaults to the
    ``images`` folder next to problems.json, or that folder itself when there is none. A problem without an image
    is a text-only question (``image_only``: leave those out, as ScienceQA-IMG does). The prompt is lmms-eval's:
    ``Context: <hint>`` when there is a hint, the question, the lettered choices, ``post_prompt``. ``class_field``
    names a problem field holding the image's class, for the mischoice rate."""
    file = _problems_file(path)
    settings = choice_settings(matcher, circular, rank_by, "scienceqa")
    problems = _read_json(file)
    if not isinstance(problems, dict) or not problems:
        raise DataError(f"{file}: expected a JSON object of problems keyed by pid (ScienceQA's problems.json)")
    folder = file.parent
    root = (folder / Path(image_root).expanduser()) if image_root is not None else (
        folder / "images" if (folder / "images").is_dir() else folder)
    split_file = folder / PID_SPLITS
    members: dict[str, list[str]] = {}
    if split_file.is_file():
        listed = _read_json(split_file)
        if not isinstance(listed, dict) or not all(isinstance(v, list) for v in listed.values()):
            raise DataError(f"{split_file}: expected an object of split name -> list of pids")
        members = {str(k): [str(p) for p in v] for k, v in listed.items()}
        for split_name, pids in members.items():
            missing = next((p for p in pids if p not in problems), None)
            if missing is not None:
                raise DataError(f"{split_file}: split '{split_name}' lists pid {missing}, which {file.name} does not "
                                "have")
    else:
        for pid, problem in problems.items():
            split = problem.get("split") if isinstance(problem, dict) else None
            if not isinstance(split, str) or not split:
                raise DataError(f"{file}: problem {pid} has no 'split' field and there is no {PID_SPLITS} next to it")
            members.setdefault(split, []).append(str(pid))
    chosen = wanted_splits(list(members), splits, f"scienceqa folder {folder}")
    used = {"question", "choices", "answer", "hint", "image"}
    out: dict[str, list[Sample]] = {}
    for split_name in chosen:
        samples: list[Sample] = []
        for pid in members[split_name]:
            problem = problems[pid]
            where = f"{file} (problem {pid})"
            if not isinstance(problem, dict):
                raise DataError(f"{where}: expected an object, found {type(problem).__name__}")
            for key in ("question", "choices", "answer"):
                if key not in problem:
                    raise DataError(f"{where}: no '{key}' field; ScienceQA problems have question, choices, answer")
            image_name = problem.get("image")
            if image_only and not image_name:
                continue
            image = None
            if image_name:
                image_split = problem.get("split") or split_name
                image = root / str(image_split) / pid / str(image_name)
                if not image.is_file():
                    raise DataError(f"{where}: image file {image} does not exist (images are read from "
                                    f"{root}/<split>/<pid>/; set image_root= to another folder)")
                image = str(image)
            options = option_texts(problem["choices"], f"{where} (field 'choices')")
            answer = problem["answer"]
            if not isinstance(answer, int) or isinstance(answer, bool):
                raise DataError(f"{where}: 'answer' must be the 0-based index of the right choice, found {answer!r}")
            letter = answer_letter(answer, options, f"{where} (field 'answer')")
            meta = {k: v for k, v in problem.items() if k not in used}
            image_class = problem.get(class_field) if class_field else None
            samples.append(choice_sample(pid, image, problem["question"], options, letter,
                                         hint=problem.get("hint") or None, image_class=image_class,
                                         post_prompt=post_prompt, meta=meta, where=where))
        out[split_name] = samples
    return choice_dataset(name or folder.name, out, settings, source=str(file),
                          description=f"ScienceQA problems from {file}")
