"""One judge endpoint and one cache folder shared by several evaluation processes (a sharded `unforget eval` on a
node, or several nodes on a shared filesystem): every process gets every verdict, the cache holds each judgement
once with an intact audit log, and any later process is served from the cache alone."""

import json
import multiprocessing
from pathlib import Path

from tests.judge_server import JudgeServer
from unforget.evaluation.judges.base import JudgeItem
from unforget.evaluation.judges.cache import JudgeCache

Q = "What is in the image? Answer with the colour and the shape."
LABELS = ["red star", "blue circle", "green square"]
SHARED = [f"red star number {i}" for i in range(20)]  # every process judges these
PROCESSES = 3


def items_of(worker: int) -> list[JudgeItem]:
    own = [f"blue circle from {worker} number {i}" for i in range(5)]
    return [JudgeItem(Q, a, "red star", LABELS, {}) for a in SHARED + own]


def _judge_all(base_url: str, cache: str, worker: int, out: str) -> None:
    from unforget.evaluation.judges.llm import LLMJudge

    judge = LLMJudge(base_url=base_url, model="judge-test", api_key="k", cache_dir=cache, backoff=0.0,
                     max_retries=3, timeout=10.0, concurrency=4)
    verdicts = judge.judge(items_of(worker))
    judge.close()
    Path(out).write_text(json.dumps([v.correct for v in verdicts]))


def test_judge_cache_shared_by_several_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "cache"
    with JudgeServer(sleep_s=0.0) as server:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_judge_all, args=(server.base_url, str(cache), w, str(tmp_path / f"{w}.json")))
                 for w in range(PROCESSES)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        results = [json.loads((tmp_path / f"{w}.json").read_text()) for w in range(PROCESSES)]
        assert all(None not in r for r in results)  # every judgement has a verdict
        assert results[0][:20] == results[1][:20] == results[2][:20]
        asked = server.calls
        assert 20 + 5 * PROCESSES <= asked <= 20 * PROCESSES + 5 * PROCESSES  # shared ones asked at most once each

        lines = (cache / "judge_cache.jsonl").read_text().splitlines()
        assert len(lines) == asked and all(json.loads(line)["cache_key"] for line in lines)  # no torn lines
        with JudgeCache(cache) as c:
            assert len(c) == 20 + 5 * PROCESSES  # each distinct judgement once

        # a later process on the same folder: all from the cache, no call
        _judge_all(server.base_url, str(cache), 0, str(tmp_path / "again.json"))
        assert server.calls == asked
        assert json.loads((tmp_path / "again.json").read_text()) == results[0]
