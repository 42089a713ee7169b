"""Conversation samples in training: the loss sits on every assistant reply of a two-turn conversation, checked
against token sequences built by hand from the chat template's literal text (the tiny LLaVA's llava-1.5 template,
the embedded tiny-llava's ChatML one); text-only and image samples share one batch and one run."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import make_tiny_model
from unforget.data.conversation import ChatTurn, Conversation
from unforget.models.config import ModelConfig
from unforget.models.loading import load_model
from unforget.training import FinetuneConfig, TrainDataConfig, finetune
from unforget.training.data import InstructionDataset, training_items
from unforget.training.examples import IGNORE_INDEX, build_conversation_example, build_example, collate_examples

pytestmark = pytest.mark.usefixtures("one_thread")

Q1, A1, Q2, A2 = "what colour is the shape?", "red", "how many objects are there?", "2"
TWO_TURNS = Conversation((ChatTurn("user", Q1), ChatTurn("assistant", A1), ChatTurn("user", Q2),
                          ChatTurn("assistant", A2)))


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    folder = make_tiny_model("llava", tmp_path_factory.mktemp("conv") / "llava")
    return load_model(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def embedded_llava():
    return load_model("tiny-llava", device="cpu", dtype="float32")


def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))


def hand_built(lm, img, segments):
    """input_ids and labels from literal text segments: (text, labelled); the first goes through the processor
    with the image, the others through the tokenizer alone."""
    first, *rest = segments
    enc = lm.processor(text=[first[0]], images=[img], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    labels = [IGNORE_INDEX] * len(ids)
    for text, labelled in rest:
        piece = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if labelled else [IGNORE_INDEX] * len(piece)
    return ids, labels


def test_two_turn_labels_on_llava_15_template(tiny_llava):
    img = image()
    ex = build_conversation_example(tiny_llava, img, TWO_TURNS)
    # llava-1.5's template: "USER: <image>\n{q} ASSISTANT: {a} USER: {q2} ASSISTANT:"; each reply is taught as the
    # model generates it (reply + </s>, as build_example does), the text between replies is not
    ids, labels = hand_built(tiny_llava, img, [(f"USER: <image>\n{Q1} ASSISTANT:", False), (f"{A1}</s>", True),
                                               (f" USER: {Q2} ASSISTANT:", False), (f"{A2}</s>", True)])
    assert ex.input_ids.tolist() == ids
    assert ex.labels.tolist() == labels
    taught = [tiny_llava.tokenizer.decode([t]) for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE_INDEX]
    assert "".join(taught) == f"{A1}</s>{A2}</s>"


def test_two_turn_labels_on_chatml_template_of_the_embedded_model(embedded_llava):
    img = image()
    ex = build_conversation_example(embedded_llava, img, TWO_TURNS)
    start, end = "<|im_start|>", "<|im_end|>"
    ids, labels = hand_built(embedded_llava, img, [
        (f"{start}user\n<image>\n{Q1}{end}\n{start}assistant\n", False), (f"{A1}{end}", True),
        (f"\n{start}user\n{Q2}{end}\n{start}assistant\n", False), (f"{A2}{end}", True)])
    assert ex.input_ids.tolist() == ids
    assert ex.labels.tolist() == labels


def test_one_turn_conversation_is_the_instruction_example(tiny_llava):
    one = Conversation(TWO_TURNS.turns[:2])
    for img in (image(), None):
        a, b = build_conversation_example(tiny_llava, img, one), build_example(tiny_llava, img, Q1, A1)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


def test_system_prompt_is_in_the_unlabelled_prompt(embedded_llava):
    ex = build_conversation_example(embedded_llava, None, Conversation(TWO_TURNS.turns[:2], system="Be brief."))
    ids, labels = hand_built_text(embedded_llava, [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + Q1 + "<|im_end|>\n<|im_start|>assistant\n",
         False), (A1 + "<|im_end|>", True)])
    assert ex.input_ids.tolist() == ids and ex.labels.tolist() == labels


def hand_built_text(lm, segments):
    ids, labels = [], []
    for text, labelled in segments:
        piece = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if labelled else [IGNORE_INDEX] * len(piece)
    return ids, labels


@pytest.fixture(scope="module")
def other_families(tmp_path_factory):
    """LLaVA-NeXT (per-image image_sizes, anyres tiles) and Idefics3 (nested images, tiles), loaded on demand."""
    loaded = {}

    def get(family):
        if family not in loaded:
            folder = make_tiny_model(family, tmp_path_factory.mktemp("conv") / family)
            loaded[family] = load_model(str(folder), device="cpu", dtype="float32")
        return loaded[family]

    return get


@pytest.mark.parametrize("which", ["tiny_llava", "embedded_llava", "llava_next", "idefics3"])
def test_text_only_and_image_samples_share_a_batch(which, request, other_families):
    """Each row's logits in a mixed batch equal its logits alone: the image rows go to the image sample only."""
    lm = request.getfixturevalue(which) if which in ("tiny_llava", "embedded_llava") else other_families(which)
    pad = lm.tokenizer.pad_token_id
    text_only = build_conversation_example(lm, None, TWO_TURNS)
    with_image = build_conversation_example(lm, image(), TWO_TURNS)
    batch = collate_examples([text_only, with_image, text_only], pad)
    assert batch["pixel_values"].shape[0] == with_image.pixel_values.shape[0]
    with torch.no_grad():
        mixed = lm.model(**batch)
        alone = [lm.model(**collate_examples([e], pad)).logits[0] for e in (text_only, with_image)]
    assert torch.isfinite(mixed.loss)
    for row, ref in ((0, alone[0]), (1, alone[1]), (2, alone[0])):
        n = ref.shape[0]
        torch.testing.assert_close(mixed.logits[row, :n], ref, atol=1e-4, rtol=1e-4)


def test_finetune_on_llava_mix_and_alpaca_text_in_one_run(tiny_llava, tmp_path):
    """A LLaVA mix (image and text-only conversations) as the task and an alpaca text set as a hybrid source."""
    img = image()
    img.save(tmp_path / "shape.png")
    rows = [{"id": f"i{i}", "image": "shape.png", "conversations": [
        {"from": "human", "value": f"<image>\n{Q1}"}, {"from": "gpt", "value": A1},
        {"from": "human", "value": Q2}, {"from": "gpt", "value": A2}]} for i in range(3)]
    rows += [{"id": f"t{i}", "conversations": [{"from": "human", "value": "yes or no?"},
                                               {"from": "gpt", "value": "yes"}]} for i in range(3)]
    (tmp_path / "mix.json").write_text(json.dumps(rows))
    (tmp_path / "alpaca.json").write_text(json.dumps([{"instruction": "say no", "output": "no"}] * 4))
    data = TrainDataConfig(datasets=[f"llava-conversations:{tmp_path / 'mix.json'}",
                                     f"alpaca:{tmp_path / 'alpaca.json'}"],
                           mix_strategy="interleave_over", interleave_probs=[0.75, 0.25], budget=8)
    items, _ = training_items(data)
    assert sum(it.dataset.startswith("alpaca:") for it in items) == 2
    assert {it.sample.image is None for it in items} == {True, False}
    assert all(it.conversation is not None for it in items)
    result = finetune(FinetuneConfig(model=ModelConfig(name=str(tiny_llava.source), device="cpu"), data=data,
                                     method="lora", method_options={"r": 2}, lr=1e-3, epochs=1, batch_size=4,
                                     out=str(tmp_path / "run")))
    assert result.global_step == 2


def test_an_image_only_first_turn_is_a_training_sample(tiny_llava, tmp_path):
    """LLaVA's captioning turns can be the placeholder alone: the prompt is then the image, the caption is taught."""
    image().save(tmp_path / "shape.png")
    rows = [{"id": "c", "image": "shape.png", "conversations": [{"from": "human", "value": "<image>"},
                                                                {"from": "gpt", "value": "red"}]}]
    (tmp_path / "cap.json").write_text(json.dumps(rows))
    items, _ = training_items(TrainDataConfig(datasets=[f"llava-conversations:{tmp_path / 'cap.json'}"],
                                              template="round-robin"))
    ex = InstructionDataset(tiny_llava, items)[0]
    taught = [t for t, l in zip(ex.input_ids.tolist(), ex.labels.tolist()) if l != IGNORE_INDEX]
    assert tiny_llava.tokenizer.decode(taught) == "red</s>"
