"""Tiny replicas of benchmark files, written in each benchmark's own published schema (never by unforget), with
a few PIL images: VQAv2 questions + annotations, VizWiz, TextVQA, GQA, POPE, COCO captions, Karpathy splits."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLOURS = [(200, 30, 30), (30, 30, 200), (30, 160, 30), (220, 200, 40)]


def write_image(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), COLOURS[k % len(COLOURS)]).save(path)


VQA_QUESTIONS = [  # (question_id, image_id, question, ten human answers, question_type, answer_type)
    (1001, 42, "What colour is the square?", ["red"] * 7 + ["dark red", "red", "maroon"], "what color is the",
     "other"),
    (1002, 42, "How many shapes are there?", ["2"] * 3 + ["two"] * 2 + ["3"] * 5, "how many", "number"),
    (1003, 7, "Is it blue?", ["yes"] * 10, "is it", "yes/no"),
]


def write_vqav2(root: Path, subtype: str = "val2014") -> tuple[Path, Path]:
    """v2_OpenEnded_mscoco_<subtype>_questions.json + v2_mscoco_<subtype>_annotations.json, images in <subtype>/."""
    root.mkdir(parents=True, exist_ok=True)
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                 "data_subtype": subtype,
                 "questions": [{"image_id": img, "question": q, "question_id": qid}
                               for qid, img, q, *_ in VQA_QUESTIONS]}
    annotations = {"info": {}, "license": {}, "data_subtype": subtype, "annotations": [
        {"question_type": qtype, "multiple_choice_answer": max(set(answers), key=answers.count),
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)],
         "image_id": img, "answer_type": atype, "question_id": qid}
        for qid, img, _q, answers, qtype, atype in VQA_QUESTIONS]}
    qfile = root / f"v2_OpenEnded_mscoco_{subtype}_questions.json"
    afile = root / f"v2_mscoco_{subtype}_annotations.json"
    qfile.write_text(json.dumps(questions))
    afile.write_text(json.dumps(annotations))
    for k, img in enumerate(sorted({img for _, img, *_ in VQA_QUESTIONS})):
        write_image(root / subtype / f"COCO_{subtype}_{img:012d}.jpg", k)
    return qfile, afile


def write_vizwiz(root: Path) -> Path:
    """VizWiz val.json: a list of {image, question, answers: [{answer, answer_confidence}], answerable}."""
    items = [{"image": f"VizWiz_val_{k:08d}.jpg", "question": q, "answerable": 1, "answer_type": "other",
              "answers": [{"answer": a, "answer_confidence": "yes"} for a in answers]}
             for k, (_qid, _img, q, answers, *_r) in enumerate(VQA_QUESTIONS)]
    for k in range(len(items)):
        write_image(root / f"VizWiz_val_{k:08d}.jpg", k)
    file = root / "val.json"
    file.write_text(json.dumps(items))
    return file


def write_textvqa(root: Path) -> Path:
    """TextVQA_0.5.1_val.json: {"data": [{question, image_id, answers: [texts], question_id}]}, images <id>.jpg."""
    data = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question": q, "image_id": f"{img:016x}", "question_id": qid, "answers": answers, "image_classes": []}
        for qid, img, q, answers, *_r in VQA_QUESTIONS]}
    for k, (_qid, img, *_r) in enumerate(VQA_QUESTIONS):
        write_image(root / "train_images" / f"{img:016x}.jpg", k)
    file = root / "TextVQA_0.5.1_val.json"
    file.write_text(json.dumps(data))
    return file


GQA_QUESTIONS = {
    "20968424": {"imageId": "n161313", "question": "Is the square to the left of the circle?", "answer": "yes",
                 "fullAnswer": "Yes, the square is to the left of the circle.",
                 "types": {"structural": "verify", "semantic": "rel", "detailed": "relVerify"}},
    "201307251": {"imageId": "n235859", "question": "What colour is the circle?", "answer": "blue",
                  "fullAnswer": "The circle is blue.",
                  "types": {"structural": "query", "semantic": "attr", "detailed": "colorObj"}},
    "20968425": {"imageId": "n161313", "question": "Which side is the circle on?", "answer": "right",
                 "fullAnswer": "The circle is on the right of the image.",
                 "types": {"structural": "query", "semantic": "rel", "detailed": "positionQuery"}},
}


def write_gqa(root: Path) -> Path:
    """testdev_balanced_questions.json keyed by question id, images in images/<imageId>.jpg."""
    root.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(sorted({q["imageId"] for q in GQA_QUESTIONS.values()})):
        write_image(root / "images" / f"{image}.jpg", k)
    file = root / "testdev_balanced_questions.json"
    file.write_text(json.dumps(GQA_QUESTIONS))
    return file


POPE_ROWS = [("COCO_val2014_000000310196.jpg", "Is there a snowboard in the image?", "yes"),
             ("COCO_val2014_000000310196.jpg", "Is there a dog in the image?", "no"),
             ("COCO_val2014_000000210789.jpg", "Is there a person in the image?", "yes"),
             ("COCO_val2014_000000210789.jpg", "Is there a car in the image?", "no")]


def write_pope(root: Path) -> Path:
    """coco_pope_adversarial.json: JSON lines {question_id, image, text, label}, images in val2014/."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question_id": k + 1, "image": image, "text": text, "label": label})
             for k, (image, text, label) in enumerate(POPE_ROWS)]
    for k, image in enumerate(sorted({r[0] for r in POPE_ROWS})):
        write_image(root / "val2014" / image, k)
    file = root / "coco_pope_adversarial.json"
    file.write_text("\n".join(lines) + "\n")
    return file


CAPTIONS = {  # image id -> captions
    391895: ["A man with a red helmet on a small moped on a dirt road.", "Man riding a motor bike on a dirt road.",
             "A man in a red shirt rides a motorbike."],
    522418: ["A woman wearing a net on her head cutting a cake.", "A woman cutting a large white sheet cake.",
             "A woman cuts a cake in a kitchen."],
    184613: ["A child holding a flowered umbrella and petting a yak.", "A young man holding an umbrella next to "
             "a herd of cattle.", "A boy with an umbrella near cows."],
}


def write_coco_captions(root: Path, subtype: str = "val2014") -> Path:
    """annotations/captions_<subtype>.json with images in <subtype>/."""
    images = [{"license": 1, "file_name": f"COCO_{subtype}_{i:012d}.jpg", "height": 16, "width": 16, "id": i}
              for i in CAPTIONS]
    annotations = [{"image_id": i, "id": 100 * i + k, "caption": c}
                   for i, caps in CAPTIONS.items() for k, c in enumerate(caps)]
    for k, i in enumerate(CAPTIONS):
        write_image(root / subtype / f"COCO_{subtype}_{i:012d}.jpg", k)
    file = root / "annotations" / f"captions_{subtype}.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return file


def write_karpathy_coco(root: Path) -> Path:
    """dataset_coco.json: images with filepath, filename, split, sentences[].raw / tokens, cocoid, imgid."""
    splits = ["test", "test", "val"]
    images = []
    for k, (i, caps) in enumerate(CAPTIONS.items()):
        name = f"COCO_val2014_{i:012d}.jpg"
        write_image(root / "val2014" / name, k)
        images.append({"filepath": "val2014", "sentids": list(range(3 * k, 3 * k + 3)), "filename": name,
                       "imgid": k, "split": splits[k], "cocoid": i,
                       "sentences": [{"tokens": c.lower().rstrip(".").split(), "raw": c, "imgid": k,
                                      "sentid": 3 * k + j} for j, c in enumerate(caps)]})
    file = root / "dataset_coco.json"
    file.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return file


def write_karpathy_flickr(root: Path) -> Path:
    """dataset_flickr30k.json: no filepath; images <filename> in one folder."""
    images = []
    for k, (i, caps) in enumerate(CAPTIONS.items()):
        name = f"{1000092795 + k}.jpg"
        write_image(root / "flickr30k-images" / name, k)
        images.append({"sentids": [0], "imgid": k, "split": "test", "filename": name,
                       "sentences": [{"tokens": c.split(), "raw": c, "imgid": k, "sentid": j}
                                     for j, c in enumerate(caps)]})
    file = root / "dataset_flickr30k.json"
    file.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return file
