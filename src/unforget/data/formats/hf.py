"""``hf``: a Hugging Face ``datasets`` dataset on local disk (save_to_disk folder, parquet files, or an image folder
through the imagefolder builder); never fetched."""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...errors import DataError
from ...registry import did_you_mean
from ..types import ImageDataset, Sample
from ._common import (SINGLE_SPLIT, class_names_option, is_image, register_format, templates_or_default,
                      wanted_splits)
from ._benchmark import BENCHMARK_METRICS, CAPTION_PROMPT, check_caption_metric, SHORT_ANSWER_PROMPT, answer_list_option
from ._table import columns_error, index_labels, sample_answer, sample_question

@contextlib.contextmanager
def _datasets_offline() -> Iterator[None]:
    """Hold ``datasets`` offline while it builds from local files, so nothing is fetched."""
    import datasets  # start-up time: datasets (and pyarrow) load only when an hf dataset is read

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


_PARQUET_SHARD = re.compile(r"^(?P<split>.+?)(?:-\d{5}-of-\d{5})?$")


def _parquet_splits(files: list[Path], root: Path, split: str) -> dict[str, list[Path]]:
    """Hub layouts: data/train-00000-of-00001.parquet, train.parquet, <split>/0000.parquet."""
    out: dict[str, list[Path]] = {}
    for file in files:
        if file.stem.isdigit():
            key = file.parent.name if file.parent != root else split
        else:
            key = _PARQUET_SHARD.match(file.stem)["split"]  # type: ignore[index]
        out.setdefault(key, []).append(file)
    return out


def _hf_tables(root: Path, split: str, splits: Sequence[str] | str | None) -> dict[str, tuple[Any, Any]]:
    """split -> (datasets.Features, pyarrow.Table) for a saved dataset, parquet files or an image folder."""
    # start-up time, as above: datasets and pyarrow load only when an hf dataset is read
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"hf dataset {root}"
    if root.is_file() and root.suffix == ".parquet":
        parquet = {split: [root]}
    elif (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as exc:  # arrow, json and file errors from a damaged save
            raise DataError(f"{root}: cannot read the saved dataset ({type(exc).__name__}: {exc}); save it again "
                            "with save_to_disk") from exc
        if isinstance(loaded, datasets.Dataset):
            loaded = {str(loaded.split) if loaded.split else split: loaded}
        chosen = wanted_splits(list(loaded), splits, where)
        return {s: (loaded[s].features, loaded[s].with_format("arrow")[:]) for s in chosen}
    else:
        files = sorted(root.rglob("*.parquet"))
        parquet = _parquet_splits(files, root, split) if files else {}
    if parquet:
        tables = {}
        for s in wanted_splits(list(parquet), splits, where):
            try:
                table = pa.concat_tables([pq.read_table(f) for f in parquet[s]])
            except Exception as exc:  # ArrowInvalid, schema mismatches between shards, OSError
                raise DataError(f"{root}: cannot read the parquet files of split '{s}' "
                                f"({', '.join(f.name for f in parquet[s])}): {exc}") from exc
            tables[s] = (datasets.Features.from_arrow_schema(table.schema), table)
        return tables
    if not any(is_image(p) for p in root.rglob("*")):
        raise DataError(f"{root}: neither a save_to_disk folder (dataset_dict.json / state.json), parquet files, "
                        "nor image files for the imagefolder builder")
    with tempfile.TemporaryDirectory(prefix="unforget-hf-") as cache, _datasets_offline():
        try:
            built = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=cache, keep_in_memory=True)
        except Exception as exc:  # the builder's own errors (bad metadata.csv, mixed layouts...)
            raise DataError(f"{root}: the datasets imagefolder builder failed: {exc}") from exc
        chosen = wanted_splits(list(built), splits, where)
        return {s: (built[s].features, built[s].with_format("arrow")[:]) for s in chosen}


def _hf_image(value: Any, base: Path, where: str) -> Any:
    """An Image-feature cell ({bytes, path}), raw bytes or a path -> bytes or an existing path."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        file = Path(value)
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            raise DataError(f"{where}: image file {file} does not exist")
        return str(file)
    raise DataError(f"{where}: no image (found {type(value).__name__}); the image column must hold images, "
                    "bytes or paths")


def _human_answers(value: Any, where: str) -> list[str]:
    """Human answers of a row: a list of texts or of ``{"answer": text}`` (VQAv2 on the Hub)."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of answers, found {value!r}")
    out = [v.get("answer") if isinstance(v, dict) else v for v in value]
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in out):
        raise DataError(f"{where}: answers must be texts or {{\"answer\": text}}, found {value[:3]!r}")
    return [str(v) for v in out]


def get_scorer_name(metric: str, task: str) -> None:
    """Refuse an unknown metric, or one on a set that is not free-answer VQA, before any model loads."""
    if task == "caption":
        check_caption_metric(metric, "hf")
        return
    if metric not in BENCHMARK_METRICS:
        raise DataError(f"hf: unknown metric '{metric}'.{did_you_mean(metric, list(BENCHMARK_METRICS))} Metrics: "
                        f"{', '.join(BENCHMARK_METRICS)}.")
    if task != "vqa":
        raise DataError(f"hf: metric '{metric}' scores free answers; this dataset is a {task} set")


def _describe_columns(features: Any) -> str:
    return ", ".join(f"{k} ({getattr(v, '_type', type(v).__name__)})" for k, v in features.items())


@register_format("hf", description="a datasets save_to_disk folder, parquet files, or an image folder via the "
                 "imagefolder builder; offline", source="Hugging Face datasets on local disk")
def load_hf(
    path: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    question_column: str = "question",
    answer_column: str = "answer",
    id_column: str | None = None,
    class_names: Sequence[str] | str | None = None,
    split: str = SINGLE_SPLIT,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
    metric: str = "",
    answers_column: str | None = None,
    captions_column: str | None = None,
    answer_list: Sequence[str] | str | None = None,
) -> ImageDataset:
    """A dataset from ``datasets``, read from disk only. The image column is the first ``Image`` feature (or
    ``image_column``); a ``ClassLabel`` column (or ``label_column``) makes it classification with the feature's
    names as classes, otherwise ``question_column`` / ``answer_column`` make it VQA. A single saved
    ``Dataset`` or parquet files without split names become the split ``split``.

    Benchmarks: ``metric`` names the scorer (``vqa``, ``exact``, ``pope``: evaluation/scorers.py);
    ``answers_column`` holds the human answers (texts, or VQAv2's ``[{"answer": ...}]``) the VQA accuracy counts;
    ``captions_column`` (a list of captions per row) makes a captioning set instead; ``answer_list`` is what rank
    mode ranks on a free-answer set."""

    import datasets  # start-up time, as above

    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"hf: {root} does not exist; check the path after 'hf:' (datasets are read from disk only)")
    tables = _hf_tables(root, split, splits)
    base = root if root.is_dir() else root.parent
    given_names = class_names_option(class_names, "hf")
    out: dict[str, list[Sample]] = {}
    names: list[str] | None = None
    task = "vqa"
    for split_name, (features, table) in tables.items():
        where = f"{root} split '{split_name}'"
        cols = list(features)
        img_col = image_column or next((c for c, f in features.items() if isinstance(f, datasets.Image)),
                                       next((c for c in ("image", "img") if c in cols), None))
        if img_col is None or img_col not in cols:
            raise DataError(f"{where}: no image column; columns: {_describe_columns(features)}. Set image_column=")
        for column, option in ((answers_column, "answers_column"), (captions_column, "captions_column")):
            if column and column not in cols:
                raise columns_error(where, cols, column, option)
        lab_col = label_column or next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        if captions_column:
            lab_col = None
        if lab_col is None and not (question_column in cols and answer_column in cols) and "label" in cols:
            lab_col = "label"
        if lab_col is not None and lab_col not in cols:
            raise columns_error(where, cols, lab_col, "label_column")
        if lab_col is None and not captions_column:
            for column, option in ((question_column, "question_column"), (answer_column, "answer_column")):
                if column not in cols:
                    raise DataError(f"{where}: no label column (ClassLabel) and no '{column}' column; columns: "
                                    f"{_describe_columns(features)}. Set label_column= for classification or "
                                    f"{option}= for VQA.")
        if id_column and id_column not in cols:
            raise columns_error(where, cols, id_column, "id_column")
        n = table.num_rows
        images = table.column(img_col).to_pylist()
        ids = ([str(v) for v in table.column(id_column).to_pylist()] if id_column
               else [f"{split_name}/{i}" for i in range(n)])
        questions = table.column(question_column).to_pylist() if question_column in cols else [None] * n
        labels: list[int | None] = [None] * n
        if lab_col is not None:
            task = "classification"
            values = table.column(lab_col).to_pylist()
            feature = features[lab_col]
            split_names = given_names or (list(feature.names) if isinstance(feature, datasets.ClassLabel) else None)
            if names is not None and split_names is None:
                split_names = names  # keep label strings of later splits on the first split's class list
            labels, split_names = index_labels(  # type: ignore[assignment]
                values, split_names, lambda i, w=where, c=lab_col: f"{w} row {i} (column '{c}')")
            if names is not None and split_names != names:
                raise DataError(f"{where}: its class list differs from the other splits'; pass class_names")
            names = split_names
            answers: list[tuple[str | None, list[str] | None]] = [(None, None)] * n
        elif captions_column:
            task = "caption"
            answers = [sample_answer(v, f"{where} row {i} (column '{captions_column}')")
                       for i, v in enumerate(table.column(captions_column).to_pylist())]
            answers = [(all_[0] if all_ else one, all_ or [one]) for one, all_ in answers]  # type: ignore[misc]
        else:
            answers = [sample_answer(v, f"{where} row {i} (column '{answer_column}')")
                       for i, v in enumerate(table.column(answer_column).to_pylist())]
        samples = []
        for i in range(n):
            question = sample_question(questions[i], required=lab_col is None and not captions_column,
                                 where=f"{where} row {i} (column '{question_column}')")
            answer, all_answers = answers[i]
            if answers_column:
                all_answers = _human_answers(table.column(answers_column)[i].as_py(),
                                             f"{where} row {i} (column '{answers_column}')")
            samples.append(Sample(
                id=ids[i], image=_hf_image(images[i], base, f"{where} row {i}"), label=labels[i],
                question=question, answer=answer,
                meta=({} if not all_answers else
                      {"captions": all_answers} if captions_column else {"answers": all_answers}),
            ))
        if len(set(ids)) != n:
            dup = next(k for k, c in Counter(ids).items() if c > 1)
            raise DataError(f"{where}: sample id '{dup}' appears more than once in column '{id_column}'")
        out[split_name] = samples
    benchmark_prompt = {"caption": [CAPTION_PROMPT], "vqa": [SHORT_ANSWER_PROMPT] if metric else []}.get(task, [])
    ds = ImageDataset(
        name=name or root.name, task=task, splits=out, class_names=names or [],  # type: ignore[arg-type]
        templates=templates_or_default(templates) if task == "classification" else list(
            templates if templates is not None else benchmark_prompt),
        source=str(root), description=f"Hugging Face dataset from {root}", metric=metric,
        answer_list=answer_list_option(answer_list, "hf"),
    )
    if metric:
        get_scorer_name(metric, task)
        lacking = next((s for ss in out.values() for s in ss if not s.meta.get("answers")), None)
        if metric == "vqa" and lacking is not None:
            raise DataError(f"hf dataset {root} sample {lacking.id}: metric=vqa scores an answer against the human "
                            "answers; give them with answers_column= (or as a list in the answer column)")
        not_yes_no = next((s for ss in out.values() for s in ss if str(s.answer).strip().lower() not in ("yes", "no")),
                          None)
        if metric == "pope" and not_yes_no is not None:
            raise DataError(f"hf dataset {root} sample {not_yes_no.id}: the answer is {not_yes_no.answer!r}; POPE "
                            "answers are 'yes' or 'no'")
    ds.check_labels()
    return ds
