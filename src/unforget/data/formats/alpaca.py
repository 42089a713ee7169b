"""``alpaca``: LLaMA-Factory's alpaca format (``data/README.md``, ``AlpacaDatasetConverter`` in
``src/llamafactory/data/converter.py``).

A list of ``{"instruction", "input" (optional), "output", "system" (optional), "history" (optional), "images"
(optional)}``. The user turn is ``instruction\\ninput`` (``input`` left out when empty); ``history`` holds earlier
``[instruction, response]`` pairs, which come first and whose responses are learned too (LLaMA-Factory:
"the responses in the history will also be learned"). Column names are options with LLaMA-Factory's names.
"""

from __future__ import annotations

from ...errors import DataError
from ..types import ImageDataset
from ._common import existing_file, register_format
from ._conversation import (conversation_dataset, conversation_sample, image_list, image_root_of, read_records,
                            resolve_image, text_field)


@register_format("alpaca", description="LLaMA-Factory's alpaca format: instruction, input, output, history, images",
                 source="local JSON / JSONL file")
def load_alpaca(path: str, *, prompt_column: str = "instruction", query_column: str = "input",
                response_column: str = "output", system_column: str = "system", history_column: str = "history",
                images_column: str = "images", id_column: str | None = None, image_root: str | None = None,
                split: str = "train", name: str | None = None) -> ImageDataset:
    """Every sample of the file, in order, in split ``split``; ids from ``id_column``, else the sample's position."""
    file = existing_file(path, "alpaca")
    root = image_root_of(file, image_root)
    samples = []
    for index, (where, obj) in enumerate(read_records(file)):
        if prompt_column not in obj or response_column not in obj:
            missing = prompt_column if prompt_column not in obj else response_column
            raise DataError(f"{where}: no column '{missing}' (columns: {', '.join(obj) or 'none'}); alpaca samples "
                            f"need '{prompt_column}' and '{response_column}' (set prompt_column=/response_column=)")
        turns = []
        history = obj.get(history_column) or []
        if not isinstance(history, list):
            raise DataError(f"{where}: '{history_column}' must be a list of [instruction, response] pairs")
        for k, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise DataError(f"{where}: {history_column}[{k}] must be an [instruction, response] pair, "
                                f"got {pair!r:.120}")
            turns += [("user", text_field(pair[0], where, f"{history_column}[{k}][0]")),
                      ("assistant", text_field(pair[1], where, f"{history_column}[{k}][1]"))]
        # LLaMA-Factory: query = [prompt, query] where non-empty, joined by "\n"
        parts = [text_field(obj.get(c), where, f"'{c}'", allow_empty=True) for c in (prompt_column, query_column)]
        turns += [("user", "\n".join(p for p in parts if p)),
                  ("assistant", text_field(obj.get(response_column), where, f"'{response_column}'"))]
        system = text_field(obj.get(system_column), where, f"'{system_column}'", allow_empty=True)
        if id_column and id_column not in obj:
            raise DataError(f"{where}: no id column '{id_column}'")
        sample_id = str(obj[id_column]) if id_column else str(index)
        images = [resolve_image(p, root) for p in image_list(obj.get(images_column), where, images_column)]
        samples.append(conversation_sample(sample_id, turns, system=system, images=images, where=where))
    return conversation_dataset(name or file.stem, samples, split=split, fmt="alpaca", file=file,
                                description="LLaMA-Factory alpaca instructions")
