"""``llava-conversations``: LLaVA's instruction-tuning JSON (``llava_v1_5_mix665k.json``, ``llava_instruct_150k.json``).

A list of ``{"id", "image" (optional), "conversations": [{"from": "human" | "gpt", "value": ...}, ...]}``: multi-turn,
with text-only samples (no ``image``) mixed in. The ``<image>`` placeholder sits in the first human turn of an image
sample. As LLaVA's ``preprocess`` (``llava/train/train.py``) does, a conversation that opens with a ``gpt`` turn
starts at its first ``human`` turn. Image paths are relative to ``image_root`` (LLaVA's ``--image_folder``), by
default the JSON file's folder; an image is opened only when the sample is used.
"""

from __future__ import annotations

from ...errors import DataError
from ..types import ImageDataset
from ._common import existing_file, register_format
from ._conversation import (conversation_dataset, conversation_sample, image_list, image_root_of, read_records,
                            resolve_image, text_field)

ROLES = {"human": "user", "gpt": "assistant"}


@register_format("llava-conversations",
                 description="LLaVA's conversation JSON (llava_v1_5_mix665k): multi-turn, text-only samples mixed in",
                 source="local LLaVA instruction JSON / JSONL file")
def load_llava_conversations(path: str, *, image_root: str | None = None, split: str = "train",
                             name: str | None = None) -> ImageDataset:
    """Every sample of the file, in order, in split ``split``; a sample's loss goes on every ``gpt`` turn."""
    file = existing_file(path, "llava-conversations")
    root = image_root_of(file, image_root)
    samples = []
    for where, obj in read_records(file):
        if "id" not in obj:
            raise DataError(f"{where}: no 'id'; LLaVA samples are {{\"id\", \"image\", \"conversations\"}}")
        turns_raw = obj.get("conversations")
        if not isinstance(turns_raw, list) or not turns_raw:
            raise DataError(f"{where}: 'conversations' must be a non-empty list of {{\"from\", \"value\"}} turns")
        turns = []
        for k, turn in enumerate(turns_raw):
            if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or turn["from"] not in ROLES:
                raise DataError(f"{where}: turn {k + 1} must be {{\"from\": \"human\" | \"gpt\", \"value\": ...}}, "
                                f"got {turn!r:.120}")
            turns.append((ROLES[turn["from"]], text_field(turn.get("value"), where, f"turn {k + 1}'s value",
                                                          allow_empty=True)))
        if turns[0][0] != "user":  # LLaVA: `if roles[source[0]["from"]] != roles["human"]: source = source[1:]`
            turns = turns[1:]
        images = [resolve_image(p, root) for p in image_list(obj.get("image"), where, "image")]
        samples.append(conversation_sample(str(obj["id"]), turns, system="", images=images,
                                           where=f"{where} (id {obj['id']})"))
    return conversation_dataset(name or file.stem, samples, split=split, fmt="llava-conversations", file=file,
                                description="LLaVA conversations")
