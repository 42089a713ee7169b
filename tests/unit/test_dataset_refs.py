"""Dataset references with loader options: ``scenes-vqa?qtypes=colour``, ``easy-vqa?qtypes=shape,colour&n_test=5``."""

import pytest

from unforget.data import load_dataset, parse_dataset_ref
from unforget.data.registry import split_query
from unforget.errors import DataError


def test_split_query_parses_values_as_yaml():
    base, options = split_query("easy-vqa?qtypes=shape,colour&n_test=500&flag=true&seed=")
    assert base == "easy-vqa"
    assert options == (("qtypes", "shape,colour"), ("n_test", 500), ("flag", True), ("seed", None))


def test_split_query_flow_list_becomes_a_tuple():
    assert split_query("x?qtypes=[shape, colour]") == ("x", (("qtypes", ("shape", "colour")),))


def test_reference_without_query_has_no_options():
    assert split_query("scenes-vqa") == ("scenes-vqa", ())
    ref = parse_dataset_ref("scenes-vqa")
    assert (ref.name, ref.options) == ("scenes-vqa", ())


@pytest.mark.parametrize("ref", ["scenes-vqa?colour", "scenes-vqa?=1", "?qtypes=colour", "scenes-vqa?a=1&&b=2"])
def test_malformed_query_is_a_data_error(ref):
    with pytest.raises(DataError, match="key=value"):
        split_query(ref)


def test_a_key_given_twice_is_an_error():
    with pytest.raises(DataError, match="twice"):
        split_query("scenes-vqa?n_test=1&n_test=2")


def test_format_reference_keeps_its_path_and_options():
    ref = parse_dataset_ref("jsonl:/data/vqa.jsonl?split=train&id_column=id")
    assert (ref.format, ref.path, ref.options) == ("jsonl", "/data/vqa.jsonl", (("split", "train"), ("id_column", "id")))


def test_options_reach_the_loader_and_the_name_keeps_the_reference():
    colour = load_dataset("scenes-vqa?qtypes=colour&n_train=2&n_test=6")
    other = load_dataset("scenes-vqa?qtypes=shape,count&n_train=2&n_test=6")
    assert colour.name == "scenes-vqa?qtypes=colour&n_train=2&n_test=6"
    assert other.name == "scenes-vqa?qtypes=shape,count&n_train=2&n_test=6"
    assert len(colour.split("train")) == 2 and len(colour.split("test")) == 6
    assert {s.meta["qtype"] for s in colour.split("test")} == {"colour"}
    assert {s.meta["qtype"] for s in other.split("test")} == {"shape", "count"}


def test_plain_name_keeps_the_plain_name():
    assert load_dataset("scenes-vqa", n_train=1, n_test=1).name == "scenes-vqa"


def test_an_option_in_reference_and_call_must_agree():
    assert len(load_dataset("scenes-vqa?n_train=2&n_test=1", n_train=2).split("train")) == 2
    with pytest.raises(DataError, match="give it once"):
        load_dataset("scenes-vqa?n_train=2&n_test=1", n_train=3)


def test_unknown_option_names_the_options():
    with pytest.raises(Exception, match="no option 'qtype'"):
        load_dataset("scenes-vqa?qtype=colour")
