"""Rank mode on the tiny model of each family, through transformers' supported cache API: no warning at all (every
warning an error; transformers' own logged deprecation notices counted too), and scores equal to an independent
reference: one forward per (image, candidate) over the whole prompt + answer, no cache, no padding, no batching.

The llava families score through the shared prefix cache (the trie path), the others one forward per candidate.
SmolVLM is left out: its tiny model fails a plain forward on an image prompt (image tokens and features differ),
which is no matter of ranking."""

import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import make_tiny_model
from unforget.evaluation.ranking import TREE_FAMILIES, score_candidates
from unforget.models.loading import load_model
from unforget.models.prompting import build_prompt, encode_batch

FAMILIES = ["llava", "llava_next", "qwen2_vl", "idefics3", "instructblip"]
QUESTIONS = ["what colour is the shape in the image? answer with one word.", "what colour is the shape?"]
CANDIDATES = ["red", "green", "blue square", "red circle", "yes"]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = make_tiny_model(request.param, tmp_path_factory.mktemp(request.param) / "model")
    lm = load_model(str(folder), dtype="float32", device="cpu")
    lm.model.eval()
    yield lm
    torch.set_num_threads(old)


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in QUESTIONS]


@torch.no_grad()
def reference_scores(lm, image: Image.Image, question: str) -> list[float]:
    """log p(candidate + end token | image, question), one unpadded forward over prompt + candidate each."""
    tok = lm.tokenizer
    enc = encode_batch(lm, [image], [build_prompt(lm, question, with_image=True)])
    prompt_len = enc["input_ids"].shape[1]
    scores = []
    for candidate in CANDIDATES:
        answer = torch.tensor([tok(candidate + tok.eos_token, add_special_tokens=False)["input_ids"]])
        inputs = dict(enc)
        inputs["input_ids"] = torch.cat([enc["input_ids"], answer], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        for key in ("mm_token_type_ids", "token_type_ids"):  # per-token inputs: the answer is text (0)
            if key in inputs:
                inputs[key] = torch.cat([enc[key], torch.zeros_like(answer)], dim=1)
        logits = lm.model(**inputs, use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits[prompt_len - 1 : -1], dim=-1)
        scores.append(float(logp.gather(1, answer[0][:, None]).sum()))
    return scores


def test_rank_scores_equal_full_forwards_without_any_warning(tiny):
    from transformers.utils import logging as hf_logging

    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("transformers")
    hf_logging.warning_once.cache_clear()  # a notice already given in this process would be given again
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = score_candidates(tiny, images(), QUESTIONS, CANDIDATES, batch_size=2)
    finally:
        logger.removeHandler(handler)
    assert logged == []
    want = np.array([reference_scores(tiny, im, q) for im, q in zip(images(), QUESTIONS)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.ptp(want) > 1e-3  # the candidates score differently: a mix-up would show


def test_the_llava_families_take_the_cache_path():
    assert {"llava", "llava_next"} <= TREE_FAMILIES
