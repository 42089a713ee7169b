import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "What is the number in the image? Answer with one of: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9.",
    "What is the object in the image? circle square triangle star hexagon cross heart arrow ring diamond",
    "red green blue yellow purple orange white black left right yes no",
]


@pytest.fixture(scope="session")
def random_llava_dir(tmp_path_factory):
    """A tiny, randomly initialised LLaVA saved as a HF folder (answers are garbage, the path is real)."""
    from unforget.models.build import LlavaShape, build_llava
    from unforget.models.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("random-llava")
    tok = train_tokenizer(CORPUS * 10, 400)
    model, proc = build_llava(tok, LlavaShape(), seed=0)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
