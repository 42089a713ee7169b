"""Checkpoints of a model that FSDP shards (torch's ``fully_shard``, which runs on CPU under gloo; accelerate only
enables FSDP on GPUs, so tests/gpu runs the same path through ``accelerate launch``):

* every process takes part in gathering the weights and the optimizer state; the checkpoint holds the whole
  tensors, equal to those of the same step taken by one unsharded process;
* a sharded model and optimizer resume from it and take the next step exactly as the unsharded one does.
"""

import json
from pathlib import Path

import pytest

from tests.child_process import torchrun, write_script

SCRIPT = r"""
import json, os, sys
from pathlib import Path
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from accelerate import Accelerator
from tests.finetune_helpers import build_tiny_llava
from unforget.training.checkpoints import TrainerState, is_sharded, load_optimizer, save_checkpoint
from unforget.training.methods.base import METHODS

method_name, out = sys.argv[1], Path(sys.argv[2])
accelerator = Accelerator(cpu=True)
options = {"lora": {"r": 4, "dropout": 0.0}, "full": {}}[method_name]
method = METHODS.get(method_name)

def fresh():
    torch.manual_seed(0)
    model, processor = build_tiny_llava()
    return method.prepare(model, method.parse_options(options)), processor

def shard(model):
    for layer in model.get_submodule("base_model.model.model.language_model.layers" if method_name == "lora"
                                     else "model.language_model.layers"):
        fully_shard(layer)
    fully_shard(model)
    return model

def step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 200, (4, 12), generator=g)  # the same batch on every process
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()

def optimizer(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

# the reference: one process, no sharding, two steps
ref, processor = fresh()
ref_opt = optimizer(ref)
step(ref, ref_opt, 1)
after_one = {n: p.detach().clone() for n, p in ref.named_parameters() if p.requires_grad}
ref_opt_state = {n: ref_opt.state[p]["exp_avg"].clone() for n, p in ref.named_parameters()
                  if "exp_avg" in ref_opt.state.get(p, {})}  # the projector has no gradient without an image
second_loss = step(ref, ref_opt, 2)
after_two = {n: p.detach().clone() for n, p in ref.named_parameters() if p.requires_grad}

class Scheduler:
    def state_dict(self):
        return {}

model, _ = fresh()
model = shard(model)
assert is_sharded(model)
opt = optimizer(model)
step(model, opt, 1)
state = TrainerState(method=method_name, kind="epoch", global_step=1, epochs_done=1, step_in_epoch=0,
                     steps_per_epoch=1, total_steps=2, num_processes=accelerator.num_processes, base_model="tiny")
path = save_checkpoint(accelerator, out, state, method=method, model=model, wrapped=model, processor=processor,
                       optimizer=opt, scheduler=Scheduler())

# resume: a fresh sharded model with the checkpoint's weights (loaded before sharding, as the trainer does)
again, _ = fresh()
method.load(again, path)
again = shard(again)
again_opt = optimizer(again)
load_optimizer(again, again_opt, path)
resumed_loss = step(again, again_opt, 2)
full = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach()
         for n, p in again.named_parameters() if p.requires_grad}
if accelerator.is_main_process:
    torch.save({"after_one": after_one, "ref_opt_state": ref_opt_state, "after_two": after_two,
                 "resumed": full}, out / "reference.pt")
    (out / "losses.json").write_text(json.dumps({"reference": second_loss, "resumed": resumed_loss,
                                                  "path": str(path)}))
accelerator.wait_for_everyone()
"""


def run_sharded(tmp_path: Path, method: str) -> Path:
    script = write_script(tmp_path / "fsdp_checkpoint.py", SCRIPT, cli=False)
    out = tmp_path / "checkpoints"
    done = torchrun(script, [method, str(out)], timeout=400, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_sharded_model_checkpoints_whole_tensors_and_resumes_sharded(tmp_path, method):
    import torch
    from safetensors.torch import load_file

    from unforget.training.checkpoints import OPTIMIZER_META, OPTIMIZER_TENSORS

    out = run_sharded(tmp_path, method)
    ref = torch.load(out / "reference.pt")
    losses = json.loads((out / "losses.json").read_text())
    folder = Path(losses["path"])
    if method == "lora":
        saved = load_file(str(folder / "adapter_model.safetensors"))
        # peft's file names drop the adapter name: ...q_proj.lora_A.weight for ...q_proj.lora_A.default.weight
        expected = {k.replace(".default.", ".").removeprefix("base_model.model."): v
                    for k, v in ref["after_one"].items()}
        assert {k.removeprefix("base_model.model.") for k in saved} == set(expected)
        for k, v in saved.items():
            torch.testing.assert_close(v, expected[k.removeprefix("base_model.model.")])
    else:
        from safetensors import safe_open

        names = set()
        for file in folder.glob("*.safetensors"):
            with safe_open(str(file), "pt") as fh:
                names |= set(fh.keys())
        assert len(names) > len(ref["after_one"])  # the whole model folder, frozen tower included
        from transformers import LlavaForConditionalGeneration

        back = dict(LlavaForConditionalGeneration.from_pretrained(folder).named_parameters())
        for k, v in ref["after_one"].items():
            torch.testing.assert_close(back[k], v)
    meta = json.loads((folder / OPTIMIZER_META).read_text())
    assert meta["keys"] == "names"
    moments = load_file(str(folder / OPTIMIZER_TENSORS))
    for name, exp_avg in ref["ref_opt_state"].items():
        torch.testing.assert_close(moments[f"state.{name}.exp_avg"], exp_avg)  # whole, not a shard
    # the sharded resume takes the second step the unsharded model took
    assert losses["resumed"] == pytest.approx(losses["reference"], rel=1e-5)
    for k, v in ref["after_two"].items():
        torch.testing.assert_close(ref["resumed"][k], v, rtol=1e-4, atol=1e-6)
