"""The conversation formats against replicas of their official files: LLaVA's instruction JSON
(llava_v1_5_mix665k: multi-turn, text-only samples mixed in), LLaMA-Factory's sharegpt (and its OpenAI variant
through tag options) and alpaca (instruction + input joined by a newline, history first), as their READMEs and
converters (src/llamafactory/data/converter.py) define them."""

import json

import pytest

from unforget.data import load_dataset
from unforget.data.conversation import ChatTurn, Conversation
from unforget.errors import DataError

# two samples as llava_v1_5_mix665k.json holds them: an image sample (placeholder first, two turns) and a
# text-only ShareGPT one (no "image" key)
LLAVA_ROWS = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "i6IyJda_0", "model": "", "conversations": [
        {"from": "human", "value": "How to tell if a customer segment is well segmented?"},
        {"from": "gpt", "value": "Check that it is homogeneous."}]},
]


def write(path, rows, jsonl=False):
    path.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows), encoding="utf-8")
    return path


def turns(sample):
    conv = sample.meta["conversation"]
    return conv.system, [(t.role, t.text) for t in conv.turns]


def test_llava_mix_keeps_text_only_samples_and_every_turn(tmp_path):
    file = write(tmp_path / "mix.json", LLAVA_ROWS)
    ds = load_dataset(f"llava-conversations:{file}?image_root=images")
    image_sample, text_sample = ds.split("train")
    assert ds.task == "vqa"
    assert image_sample.id == "000000033471"
    assert image_sample.image == str(tmp_path / "images" / "coco/train2017/000000033471.jpg")
    # LLaVA's preprocess_multimodal takes "<image>" out of the text and strips it; the image heads the first turn
    assert turns(image_sample) == ("", [
        ("user", "What are the colors of the bus in the image?"),
        ("assistant", "The bus in the image is white and red."),
        ("user", "What feature can be seen on the back of the bus?"),
        ("assistant", "The back of the bus features an advertisement.")])
    assert (image_sample.question, image_sample.answer) == ("What are the colors of the bus in the image?",
                                                            "The bus in the image is white and red.")
    assert text_sample.image is None and text_sample.id == "i6IyJda_0"
    assert turns(text_sample)[1][1] == ("assistant", "Check that it is homogeneous.")


def test_llava_jsonl_and_a_leading_gpt_turn_is_dropped_as_llava_does(tmp_path):
    row = {"id": 7, "conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "q"},
                                      {"from": "gpt", "value": "a"}]}
    ds = load_dataset(f"llava-conversations:{write(tmp_path / 'x.jsonl', [row], jsonl=True)}")
    (sample,) = ds.split("train")
    assert ds.task == "text" and sample.id == "7"
    assert turns(sample) == ("", [("user", "q"), ("assistant", "a")])


@pytest.mark.parametrize("row, message", [
    ({"id": "a", "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]},
     "text-only sample"),
    ({"id": "b", "image": "x.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "0 '<image>' placeholders"),
    ({"id": "c", "image": "x.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                                                      {"from": "human", "value": "<image>"},
                                                      {"from": "gpt", "value": "b"}]},
     "first user turn"),
    ({"id": "d", "conversations": [{"from": "human", "value": "q"}]}, "user/assistant pairs"),
    ({"id": "e", "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}, "turn 2"),
    ({"id": "f", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]},
     "assistant turn is empty"),
    ({"conversations": []}, "no 'id'"),
])
def test_llava_bad_samples_name_the_sample_and_the_fix(tmp_path, row, message):
    file = write(tmp_path / "bad.json", [LLAVA_ROWS[1], row])
    with pytest.raises(DataError, match=message) as err:
        load_dataset(f"llava-conversations:{file}")
    assert f"{file}[1]" in str(err.value)


def test_duplicate_ids_are_made_unique(tmp_path):
    ds = load_dataset(f"llava-conversations:{write(tmp_path / 'd.json', [LLAVA_ROWS[1]] * 3)}")
    assert [s.id for s in ds.split("train")] == ["i6IyJda_0", "i6IyJda_0#2", "i6IyJda_0#3"]


def test_sharegpt_defaults_system_message_and_images(tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": "<image>Who are they?"}, {"from": "gpt", "value": "Two boys."},
                           {"from": "human", "value": "What are they doing?"}, {"from": "gpt", "value": "Playing."}],
         "system": "Be brief.", "images": ["mllm_demo_data/1.jpg"]},
        # a leading system message overrides the system column (SharegptDatasetConverter)
        {"conversations": [{"from": "system", "value": "You are kind."}, {"from": "human", "value": "Hi"},
                           {"from": "gpt", "value": "Hello"}], "system": "ignored"},
    ]
    ds = load_dataset(f"sharegpt:{write(tmp_path / 'demo.json', rows)}")
    first, second = ds.split("train")
    assert [s.id for s in (first, second)] == ["0", "1"]
    assert first.image == str(tmp_path / "mllm_demo_data/1.jpg")
    assert turns(first) == ("Be brief.", [("user", "Who are they?"), ("assistant", "Two boys."),
                                          ("user", "What are they doing?"), ("assistant", "Playing.")])
    assert turns(second) == ("You are kind.", [("user", "Hi"), ("assistant", "Hello")])


def test_sharegpt_openai_variant_through_tag_options(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                          {"role": "assistant", "content": "a"}], "uid": "k1"}]
    file = write(tmp_path / "oai.json", rows)
    ds = load_dataset(f"sharegpt:{file}?messages_column=messages&role_tag=role&content_tag=content&user_tag=user"
                      "&assistant_tag=assistant&id_column=uid")
    (sample,) = ds.split("train")
    assert sample.id == "k1" and turns(sample) == ("S", [("user", "u"), ("assistant", "a")])


def test_sharegpt_tool_turns_and_bad_order_are_errors(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}]}]
    with pytest.raises(DataError, match="tool turns are not supported"):
        load_dataset(f"sharegpt:{write(tmp_path / 't.json', rows)}")
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}]}]
    with pytest.raises(DataError, match="turn 2 is 'user'"):
        load_dataset(f"sharegpt:{write(tmp_path / 'o.json', rows)}")


def test_alpaca_joins_instruction_and_input_and_puts_history_first(tmp_path):
    rows = [
        {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "S",
         "history": [["first q", "first a"], ["second q", "second a"]]},
        {"instruction": "Name a colour.", "input": "", "output": "red"},
        {"instruction": "<image>What is shown?", "output": "a cat", "images": ["cat.png"]},
    ]
    ds = load_dataset(f"alpaca:{write(tmp_path / 'alpaca.json', rows)}")
    a, b, c = ds.split("train")
    # LLaMA-Factory: the user turn is "prompt\nquery"; history pairs come first and are learned too
    assert turns(a) == ("S", [("user", "first q"), ("assistant", "first a"), ("user", "second q"),
                              ("assistant", "second a"), ("user", "Translate\nbonjour"), ("assistant", "hello")])
    assert turns(b) == ("", [("user", "Name a colour."), ("assistant", "red")])
    assert c.image == str(tmp_path / "cat.png") and turns(c)[1][0] == ("user", "What is shown?")


def test_alpaca_missing_output_names_the_column(tmp_path):
    with pytest.raises(DataError, match=r"\[0\]: no column 'output'"):
        load_dataset(f"alpaca:{write(tmp_path / 'a.json', [{'instruction': 'x'}])}")


def test_not_a_list_and_bad_json_are_errors(tmp_path):
    with pytest.raises(DataError, match="expected a JSON list"):
        load_dataset(f"sharegpt:{write(tmp_path / 'o.json', {'a': 1})}")
    bad = tmp_path / "b.json"
    bad.write_text('[{"instruction": "x",\n "output": }]')
    with pytest.raises(DataError, match=r"b.json:2: not valid JSON"):
        load_dataset(f"alpaca:{bad}")


def test_conversation_pairs_and_order_check():
    conv = Conversation((ChatTurn("user", "q"), ChatTurn("assistant", "a"), ChatTurn("user", "q2"),
                         ChatTurn("assistant", "a2")))
    assert conv.pairs == [("q", "a"), ("q2", "a2")]
    with pytest.raises(DataError):
        Conversation((ChatTurn("assistant", "a"), ChatTurn("user", "q")))


# ----------------------------------------------------------------------------------------------- fuzzing

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from unforget.data.types import ImageDataset  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(
    ["", "human", "gpt", "system", "user", "assistant", "<image>", "<image>\nq", "a", "x.png"]))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["id", "image", "images", "conversations", "from", "value", "system",
                                     "instruction", "input", "output", "history", "role", "content"]), inner,
                    max_size=5)), max_leaves=20)


# samples shaped like the formats' own, with any JSON where a value goes
_turn = st.dictionaries(st.sampled_from(["from", "value"]), _json, max_size=2)
_shaped = st.fixed_dictionaries({"id": _json, "conversations": st.lists(_turn, max_size=4)},
                                optional={"image": _json, "images": _json, "system": _json, "instruction": _json,
                                          "output": _json, "history": _json})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.one_of(_json, _shaped), max_size=3),
       fmt=st.sampled_from(["llava-conversations", "sharegpt", "alpaca"]))
def test_any_json_loads_or_raises_a_data_error(tmp_path, records, fmt):
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(records))
    try:
        ds = load_dataset(f"{fmt}:{path}")
    except DataError:
        return
    assert isinstance(ds, ImageDataset)
    for sample in ds.split("train"):
        assert sample.meta["conversation"].pairs
