"""smol-llava's model card is written from what the recipe measured: every rank accuracy with its Wilson interval,
and "above chance" only where the interval's lower end clears chance."""

import json
from pathlib import Path

from unforget.zoo.smol_llava.card import model_card

COMMITTED = Path(__file__).resolve().parents[2] / "src" / "unforget" / "models" / "zoo" / "smol-llava"


def card_for(rank_accuracy: dict[str, float], n: int = 30) -> str:
    doc = json.loads((COMMITTED / "smol_llava.json").read_text())
    report = {**doc["report"], "rank_accuracy": rank_accuracy, "eval_counts": {k: n for k in rank_accuracy},
              "wall_seconds": 3600.0}
    return model_card(doc["recipe"], report)


def test_each_set_is_above_chance_only_when_its_interval_clears_chance():
    card = card_for({"digits": 0.9, "shapes": 0.2, "mnist": 0.1})
    rows = {line.split(" | ")[0].strip("| "): line for line in card.splitlines() if line.startswith("| ")}
    # digits 27/30: Wilson [0.744, 0.965], chance 0.1
    assert rows["digits"].endswith("| 0.900 [0.744, 0.965] | yes |")
    # shapes 6/30: [0.095, 0.373] reaches below chance 0.125
    assert rows["shapes"].endswith("| no |") and "0.200 [0.095, 0.373]" in rows["shapes"]
    assert rows["mnist"].endswith("| no |")
    assert "Above chance (the interval's lower end over chance) on 1 of 3 sets." in card
    assert "wall clock 60.0 minutes" in card


def test_the_committed_card_is_the_one_its_figures_give():
    doc = json.loads((COMMITTED / "smol_llava.json").read_text())
    assert (COMMITTED / "README.md").read_text() == model_card(doc["recipe"], doc["report"])
