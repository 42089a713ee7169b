"""What each continual strategy asks of a task's fine-tuning (data, method, regularizer), and the study config's
checks. The training itself is exercised by tests/integration/test_continual_study.py."""

from pathlib import Path

import pytest

from unforget.config import from_dict
from unforget.errors import ConfigError, RegistryError
from unforget.studies.continual import ContinualConfig, default_plan
from unforget.studies.continual.strategies import STRATEGIES, Step
from unforget.training.data import training_items
from unforget.training.mixing import mix_counts

TASKS = ["digits", "shapes?n_train=16&n_test=4", "letters?n_train=16&n_test=4"]


def config(**overrides):
    data = {"tasks": TASKS, "train": {"limit": 8, "method": "lora", "lr": 1e-3}, **overrides}
    return from_dict(ContinualConfig, data)


def plan(strategy, index, options=None, cfg=None):
    cfg = cfg or config()
    spec = STRATEGIES.get(strategy)
    step = Step(index, tuple(cfg.tasks), Path("unused"), default_plan(cfg, index))
    return spec.plan(step, spec.parse_options(options or {}))


def test_registry_holds_the_built_in_strategies():
    assert {"naive", "regularised", "replay", "ewc", "l2", "lwf", "model-tailor"} <= set(STRATEGIES.names())
    assert STRATEGIES.get("model-tailor").after_training is not None
    assert STRATEGIES.get("naive").after_training is None


def test_naive_trains_the_task_alone_with_the_study_settings():
    p = plan("naive", 1)
    assert p.data.datasets == [TASKS[1]] and p.data.limit == 8
    assert (p.method, p.lr, p.epochs, p.regularizer.name) == ("lora", 1e-3, 1, None)


def test_regularised_uses_its_own_recipe():
    p = plan("regularised", 0, {"method": "projector", "method_options": {}, "lr": 1e-5})
    assert (p.method, p.method_options, p.lr, p.epochs) == ("projector", {}, 1e-5, 1)
    default = plan("regularised", 0)
    assert (default.method, default.method_options, default.lr) == ("lora", {"r": 4}, 2e-5)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        STRATEGIES.get("regularised").parse_options({"lr": 0})


def test_replay_mixes_the_task_with_an_equal_share_of_each_earlier_task():
    assert plan("replay", 0, {"buffer_size": 6}).data.datasets == [TASKS[0]]
    p = plan("replay", 2, {"buffer_size": 6})
    assert p.data.datasets == [TASKS[2], TASKS[0], TASKS[1]]
    assert p.data.mix_strategy == "interleave_under" and p.data.budget == 14
    assert mix_counts([8, 8, 8], p.data.interleave_probs, p.data.mix_strategy, p.data.budget) == [8, 3, 3]
    items, _ = training_items(p.data)
    counts = {ref: sum(1 for it in items if it.dataset == ref) for ref in TASKS}
    assert counts == {TASKS[2]: 8, TASKS[0]: 3, TASKS[1]: 3}


def test_replay_refuses_a_buffer_larger_than_the_earlier_tasks():
    with pytest.raises(ConfigError, match="lower buffer_size"):
        plan("replay", 1, {"buffer_size": 9})  # 9 of digits, which trains on its first 8


def test_ewc_takes_the_fisher_of_the_previous_task_from_task_one_on():
    assert plan("ewc", 0).regularizer.name is None
    p = plan("ewc", 2, {"strength": 50, "fisher_samples": 4})
    assert p.regularizer.name == "ewc"
    assert p.regularizer.options == {"strength": 50, "data": [TASKS[1]], "split": "train", "limit": 4,
                                     "batch_size": 1}
    assert plan("ewc", 2, {"fisher_tasks": "all"}).regularizer.options["data"] == TASKS[:2]
    p.regularizer.validate()


def test_l2_and_lwf_regularise_every_task():
    assert plan("l2", 0, {"strength": 3}).regularizer.options == {"strength": 3.0}
    lwf = plan("lwf", 1, {"temperature": 4})
    assert lwf.regularizer.name == "lwf" and lwf.regularizer.options == {"strength": 1.0, "temperature": 4.0}


def test_model_tailor_options_are_checked_by_the_tailoring_method():
    assert plan("model-tailor", 1).regularizer.name is None
    with pytest.raises(ConfigError):
        STRATEGIES.get("model-tailor").parse_options({"sparsity": 1.5})
    with pytest.raises(ConfigError, match="fusion"):
        STRATEGIES.get("model-tailor").parse_options({"options": {"fusoin": 0.5}})


def test_study_config_checks():
    with pytest.raises(ConfigError, match="at least one task"):
        config(tasks=[])
    with pytest.raises(ConfigError, match="different dataset references"):
        config(tasks=["digits", "digits"])
    with pytest.raises(ConfigError, match="unique"):
        config(strategies=[{"name": "a", "strategy": "naive"}, {"name": "a", "strategy": "l2"}])
    with pytest.raises(RegistryError, match="replay"):
        config(strategies=[{"name": "a", "strategy": "replya"}])
    with pytest.raises(ConfigError, match="buffer_size"):
        config(strategies=[{"name": "r", "strategy": "replay", "options": {"buffer_size": 0}}])
    with pytest.raises(ConfigError, match="folder names"):
        config(strategies=[{"name": "base", "strategy": "naive"}])


def test_shipped_configs_load():
    from unforget.config import load_config

    tiny = load_config(ContinualConfig, "continual/tiny")
    assert len(tiny.tasks) == 3 and {s.strategy for s in tiny.strategies} >= {"naive", "regularised", "replay",
                                                                               "lwf", "model-tailor"}
    big = load_config(ContinualConfig, "continual/llava15-7b")
    assert big.model.name and big.tasks
