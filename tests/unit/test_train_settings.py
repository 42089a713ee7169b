"""The fine-tuning settings every study shares (training/config.py ``TrainSettings``): one set of fields, one
conversion into FinetuneConfig, the same defaults as FinetuneConfig, and every study passing every field through."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from unforget.config import load_config, to_dict
from unforget.models.config import ModelConfig
from unforget.studies import continual, emt, tailor, twobytwo
from unforget.studies.emt import run as emt_run
from unforget.studies.tailor import run as tailor_run
from unforget.studies.continual.strategies import STRATEGIES, Step
from unforget.training import trainer
from unforget.training.config import (
    FinetuneConfig,
    MethodTrainSettings,
    RegularizerConfig,
    TrainDataConfig,
    TrainSettings,
)

# what a study decides itself, per arm / task / sweep point; every other FinetuneConfig field is a setting
STUDY_DECIDED = {"model", "data", "method", "method_options", "lr", "epochs", "seed", "regularizer", "out"}
# TrainDataConfig fields a study decides (the datasets; a data-hybrid run's mixing)
DATA_DECIDED = {"datasets", "mix_strategy", "interleave_probs", "budget", "mix_by"}

# a value other than the default for every setting
CHANGED = dict(split="validation", limit=7, sampling="head", sampling_seed=3, template=1, classes=[0, 2],
               shuffle=False, max_steps=5, batch_size=3, grad_accum=2, lr_scheduler="linear", warmup_ratio=0.1,
               weight_decay=0.01, max_grad_norm=0.5, mixed_precision="no", gradient_checkpointing=True,
               save_every_steps=4, log_every_steps=2, num_workers=1, cache_vision_features=False)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_field_a_study_does_not_decide_is_a_setting():
    settings = _fields(TrainSettings)
    assert _fields(FinetuneConfig) - STUDY_DECIDED <= settings
    assert _fields(TrainDataConfig) - DATA_DECIDED <= settings
    assert set(CHANGED) == settings


def test_default_settings_give_finetune_config_defaults():
    """A setting a study never set trains as FinetuneConfig's default would (the template aside: studies train
    on every prompt template in turn)."""
    model = ModelConfig(name="m")
    new = TrainSettings().finetune_config(model=model, data=TrainSettings().data_config(["digits"]), method="lora",
                                          epochs=1, seed=0, out="o")
    old = FinetuneConfig(model=model, data=TrainDataConfig(datasets=["digits"], template="round-robin"),
                         method="lora", epochs=1, seed=0, out="o")
    assert to_dict(new) == to_dict(old)


def test_the_conversion_passes_every_setting():
    settings = TrainSettings(**CHANGED)
    data = settings.data_config(["digits"])
    cfg = settings.finetune_config(model=ModelConfig(), data=data, method="full", method_options={"x": 1}, lr=0.1,
                                   epochs=2, seed=9, out="o", regularizer=RegularizerConfig("l2"))
    for name, value in CHANGED.items():
        where = cfg.data if name in _fields(TrainDataConfig) else cfg
        assert getattr(where, name) == value, name
    assert (cfg.method, cfg.method_options, cfg.lr, cfg.epochs, cfg.seed, cfg.out, cfg.regularizer.name) == (
        "full", {"x": 1}, 0.1, 2, 9, "o", "l2")
    hybrid = settings.data_config(["a", "b"], limit=None, budget=10, mix_by="batch")
    assert (hybrid.limit, hybrid.budget, hybrid.mix_by, hybrid.split) == (None, 10, "batch", "validation")


@pytest.mark.parametrize("config_class, name", [(emt.EmtConfig, "emt"), (twobytwo.TwoByTwoConfig, "2x2"),
                                                (continual.ContinualConfig, "continual"),
                                                (tailor.TailorStudyConfig, "tailor")])
def test_every_study_takes_every_setting_under_train(config_class, name):
    cfg = load_config(config_class, None, [f"train.{k}={v}" for k, v in
                                           {"lr_scheduler": "constant", "max_grad_norm": 0.25, "weight_decay": 0.1,
                                            "sampling_seed": 5, "num_workers": 2}.items()])
    assert isinstance(cfg.train, TrainSettings), name
    assert (cfg.train.lr_scheduler, cfg.train.max_grad_norm, cfg.train.weight_decay, cfg.train.sampling_seed,
            cfg.train.num_workers) == ("constant", 0.25, 0.1, 5, 2)


def test_study_defaults_are_kept():
    assert (emt.EmtTrain().dataset, emt.EmtTrain().epochs, emt.EmtTrain().batch_size, emt.EmtTrain().limit) == (
        "digits", 3, 16, None)
    assert (twobytwo.TwoByTwoTrain().dataset, twobytwo.TwoByTwoTrain().limit,
            twobytwo.TwoByTwoTrain().batch_size) == (None, 256, 16)
    c = continual.ContinualTrain()
    assert isinstance(c, MethodTrainSettings)
    assert (c.method, c.method_options, c.limit, c.batch_size, c.max_grad_norm) == ("lora", {"r": 8}, 256, 16, 1.0)
    t = tailor.TailorTrain()
    assert (t.method, t.method_options, t.limit, t.batch_size, t.seed, t.weight_decay) == ("lora", {}, None, 8, 0, 0.0)


class _Built(Exception):
    """Raised by the stand-in for ``finetune``: carries the FinetuneConfig a study built."""

    def __init__(self, cfg: FinetuneConfig):
        super().__init__("built")
        self.cfg = cfg


@pytest.fixture
def built(monkeypatch):
    def fake_finetune(cfg, *args, **kwargs):
        raise _Built(cfg)

    # every place a study looks finetune up: the trainer module, and the study modules that import the function
    monkeypatch.setattr(trainer, "finetune", fake_finetune)
    monkeypatch.setattr(emt_run, "finetune", fake_finetune)
    monkeypatch.setattr(tailor_run, "finetune", fake_finetune)

    def run(action) -> FinetuneConfig:
        with pytest.raises(_Built) as caught:
            action()
        return caught.value.cfg

    return run


def _assert_settings_reach(cfg: FinetuneConfig, settings: TrainSettings) -> None:
    for name in _fields(TrainSettings):
        where = cfg.data if name in _fields(TrainDataConfig) else cfg
        assert getattr(where, name) == getattr(settings, name), name


def test_each_study_passes_every_setting_to_finetune(built, tmp_path: Path):
    changed = {k: v for k, v in CHANGED.items() if k not in ("split", "classes")}
    e = emt.EmtConfig(train=emt.EmtTrain(**changed))
    ft = built(lambda: emt_run._run_arm(e, e.methods[0], 4, emt_run.RunDir(tmp_path / "emt"), e.eval, None,
                                        main=False))
    _assert_settings_reach(ft, e.train)
    assert (ft.method, ft.seed, ft.epochs) == (e.methods[0].method, 4, e.train.epochs)

    s = twobytwo.TwoByTwoConfig(train=twobytwo.TwoByTwoTrain(**changed))
    spec = twobytwo.sweep_plan(s)[0]
    ft = built(lambda: twobytwo.run._run_spec(s, spec, twobytwo.run.RunDir(tmp_path / "2x2"), s.eval, None))
    _assert_settings_reach(ft, s.train)

    c = continual.ContinualConfig(tasks=["digits"], train=continual.ContinualTrain(**changed))
    step = Step(0, tuple(c.tasks), tmp_path / "continual" / "naive" / "0-digits", continual.default_plan(c, 0))
    lm = type("LM", (), {"model": torch.nn.Linear(2, 2)})()
    naive = STRATEGIES.get("naive")
    ft = built(lambda: continual.run._train_step(c, c.strategies[0], naive, naive.parse_options({}), step, lm, None))
    _assert_settings_reach(ft, c.train)

    t = tailor.TailorStudyConfig(train=tailor.TailorTrain(**changed, seed=6))
    ft = built(lambda: tailor_run._finetuned_checkpoint(t, t.targets[0], tmp_path / "tailor", None))
    _assert_settings_reach(ft, t.train)
    assert ft.seed == 6
