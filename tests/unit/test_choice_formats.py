"""The multiple-choice formats on replicas written in each official schema by the test: ScienceQA's problems.json /
pid_splits.json / images/<split>/<pid>/, VLMEvalKit's MMBench TSV (base64 PNG cells, image references, rotated
rows), and question/options/answer JSON lines."""

import base64
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from unforget.cli.ls import catalogue
from unforget.data import load_dataset
from unforget.errors import ConfigError, DataError

LMMS_POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."  # scienceqa_img.yaml


def sqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """lmms-eval's ScienceQA prompt, copied from EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/scienceqa/utils.py
    (Apache License 2.0), the "default" format branch."""
    context, question, choices = doc["hint"], doc["question"], doc["choices"]
    len_choices = len(choices)
    options = [chr(ord("A") + i) for i in range(len_choices)]
    choices_str = "\n".join([f"{option}. {choice}" for option, choice in zip(options, choices)])
    if context:
        context = f"Context: {context}\n"
    post_prompt = lmms_eval_specific_kwargs["post_prompt"]
    pre_prompt = lmms_eval_specific_kwargs["pre_prompt"]
    return f"{pre_prompt}{context}{question}\n{choices_str}{post_prompt}"


def png(colour, size=8):
    img = Image.new("RGB", (size, size), colour)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def noisy_png(size=256, seed=0):
    """A PNG that does not compress: its base64 cell is larger than the csv module's default 128 KiB field limit."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------- ScienceQA

PROBLEMS = {
    "1": {"question": "Which animal's feet are also adapted for grabbing prey?", "choices": ["bald eagle", "wood duck"],
          "answer": 0, "hint": "Eurasian eagle-owls have talons.", "image": "image.png", "task": "closed choice",
          "grade": "grade3", "subject": "natural science", "topic": "biology", "category": "Adaptations",
          "skill": "Animal adaptations: feet", "lecture": "...", "solution": "...", "split": "test"},
    "2": {"question": "Which word would you find on a dictionary page?", "choices": ["sad", "stamp", "shout"],
          "answer": 2, "hint": "", "image": None, "task": "closed choice", "grade": "grade2",
          "subject": "language science", "topic": "reference-skills", "category": "Use guide words",
          "skill": "...", "lecture": "", "solution": "", "split": "test"},
    "3": {"question": "Identify the question.", "choices": ["A", "B", "C", "D"], "answer": 3, "hint": "",
          "image": "image.png", "task": "closed choice", "grade": "grade5", "subject": "natural science",
          "topic": "x", "category": "y", "skill": "z", "lecture": "", "solution": "", "split": "train"},
}


def scienceqa_folder(root, with_splits=True):
    folder = root / "scienceqa"
    folder.mkdir()
    (folder / "problems.json").write_text(json.dumps(PROBLEMS))
    if with_splits:
        (folder / "pid_splits.json").write_text(json.dumps({"train": ["3"], "val": [], "test": ["1", "2"],
                                                            "minitest": ["1"]}))
    for pid, p in PROBLEMS.items():
        if p["image"]:
            (folder / "images" / p["split"] / pid).mkdir(parents=True)
            (folder / "images" / p["split"] / pid / p["image"]).write_bytes(png((40, 80, 120)))
    return folder


def test_scienceqa_reads_the_official_layout_with_lmms_eval_prompts(tmp_path):
    folder = scienceqa_folder(tmp_path)
    ds = load_dataset(f"scienceqa:{folder}")
    assert ds.task == "multiple_choice" and list(ds.splits) == ["train", "val", "test", "minitest"]
    test = ds.split("test")
    assert [s.id for s in test] == ["1", "2"] and [s.answer for s in test] == ["A", "C"]
    kwargs = {"pre_prompt": "", "post_prompt": LMMS_POST_PROMPT}
    assert [s.question for s in test] == [sqa_doc_to_text(PROBLEMS[s.id], kwargs) for s in test]
    assert test[0].image == str(folder / "images" / "test" / "1" / "image.png") and test[1].image is None
    assert test[0].meta["subject"] == "natural science" and test[0].meta["options"] == {"A": "bald eagle",
                                                                                       "B": "wood duck"}
    assert [s.id for s in ds.split("minitest")] == ["1"]  # images still under the problem's own split folder
    assert [s.id for s in load_dataset(f"scienceqa:{folder}?image_only=true").split("test")] == ["1"]


def test_scienceqa_without_pid_splits_uses_each_problems_split(tmp_path):
    folder = scienceqa_folder(tmp_path, with_splits=False)
    ds = load_dataset(f"scienceqa:{folder / 'problems.json'}")
    assert sorted(ds.splits) == ["test", "train"] and [s.answer for s in ds.split("train")] == ["D"]


def test_scienceqa_errors_name_the_problem(tmp_path):
    folder = scienceqa_folder(tmp_path)
    (folder / "images" / "test" / "1" / "image.png").unlink()
    with pytest.raises(DataError, match=r"problem 1\).*image file .*does not exist"):
        load_dataset(f"scienceqa:{folder}")
    broken = dict(PROBLEMS, **{"1": {**PROBLEMS["1"], "answer": 5, "image": None}})
    (folder / "problems.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match=r"problem 1.*answer index 5 is outside the 2 options"):
        load_dataset(f"scienceqa:{folder}")


# ------------------------------------------------------------------------------------------------------- MMBench TSV

HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]


def write_tsv(path, rows, header=HEADER):
    """As pandas' DataFrame.to_csv(sep="\\t") writes VLMEvalKit's TSVs: minimal quoting, NaN as an empty cell."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def mmbench_rows():
    big = base64.b64encode(noisy_png()).decode()
    small = base64.b64encode(png((200, 10, 10))).decode()
    return big, [
        [0, "Which position is\nthe man in?", "", "Fowler's position", "Upright position", "Lying", "Sitting", "A",
         "action", "perception", "dev", big],
        [1, "What colour is the square?", "Look closely.", "red", "green", "", "", "A", "colour", "perception",
         "dev", small],
        [2, "Is the square red?", "", "yes", "no", "", "", "A", "colour", "perception", "dev", "1"],  # image of row 1
        [1000000, "Which position is\nthe man in?", "", "Upright position", "Lying", "Sitting", "Fowler's position",
         "D", "action", "perception", "dev", "0"],
    ]


def test_mmbench_tsv_reads_vlmevalkit_rows(tmp_path):
    big, rows = mmbench_rows()
    assert len(big) > 131072  # the csv module refuses such a field unless its limit is raised
    ds = load_dataset(f"mmbench-tsv:{write_tsv(tmp_path / 'MMBench_DEV_EN.tsv', rows)}")
    test = ds.split("test")
    assert [s.id for s in test] == ["0", "1", "2"]  # the rotated row belongs to question 0, asked only in circular
    assert [s.answer for s in test] == ["A", "A", "A"]
    assert test[0].meta["options"] == {"A": "Fowler's position", "B": "Upright position", "C": "Lying",
                                       "D": "Sitting"}
    assert test[1].meta["options"] == {"A": "red", "B": "green"}  # empty C, D cells: no such options
    assert test[0].meta["stem"] == "Which position is\nthe man in?"
    assert test[1].question.startswith("Context: Look closely.\nWhat colour is the square?\nA. red\nB. green")
    assert test[0].meta["category"] == "action" and test[0].meta["l2-category"] == "perception"
    assert test[0].meta["rotations"] == [{"options": {"A": "Upright position", "B": "Lying", "C": "Sitting",
                                                      "D": "Fowler's position"}, "answer": "D", "index": 1000000}]
    assert np.array_equal(np.asarray(test[0].load_image()), np.asarray(Image.open(io.BytesIO(noisy_png()))))
    assert test[2].load_image().getpixel((0, 0)) == (200, 10, 10)  # the cell "1" is row 1's image
    assert ds.choice.matcher == "vlmevalkit" and not ds.choice.circular
    strict = load_dataset(f"mmbench-tsv:{tmp_path / 'MMBench_DEV_EN.tsv'}?matcher=strict&circular=true")
    assert strict.choice.matcher == "strict" and strict.choice.circular
    by_split = load_dataset(f"mmbench-tsv:{tmp_path / 'MMBench_DEV_EN.tsv'}?split_column=split")
    assert list(by_split.splits) == ["dev"]


def test_mmbench_tsv_errors_name_the_line_and_the_fix(tmp_path):
    _, rows = mmbench_rows()
    no_answer = [r[:7] + r[8:] for r in rows]
    header = HEADER[:7] + HEADER[8:]
    with pytest.raises(DataError, match="no 'answer' column.*test TSVs hide their answers"):
        load_dataset(f"mmbench-tsv:{write_tsv(tmp_path / 'test.tsv', no_answer, header)}")
    bad = [list(r) for r in rows]
    bad[1][-1] = "@@not base64@@" * 10
    with pytest.raises(DataError, match=r"bad\.tsv:4: the image cell is not valid base64"):
        load_dataset(f"mmbench-tsv:{write_tsv(tmp_path / 'bad.tsv', bad)}")
    wrong = [list(r) for r in rows]
    wrong[1][7] = "C"  # C is empty in that row
    with pytest.raises(DataError, match=r"wrong\.tsv:4: answer 'C' is not one of the row's options \(A, B\)"):
        load_dataset(f"mmbench-tsv:{write_tsv(tmp_path / 'wrong.tsv', wrong)}")
    with pytest.raises(ConfigError, match="matcher 'vlmevalkt' is unknown. Did you mean 'vlmevalkit'"):
        load_dataset(f"mmbench-tsv:{tmp_path / 'wrong.tsv'}?matcher=vlmevalkt")


# ------------------------------------------------------------------------------------------------------- MC JSONL


def test_mc_jsonl_takes_letters_indices_or_option_text(tmp_path):
    (tmp_path / "img.png").write_bytes(png((0, 0, 255)))
    rows = [
        {"image": "img.png", "question": "Which bird?", "options": ["owl", "goldfinch", "crow"], "answer": "b",
         "image_class": "goldfinch", "source": "cub"},
        {"image": "img.png", "question": "Which bird?", "options": ["owl", "goldfinch"], "answer": 0},
        {"image": None, "question": "2 + 2?", "options": {"A": "3", "B": "4"}, "answer": "4", "hint": "Add."},
    ]
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(f"mc-jsonl:{tmp_path / 'mc.jsonl'}")
    s1, s2, s3 = ds.split("test")
    assert [s1.answer, s2.answer, s3.answer] == ["B", "A", "B"]
    assert s1.meta["image_class"] == "goldfinch" and s1.meta["source"] == "cub" and s3.image is None
    assert s3.question == "Context: Add.\n2 + 2?\nA. 3\nB. 4\nAnswer with the option's letter from the given " \
                          "choices directly."
    assert load_dataset(f"mc-jsonl:{tmp_path / 'mc.jsonl'}?post_prompt=").split("test")[1].question == \
        "Which bird?\nA. owl\nB. goldfinch"


@pytest.mark.parametrize(("row", "message"), [
    ({"image": "img.png", "question": "q", "options": ["x"], "answer": "A"}, "needs two options at least"),
    ({"image": "img.png", "question": "q", "options": ["x", "y"], "answer": "C"}, "neither an option letter"),
    ({"image": "img.png", "question": "q", "options": ["x", ""], "answer": "A"}, "option B is ''"),
    ({"image": "img.png", "question": "q", "answer": "A"}, "no column 'options'"),
    ({"image": "nope.png", "question": "q", "options": ["x", "y"], "answer": "A"}, "image file .*nope.png"),
])
def test_mc_jsonl_errors_name_the_line(tmp_path, row, message):
    (tmp_path / "img.png").write_bytes(png((0, 0, 255)))
    good = {"image": "img.png", "question": "q", "options": ["x", "y"], "answer": "A"}
    (tmp_path / "mc.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"mc\.jsonl:2.*{message}"):
        load_dataset(f"mc-jsonl:{tmp_path / 'mc.jsonl'}")


def test_ls_formats_lists_the_choice_formats_with_their_options():
    (_, _, rows), = list(catalogue("formats"))
    listed = {row[0]: " ".join(map(str, row[1:])) for row in rows}  # the description and the options column
    for name in ("scienceqa", "mmbench-tsv", "mc-jsonl"):
        assert "matcher=vlmevalkit|strict" in listed[f"{name}:PATH"]
        assert all(option in listed[f"{name}:PATH"] for option in ("matcher", "circular", "rank_by", "post_prompt"))
