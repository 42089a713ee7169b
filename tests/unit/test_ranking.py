import numpy as np
import pytest
from PIL import Image

from unforget.evaluation.ranking import CandidateTrie, rank_classes, score_candidates
from unforget.models.build import LlavaShape, build_llava
from unforget.models.loading import LoadedModel
from unforget.models.tokenizer import train_tokenizer

CORPUS = ["What is the object in the image? red star blue star red circle green square seven 7 one"] * 20


@pytest.fixture(scope="module")
def tiny():
    tok = train_tokenizer(CORPUS, 320)
    model, proc = build_llava(tok, LlavaShape(), seed=3)
    model.eval()
    return LoadedModel(model, proc, "llava", "tiny")


def test_trie_shares_prefixes_and_feeds_only_internal_nodes():
    trie = CandidateTrie.build([[5, 6, 9], [5, 7, 9], [8, 9]])
    assert len(trie.token) == 7  # 5,6,9 | 7,9 | 8,9
    assert trie.paths[0][0] == trie.paths[1][0]  # shared first token
    assert trie.fed_nodes() == sorted({trie.paths[0][0], trie.paths[0][1], trie.paths[1][1], trie.paths[2][0]})
    anc = trie.ancestor_mask(trie.fed_nodes())
    assert anc.diagonal().all()
    assert int(anc.sum()) == 4 + 2  # two depth-2 nodes each see their parent


def test_tree_scores_equal_naive_full_forwards(tiny):
    images = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    questions = ["What is the object in the image?", "What?", "What is the object in the image? red star"]
    cands = ["red star", "blue star", "red circle", "green square", "7", "seven"]
    tree = score_candidates(tiny, images, questions, cands, method="tree", batch_size=2)
    naive = score_candidates(tiny, images, questions, cands, method="naive")
    np.testing.assert_allclose(tree, naive, atol=2e-4)
    mean = score_candidates(tiny, images, questions, cands, method="tree", normalise="mean")
    lengths = [len(tiny.tokenizer(c + tiny.tokenizer.eos_token, add_special_tokens=False)["input_ids"]) for c in cands]
    np.testing.assert_allclose(mean * np.array(lengths), tree, atol=1e-4)


def test_rank_classes_reports_prediction_rank_and_topk(tiny):
    images = [Image.new("RGB", (32, 32), (255, 0, 0))] * 2
    names = ["red star", "blue star", "red circle"]
    out = rank_classes(tiny, names, images, ["What?"] * 2, ["blue star", "red circle"], top_k=3)
    for r, ref in zip(out, ["blue star", "red circle"]):
        ordered = [n for n, _ in r["top_k"]]
        assert ordered[0] == r["prediction"]
        assert ordered.index(ref) == r["rank_of_reference"]
        scores = [s for _, s in r["top_k"]]
        assert scores == sorted(scores, reverse=True)
