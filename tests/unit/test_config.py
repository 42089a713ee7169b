from dataclasses import dataclass, field

import pytest

from unforget.config import apply_overrides, dump_yaml, from_dict, load_config
from unforget.errors import ConfigError
from unforget.evaluation.config import EvalConfig


@dataclass
class Train:
    lr: float = 1e-4
    epochs: int = 1
    bf16: bool = False


@dataclass
class Top:
    name: str = "x"
    train: Train = field(default_factory=Train)
    datasets: list[str] = field(default_factory=list)
    limit: int | None = None


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run1\ntrain:\n  lr: 0.001\ndatasets: [digits]\n")
    cfg = load_config(Top, path, ["train.lr=2e-5", "train.bf16=true", "datasets=digits,shapes", "limit=null"])
    assert cfg.name == "run1"
    assert cfg.train.lr == pytest.approx(2e-5)
    assert cfg.train.bf16 is True
    assert cfg.train.epochs == 1
    assert cfg.datasets == ["digits", "shapes"]
    assert cfg.limit is None


def test_typo_in_override_suggests_the_key():
    with pytest.raises(ConfigError, match=r"train\.lrr.*Did you mean 'lr'"):
        load_config(Top, None, ["train.lrr=1"])


def test_typo_in_yaml_suggests_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        load_config(Top, path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="train.epochs: expected int"):
        from_dict(Top, {"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(Top, {"train": {"epochs": 1.5}})


def test_literal_choices_checked():
    with pytest.raises(ConfigError, match="'rnak' is not one of generate, rank.*Did you mean 'rank'"):
        from_dict(EvalConfig, {"mode": "rnak"})


def test_validate_runs():
    with pytest.raises(ConfigError, match="batch_size"):
        from_dict(EvalConfig, {"batch_size": 0})


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(EvalConfig, None, ["model.name=/tmp/m", "datasets=digits,shapes", "limit=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    again = load_config(EvalConfig, path)
    assert again == cfg


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"], Top)


def test_unknown_shipped_config_name():
    with pytest.raises(ConfigError, match="no config 'emt/quikstart'"):
        load_config(Top, "emt/quikstart")


@dataclass
class WithOptions:
    options: dict = field(default_factory=dict)
    train: Train = field(default_factory=Train)


def test_dotted_override_into_a_free_form_mapping():
    cfg = load_config(WithOptions, None, ["options.r=16", "options.preset=llava15"])
    assert cfg.options == {"r": 16, "preset": "llava15"}
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        load_config(WithOptions, None, ["train.lrr=1"])


@pytest.mark.parametrize("argv", [
    ["study", "emt", "-c", "emt/quickstart", "train.epochs=2", "--out", "o", "train.lr=1e-4"],
    ["study", "emt", "-c", "emt/quickstart", "--out", "o", "train.epochs=2", "train.lr=1e-4"],
])
def test_dotted_overrides_may_follow_options(argv):
    from unforget.cli import build_parser, parse_command_line

    args = parse_command_line(build_parser(), argv)
    assert args.out == "o" and args.overrides == ["train.epochs=2", "train.lr=1e-4"]


def test_unknown_options_and_overrides_of_verbs_without_them_are_still_refused(capsys):
    from unforget.cli import build_parser, parse_command_line

    for argv, bad in ((["eval", "--datasets", "digits", "--bogus"], "--bogus"), (["ls", "models", "x=1"], "x=1")):
        with pytest.raises(SystemExit):
            parse_command_line(build_parser(), argv)
        assert f"unrecognized arguments: {bad}" in capsys.readouterr().err
