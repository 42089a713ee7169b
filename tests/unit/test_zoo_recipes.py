"""The zoo's two halves agree: every recipe in unforget.zoo builds a model the zoo registry names, and every zoo
model that is not committed whole has a recipe (`unforget zoo build NAME` finds it without models/ knowing zoo/)."""

import pytest

from unforget.errors import UnforgetError
from unforget.models.zoo import ZOO
from unforget.zoo import RECIPES, recipe_for


def test_every_recipe_builds_a_named_zoo_model():
    assert set(RECIPES) <= set(ZOO.names())


def test_every_zoo_model_not_committed_whole_has_a_recipe():
    assert {e.name for e in ZOO.entries() if e.obj.shipped is None} <= set(RECIPES)


def test_a_model_without_a_recipe_is_refused():
    with pytest.raises(UnforgetError, match="has no build recipe"):
        recipe_for("no-such-model")


def test_smol_llava_retrain_assembles_from_what_the_recipe_trains(monkeypatch, tmp_path):
    """`unforget zoo build smol-llava --retrain`: the recipe trains into <out>-trained (with the recipe options), then
    the folder is assembled from those parts instead of the committed ones (assembly options go to the assembly)."""
    from unforget.zoo.smol_llava import recipe

    calls = []
    monkeypatch.setattr(recipe, "train_smol_llava", lambda out, seed=0, **o: calls.append(("train", out, seed, o)))
    monkeypatch.setattr(recipe, "build_smol_llava", lambda out, seed=0, **o: calls.append(("assemble", out, seed, o)))
    recipe.build(tmp_path / "smol", seed=3, retrain=True, check_conversion=False, threads=1)
    assert calls == [("train", tmp_path / "smol-trained", 3, {"threads": 1}),
                     ("assemble", tmp_path / "smol", 3, {"trained": tmp_path / "smol-trained",
                                                         "check_conversion": False})]
    calls.clear()
    recipe.build(tmp_path / "smol", seed=1)
    assert calls == [("assemble", tmp_path / "smol", 1, {})]
