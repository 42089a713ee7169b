"""The training-loss regularizers on toy models with hand-computed values: L2 after a known weight change, EWC with
a known Fisher (and the Fisher itself from known gradients), LwF's KL (zero for identical models, the textbook value
for a known pair), options and the saved state."""

from types import SimpleNamespace

import pytest
import torch

from unforget.errors import ConfigError, RegistryError, TrainingError
from unforget.training.config import RegularizerConfig
from unforget.training.regularizer_registry import REGULARIZERS
from unforget.training.regularizers import (
    Distillation,
    WeightPull,
    answer_token_kl,
    diagonal_fisher,
    frozen_copy,
    read_state,
    write_state,
)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Scalar(torch.nn.Module):
    """loss = mean over the batch of (w * x + b - y)^2; w, b scalars (b frozen unless asked)."""

    def __init__(self, w: float = 1.0, b: float = 0.0, train_b: bool = False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.b = torch.nn.Parameter(torch.tensor(b), requires_grad=train_b)

    def forward(self, x, y, use_cache=None):
        return SimpleNamespace(loss=((self.w * x + self.b - y) ** 2).mean())


def test_l2_penalty_after_a_known_weight_change():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        lin.bias.copy_(torch.tensor([0.5]))
    params = dict(lin.named_parameters())
    pull = WeightPull(params, {n: p.detach().clone() for n, p in params.items()}, strength=4.0)
    assert pull.penalty().item() == 0.0
    with torch.no_grad():
        lin.weight.add_(torch.tensor([[0.5, -1.0]]))  # squared change 0.25 + 1
        lin.bias.sub_(2.0)  # squared change 4
    assert pull.penalty().item() == pytest.approx(4.0 / 2 * (0.25 + 1.0 + 4.0))
    pull.penalty().backward()  # gradient strength * (w - w0)
    assert torch.allclose(lin.weight.grad, torch.tensor([[2.0, -4.0]]))
    assert torch.allclose(lin.bias.grad, torch.tensor([-8.0]))


def test_ewc_penalty_weights_each_change_by_its_fisher():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    pull = WeightPull({"w": w}, {"w": torch.tensor([1.0, 1.0, 1.0])}, strength=10.0,
                      weights={"w": torch.tensor([0.0, 1.0, 3.0])})
    with torch.no_grad():
        w.copy_(torch.tensor([5.0, 3.0, 0.0]))  # changes 4, 2, -1
    # 10/2 * (0 * 16 + 1 * 4 + 3 * 1) = 35: a change where the Fisher is 0 is free
    assert pull.penalty().item() == pytest.approx(35.0)


def test_diagonal_fisher_is_the_mean_squared_per_batch_gradient():
    model = Scalar(w=2.0, b=1.0, train_b=True)
    # per sample d/dw (w x + b - y)^2 = 2 x (w x + b - y); d/db = 2 (w x + b - y)
    batches = [{"x": torch.tensor([1.0]), "y": torch.tensor([1.0])},   # residual 2: grads (4, 4)
               {"x": torch.tensor([3.0]), "y": torch.tensor([8.0])}]   # residual -1: grads (-6, -2)
    fisher = diagonal_fisher(model, batches, {"w": model.w, "b": model.b})
    assert fisher["w"].item() == pytest.approx((16 + 36) / 2)
    assert fisher["b"].item() == pytest.approx((16 + 4) / 2)
    assert model.w.grad is None and model.training  # gradients taken without .grad; train mode put back


def test_diagonal_fisher_of_no_batch_is_an_error():
    model = Scalar()
    with pytest.raises(TrainingError, match="at least one batch"):
        diagonal_fisher(model, [], {"w": model.w})


def test_kl_is_zero_for_identical_logits_and_textbook_for_a_known_pair():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, -100, -100, 2, -100]])
    assert answer_token_kl(logits, logits.clone(), labels, temperature=2.0).item() == 0.0
    # one answer position: teacher p = (1/2, 1/2), student q = (1/4, 3/4) at T = 1
    student = torch.log(torch.tensor([[[0.25, 0.75], [0.0, 0.0]]]))
    teacher = torch.log(torch.tensor([[[0.5, 0.5], [0.0, 0.0]]]))
    labels = torch.tensor([[-100, 1]])
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    assert answer_token_kl(student, teacher, labels, 1.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_kl_only_counts_positions_that_predict_answer_tokens():
    logits = torch.zeros(1, 3, 4)
    other = logits.clone()
    other[0, 2] = torch.tensor([5.0, 0.0, 0.0, 0.0])  # the last position predicts nothing
    labels = torch.tensor([[-100, 2, 1]])
    assert answer_token_kl(logits, other, labels, 1.0).item() == 0.0
    assert answer_token_kl(logits, other, torch.full((1, 3), -100), 1.0).item() == 0.0


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(6, 4)
        self.head = torch.nn.Linear(4, 6)

    def forward(self, input_ids, attention_mask=None, labels=None, use_cache=None):
        return SimpleNamespace(logits=self.head(self.emb(input_ids)))


def test_lwf_penalty_is_zero_against_an_identical_copy_and_grows_when_the_model_moves():
    torch.manual_seed(0)
    model = TinyLM()
    teacher = frozen_copy(model)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([[-100, -100, 3, 4]])}
    lwf = Distillation(teacher, strength=2.0, temperature=3.0)
    assert lwf.penalty(batch, model(**batch)).item() == 0.0
    with torch.no_grad():
        model.head.bias.add_(torch.arange(6.0))
    moved = lwf.penalty(batch, model(**batch))
    outputs = model(**batch)
    expected = 2.0 * 9.0 * answer_token_kl(outputs.logits, teacher(**batch).logits, batch["labels"], 3.0)
    assert moved.item() == pytest.approx(expected.item()) and moved.item() > 0


def test_registry_options_and_config_validation():
    assert {"l2", "ewc", "lwf"} <= set(REGULARIZERS.names())
    assert REGULARIZERS.get("lwf").parse_options({"temperature": 4}).temperature == 4.0
    with pytest.raises(ConfigError, match="options.data"):
        RegularizerConfig("ewc", {"strength": 1.0}).validate()
    with pytest.raises(ConfigError, match="temperature"):
        RegularizerConfig("lwf", {"temperature": 0}).validate()
    with pytest.raises(ConfigError, match="Did you mean .temperature."):
        RegularizerConfig("lwf", {"temprature": 2}).validate()
    with pytest.raises(RegistryError, match="ewc"):
        RegularizerConfig("ewx").validate()
    RegularizerConfig().validate()  # no regularizer


def test_state_file_round_trip_and_mismatch(tmp_path):
    path = tmp_path / "regularizer.safetensors"
    write_state(path, {"a": torch.tensor([1.0, 2.0]), "b": torch.ones(2, 2)}, {"regularizer": "ewc"})
    state = read_state(path, {"a", "b"})
    assert torch.equal(state["a"], torch.tensor([1.0, 2.0]))
    with pytest.raises(TrainingError, match="other parameters"):
        read_state(path, {"a"})
