"""``sharegpt``: LLaMA-Factory's sharegpt format (``data/README.md``, ``SharegptDatasetConverter`` in
``src/llamafactory/data/converter.py``).

A list of ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...], "system": ...,
"images": [...]}``. The column and tag names are options with LLaMA-Factory's defaults, so its OpenAI-style variant
reads with ``messages_column=messages&role_tag=role&content_tag=content&user_tag=user&assistant_tag=assistant``. A
leading ``system`` message is the system prompt (it overrides the system column), as in LLaMA-Factory. Tool turns
(``observation``, ``function_call``) are not supported. Where LLaMA-Factory skips a malformed sample with a warning,
this loader stops and names it. The loss goes on every assistant turn (LLaMA-Factory's default,
``mask_history: false``).
"""

from __future__ import annotations

from ...errors import DataError
from ..types import ImageDataset
from ._common import existing_file, register_format
from ._conversation import (conversation_dataset, conversation_sample, image_list, image_root_of, read_records,
                            resolve_image, text_field)


@register_format("sharegpt", description="LLaMA-Factory's sharegpt format: multi-turn conversations, optional images",
                 source="local JSON / JSONL file")
def load_sharegpt(path: str, *, messages_column: str = "conversations", system_column: str = "system",
                  images_column: str = "images", id_column: str | None = None, role_tag: str = "from",
                  content_tag: str = "value", user_tag: str = "human", assistant_tag: str = "gpt",
                  system_tag: str = "system", image_root: str | None = None, split: str = "train",
                  name: str | None = None) -> ImageDataset:
    """Every sample of the file, in order, in split ``split``; ids from ``id_column``, else the sample's position."""
    file = existing_file(path, "sharegpt")
    root = image_root_of(file, image_root)
    roles = {user_tag: "user", assistant_tag: "assistant"}
    samples = []
    for index, (where, obj) in enumerate(read_records(file)):
        messages = obj.get(messages_column)
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: no list of messages in column '{messages_column}' (columns: "
                            f"{', '.join(obj) or 'none'}); set messages_column= to the column that holds them")
        system = text_field(obj.get(system_column), where, f"'{system_column}'", allow_empty=True)
        if isinstance(messages[0], dict) and system_tag and messages[0].get(role_tag) == system_tag:
            system = text_field(messages[0].get(content_tag), where, "the system message", allow_empty=True)
            messages = messages[1:]
        turns = []
        for k, message in enumerate(messages):
            role = message.get(role_tag) if isinstance(message, dict) else None
            if not isinstance(role, str) or role not in roles:
                raise DataError(f"{where}: message {k + 1} has {role_tag}={role!r}; expected '{user_tag}' or "
                                f"'{assistant_tag}' (tool turns are not supported; set role_tag=, user_tag=, "
                                "assistant_tag= for other names)")
            turns.append((roles[role], text_field(message.get(content_tag), where, f"message {k + 1}'s "
                                                  f"'{content_tag}'", allow_empty=True)))
        if id_column and id_column not in obj:
            raise DataError(f"{where}: no id column '{id_column}'")
        sample_id = str(obj[id_column]) if id_column else str(index)
        images = [resolve_image(p, root) for p in image_list(obj.get(images_column), where, images_column)]
        samples.append(conversation_sample(sample_id, turns, system=system, images=images, where=where))
    return conversation_dataset(name or file.stem, samples, split=split, fmt="sharegpt", file=file,
                                description="LLaMA-Factory sharegpt conversations")
