"""Benchmark scorers (evaluation/scorers.py) against independent copies of the official scoring code.

References, copied into this test and run on the same predictions as unforget:

- VQA accuracy: GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py at a013f00 ("Fixed processing
  answers bug", 2021): ``processPunctuation``, ``processDigitArticle`` and the accuracy loop of ``evaluate``, with
  its tables (the repository states no license; it says its code follows the MS COCO API, BSD-2). Predictions reach
  it through EvalAI's answer processor, as LLaVA's VQAv2 submission script and lmms-eval do: ``EvalAIAnswerProcessor``
  from lmms-eval, lmms_eval/tasks/_task_utils/vqa_eval_metric.py (MIT; copied there from facebookresearch/mmf,
  BSD). lmms-eval's ``vqav2_process_results`` (lmms_eval/tasks/vqav2/utils.py, MIT) is the second reference.
- POPE: RUCAIBox/POPE evaluate.py (MIT): the yes/no reading of an answer and TP/FP/TN/FN figures.
- GQA: lmms-eval's gqa task (``exact_match`` with ``ignore_case`` and ``ignore_punctuation``, as in HF evaluate's
  exact_match: punctuation removed with ``str.translate``).
Python 2 constructs (``print`` statements) were dropped; nothing else was changed.
"""

from __future__ import annotations

import re
import statistics
import string

import numpy as np
import pytest

from unforget.evaluation.scorers import (SCORERS, answer_vocabulary, benchmark_score, exact_match,
                                         normalize_vqa_answer, outside_vocabulary_rate, pope_summary, pope_yes_no,
                                         record_score, score_answer, vqa_accuracy)

# ===================================================================== official VQA evaluation (GT-Vision-Lab/VQA)

_OFFICIAL_CONTRACTIONS = {
    'aint': "ain't", 'arent': "aren't", 'cant': "can't", 'couldve': "could've", 'couldnt': "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", 'didnt': "didn't", 'doesnt': "doesn't",
    'dont': "don't", 'hadnt': "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", 'hasnt': "hasn't",
    'havent': "haven't", 'hed': "he'd", "hed've": "he'd've", "he'dve": "he'd've", 'hes': "he's", 'howd': "how'd",
    'howll': "how'll", 'hows': "how's", "Id've": "I'd've", "I'dve": "I'd've", 'Im': "I'm", 'Ive': "I've",
    'isnt': "isn't", 'itd': "it'd", "itd've": "it'd've", "it'dve": "it'd've", 'itll': "it'll", "let's": "let's",
    'maam': "ma'am", 'mightnt': "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    'mightve': "might've", 'mustnt': "mustn't", 'mustve': "must've", 'neednt': "needn't", 'notve': "not've",
    'oclock': "o'clock", 'oughtnt': "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    'shant': "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", 'shouldve': "should've",
    'shouldnt': "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": 'somebodyd',
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", 'somebodyll': "somebody'll",
    'somebodys': "somebody's", 'someoned': "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    'someonell': "someone'll", 'someones': "someone's", 'somethingd': "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", 'somethingll': "something'll",
    'thats': "that's", 'thered': "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    'therere': "there're", 'theres': "there's", 'theyd': "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    'theyll': "they'll", 'theyre': "they're", 'theyve': "they've", 'twas': "'twas", 'wasnt': "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", 'weve': "we've", 'werent': "weren't", 'whatll': "what'll",
    'whatre': "what're", 'whats': "what's", 'whatve': "what've", 'whens': "when's", 'whered': "where'd",
    'wheres': "where's", 'whereve': "where've", 'whod': "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    'wholl': "who'll", 'whos': "who's", 'whove': "who've", 'whyll': "why'll", 'whyre': "why're", 'whys': "why's",
    'wont': "won't", 'wouldve': "would've", 'wouldnt': "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", 'yall': "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", 'youd': "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", 'youll': "you'll", 'youre': "you're", 'youve': "you've",
}


class OfficialVQAEval:
    """vqaEval.py's VQAEval, reduced to the accuracy of each question (the per-type tables are left out)."""

    def __init__(self):
        self.contractions = _OFFICIAL_CONTRACTIONS
        self.manualMap = {'none': '0', 'zero': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4', 'five': '5',
                          'six': '6', 'seven': '7', 'eight': '8', 'nine': '9', 'ten': '10'}
        self.articles = ['a', 'an', 'the']
        self.periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)")
        self.commaStrip = re.compile(r"(\d)(\,)(\d)")
        self.punct = [';', r"/", '[', ']', '"', '{', '}',
                      '(', ')', '=', '+', '\\', '_', '-',
                      '>', '<', '@', '`', ',', '?', '!']

    def evaluate(self, gts, res):
        """gts: question id -> {"answers": [{"answer", "answer_id"}]}; res: question id -> {"answer"}."""
        accQA = {}
        for quesId in gts:
            for ansDic in gts[quesId]['answers']:
                ansDic['answer'] = ansDic['answer'].replace('\n', ' ')
                ansDic['answer'] = ansDic['answer'].replace('\t', ' ')
                ansDic['answer'] = ansDic['answer'].strip()
            resAns = res[quesId]['answer']
            resAns = resAns.replace('\n', ' ')
            resAns = resAns.replace('\t', ' ')
            resAns = resAns.strip()
            gtAcc = []
            gtAnswers = [ans['answer'] for ans in gts[quesId]['answers']]

            if len(set(gtAnswers)) > 1:
                for ansDic in gts[quesId]['answers']:
                    ansDic['answer'] = self.processPunctuation(ansDic['answer'])
                    ansDic['answer'] = self.processDigitArticle(ansDic['answer'])
                resAns = self.processPunctuation(resAns)
                resAns = self.processDigitArticle(resAns)

            for gtAnsDatum in gts[quesId]['answers']:
                otherGTAns = [item for item in gts[quesId]['answers'] if item != gtAnsDatum]
                matchingAns = [item for item in otherGTAns if item['answer'] == resAns]
                acc = min(1, float(len(matchingAns)) / 3)
                gtAcc.append(acc)
            avgGTAcc = float(sum(gtAcc)) / len(gtAcc)
            accQA[quesId] = avgGTAcc
        return accQA

    def processPunctuation(self, inText):
        outText = inText
        for p in self.punct:
            if (p + ' ' in inText or ' ' + p in inText) or (re.search(self.commaStrip, inText) != None):  # noqa: E711
                outText = outText.replace(p, '')
            else:
                outText = outText.replace(p, ' ')
        outText = self.periodStrip.sub("",
                                       outText,
                                       re.UNICODE)
        return outText

    def processDigitArticle(self, inText):
        outText = []
        tempText = inText.lower().split()
        for word in tempText:
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
            else:
                pass
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        outText = ' '.join(outText)
        return outText


class EvalAIAnswerProcessor:
    """lmms-eval's copy of mmf's EvalAI answer processor (tables shared with the official code above: they are the
    same entries)."""

    CONTRACTIONS = _OFFICIAL_CONTRACTIONS
    NUMBER_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                  "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
    ARTICLES = ["a", "an", "the"]
    PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
    COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
    PUNCTUATIONS = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                    "?", "!"]

    def word_tokenize(self, word):
        word = word.lower()
        word = word.replace(",", "").replace("?", "").replace("'s", " 's")
        return word.strip()

    def process_punctuation(self, in_text):
        out_text = in_text
        for p in self.PUNCTUATIONS:
            if (p + " " in in_text or " " + p in in_text) or (re.search(self.COMMA_STRIP, in_text) is not None):
                out_text = out_text.replace(p, "")
            else:
                out_text = out_text.replace(p, " ")
        out_text = self.PERIOD_STRIP.sub("", out_text, re.UNICODE)
        return out_text

    def process_digit_article(self, in_text):
        out_text = []
        temp_text = in_text.lower().split()
        for word in temp_text:
            word = self.NUMBER_MAP.setdefault(word, word)
            if word not in self.ARTICLES:
                out_text.append(word)
            else:
                pass
        for word_id, word in enumerate(out_text):
            if word in self.CONTRACTIONS:
                out_text[word_id] = self.CONTRACTIONS[word]
        out_text = " ".join(out_text)
        return out_text

    def __call__(self, item):
        item = self.word_tokenize(item)
        item = item.replace("\n", " ").replace("\t", " ").strip()
        item = self.process_punctuation(item)
        item = self.process_digit_article(item)
        return item


def lmms_eval_vqav2_process_results(doc, result):
    """lmms_eval/tasks/vqav2/utils.py ``vqav2_process_results``, returning the accuracy."""
    eval_ai_processor = EvalAIAnswerProcessor()
    resAns = eval_ai_processor(result[0])
    accuracy = 0
    if "answers" in doc and doc["answers"] is not None:
        for ansDic in doc["answers"]:
            ansDic["answer"] = ansDic["answer"].replace("\n", " ")
            ansDic["answer"] = ansDic["answer"].replace("\t", " ")
            ansDic["answer"] = ansDic["answer"].strip()
        gtAcc = []
        gtAnswers = [ans["answer"] for ans in doc["answers"]]
        if len(set(gtAnswers)) > 1:
            for ansDic in doc["answers"]:
                ansDic["answer"] = eval_ai_processor.process_punctuation(ansDic["answer"])
                ansDic["answer"] = eval_ai_processor.process_digit_article(ansDic["answer"])
            resAns = eval_ai_processor.process_punctuation(resAns)
            resAns = eval_ai_processor.process_digit_article(resAns)
        for gtAnsDatum in doc["answers"]:
            otherGTAns = [item for item in doc["answers"] if item != gtAnsDatum]
            matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
            acc = min(1, float(len(matchingAns)) / 3)
            gtAcc.append(acc)
        accuracy = statistics.mean(gtAcc)
    return accuracy


def official_pope(answers, labels):
    """RUCAIBox/POPE evaluate.py: (acc, precision, recall, f1, yes_ratio)."""
    answers = [{"answer": a} for a in answers]
    label_list = list(labels)
    for answer in answers:
        text = answer['answer']
        if text.find('.') != -1:
            text = text.split('.')[0]
        text = text.replace(',', '')
        words = text.split(' ')
        if 'No' in words or 'not' in words or 'no' in words:
            answer['answer'] = 'no'
        else:
            answer['answer'] = 'yes'
    for i in range(len(label_list)):
        if label_list[i] == 'no':
            label_list[i] = 0
        else:
            label_list[i] = 1
    pred_list = []
    for answer in answers:
        if answer['answer'] == 'no':
            pred_list.append(0)
        else:
            pred_list.append(1)
    pos = 1
    neg = 0
    yes_ratio = pred_list.count(1) / len(pred_list)
    TP, TN, FP, FN = 0, 0, 0, 0
    for pred, label in zip(pred_list, label_list):
        if pred == pos and label == pos:
            TP += 1
        elif pred == pos and label == neg:
            FP += 1
        elif pred == neg and label == neg:
            TN += 1
        elif pred == neg and label == pos:
            FN += 1
    precision = float(TP) / float(TP + FP)
    recall = float(TP) / float(TP + FN)
    f1 = 2 * precision * recall / (precision + recall)
    acc = (TP + TN) / (TP + TN + FP + FN)
    return acc, precision, recall, f1, yes_ratio


def hf_exact_match(prediction, reference):
    """HF evaluate's exact_match with ignore_case and ignore_punctuation (lmms-eval's gqa metric)."""
    prediction, reference = prediction.lower(), reference.lower()
    table = string.punctuation.maketrans("", "", string.punctuation)
    return float(prediction.translate(table) == reference.translate(table))


# ============================================================================================== the comparisons

TRICKY = [
    # (prediction, the ten human answers)
    ("Two", ["2"] * 10),  # humans agree: only the prediction is processed (number word -> digit)
    ("two", ["2"] * 3 + ["3"] * 7),  # 3 matches: 0.9
    ("A dog.", ["dog"] * 6 + ["the dog", "puppy", "puppy", "dogs"]),  # article and period
    ("the man's hat", ["man's hat"] * 4 + ["hat"] * 6),  # EvalAI splits "'s": no match, kept as the papers have it
    ("1,000", ["1000"] * 5 + ["1,000"] * 5),  # digit comma: punctuation deleted, not spaced
    ("yes\n", ["yes"] * 9 + ["no"]),
    ("Yes, it is", ["yes"] * 10),
    ("dont know", ["don't know"] * 4 + ["no"] * 6),  # contraction restored
    ("t-shirt", ["t shirt"] * 3 + ["tshirt"] * 3 + ["shirt"] * 4),  # hyphen inside a word -> space
    ("3.5", ["3.5"] * 4 + ["3"] * 6),  # period before a digit is kept
    ("left.", ["left"] * 2 + ["right"] * 8),
    ("red and white", ["red and white"] * 2 + ["red white"] * 4 + ["white and red"] * 4),
    ("", ["yes"] * 10),
    ("None", ["0"] * 5 + ["none"] * 5),  # "none" -> "0" on both sides once they disagree
    ("10:30", ["10:30"] * 6 + ["10 30"] * 4),
    ("(blue)", ["blue"] * 7 + ["navy"] * 3),
    ("Is it? yes", ["yes"] * 10),
    ("NO", ["no"] * 8 + ["No"] * 2),
    ("an apple", ["apple", "apples", "apple", "apple", "fruit", "apple", "apple", "red apple", "apple", "apple"]),
    ("unanswerable", ["unanswerable"] * 3 + ["unsuitable"] * 7),  # VizWiz
]


def _official(prediction: str, humans: list[str]) -> float:
    gts = {1: {"answers": [{"answer": a, "answer_id": k + 1} for k, a in enumerate(humans)]}}
    res = {1: {"answer": EvalAIAnswerProcessor()(prediction)}}
    return OfficialVQAEval().evaluate(gts, res)[1]


def _lmms(prediction: str, humans: list[str]) -> float:
    doc = {"answers": [{"answer": a, "answer_id": k + 1} for k, a in enumerate(humans)]}
    return lmms_eval_vqav2_process_results(doc, [prediction])


@pytest.mark.parametrize("prediction,humans", TRICKY)
def test_vqa_accuracy_equals_the_official_evaluation_on_tricky_answers(prediction, humans):
    ours = vqa_accuracy(prediction, humans)
    assert ours == pytest.approx(_official(prediction, humans), abs=1e-12)
    assert ours == pytest.approx(_lmms(prediction, humans), abs=1e-12)


def test_vqa_accuracy_steps_of_the_leave_one_out_average():
    # hand computation: k matching humans of 10 -> (k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10
    others = ["x"] * 10
    for k, want in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]:
        assert vqa_accuracy("cat", ["cat"] * k + others[k:]) == pytest.approx(want)


def test_vqa_accuracy_equals_the_official_evaluation_on_random_answers():
    # answers drawn from a pool with random case, articles, punctuation and number words: a normalisation slip
    # anywhere (table entry, punctuation order, when the humans are processed) shows on some of 400 questions
    rng = np.random.default_rng(0)
    words = ["two", "2", "dog", "the dog", "a dog", "Dog.", "yes", "Yes!", "no", "t-shirt", "t shirt", "1,000",
             "1000", "it's red", "its red", "don't", "dont", "red/white", "red white", "3.5", "none", "0", "(left)",
             "left", "man's", "mans", "ten", "10", "@home", "home", "ok?", "ok", "an apple", "apple;"]
    for _ in range(400):
        distinct = rng.integers(1, 4)
        pool = [words[i] for i in rng.choice(len(words), size=distinct, replace=False)]
        humans = [pool[i] for i in rng.integers(0, distinct, size=10)]
        prediction = str(words[rng.integers(len(words))])
        assert vqa_accuracy(prediction, humans) == pytest.approx(_official(prediction, humans), abs=1e-12), \
            (prediction, humans)


def test_normalisation_of_a_prediction_matches_evalai():
    for text in ["Two dogs.", "It's the man's", "1,000 people", "A (red) ball!", "dont", "x\ty\nz", "e.g. this"]:
        assert normalize_vqa_answer(text) == EvalAIAnswerProcessor()(text)


def test_gqa_exact_match_equals_lmms_eval_exact_match():
    for prediction, reference in [("Yes", "yes"), ("yes.", "yes"), ("left", "right"), ("t-shirt", "tshirt"),
                                  ("The table", "table"), ("white", "white"), ("Blue!", "blue"), ("no", "No")]:
        assert exact_match(prediction, reference) == hf_exact_match(prediction, reference)


POPE_ANSWERS = ["Yes", "No", "Yes, there is a dog.", "There is no dog in the image.", "I do not see one.",
                "yes", "no", "Not sure. Yes.", "The answer is yes", "No, there isn't.", "Yes.", "It is not.",
                "nope", "NO", "yes, no doubt"]
POPE_LABELS = ["yes", "no", "yes", "yes", "no", "yes", "no", "yes", "no", "no", "yes", "yes", "no", "no", "yes"]


def test_pope_reading_and_figures_equal_the_official_evaluate():
    acc, precision, recall, f1, yes_ratio = official_pope(POPE_ANSWERS, POPE_LABELS)
    scores = [score_answer("pope", a, r, None) for a, r in zip(POPE_ANSWERS, POPE_LABELS)]
    assert np.mean(scores) == pytest.approx(acc)
    figures = pope_summary(POPE_ANSWERS, POPE_LABELS, n_resamples=200)
    assert figures["precision"].value == pytest.approx(precision)
    assert figures["recall"].value == pytest.approx(recall)
    assert figures["f1"].value == pytest.approx(f1)
    assert figures["yes_ratio"].value == pytest.approx(yes_ratio)
    for est in figures.values():
        assert est.low <= est.value <= est.high
    # "NO", "nope" and "Not sure" read as yes, as in the official code (it looks for "No", "no", "not" only)
    assert pope_yes_no("NO") == "yes" and pope_yes_no("nope") == "yes" and pope_yes_no("Not sure.") == "yes"
    assert pope_yes_no("not sure. Yes.") == "no" and pope_yes_no("Yes. No.") == "yes"  # first sentence only


def test_benchmark_score_intervals_wilson_for_exact_bootstrap_for_vqa():
    exact = benchmark_score("exact", [1, 0, 1, 1], ["a", "b", "c", "d"], ["a", "x", "c", "d"])
    assert exact.score.method == "wilson" and exact.score.value == pytest.approx(0.75)
    vqa = benchmark_score("vqa", [1.0, 0.3, 0.6, 0.0, 0.9], [""] * 5, [""] * 5, n_resamples=300)
    assert vqa.score.method.startswith("bootstrap") and vqa.score.value == pytest.approx(0.56)
    assert vqa.score.low <= 0.56 <= vqa.score.high and vqa.score.n == 5
    assert benchmark_score("vqa", [], [], []) is None


def test_record_score_pairs_benchmark_scores_and_correctness():
    assert record_score({"score": 0.6, "correct": False}) == 0.6
    assert record_score({"correct": True}) == 1.0
    assert record_score({"correct": None}) is None and record_score({"skipped": True, "score": 1.0}) is None


def test_no_class_rate_of_free_answers_reads_the_answer_vocabulary():
    vocabulary = answer_vocabulary([], [], ["red", "blue", "red", "2"])
    assert vocabulary == ["2", "blue", "red"]
    # "Red." and "two" name vocabulary answers once normalised; "purple" and "I think red" do not
    rate = outside_vocabulary_rate(["Red.", "purple", "two", "I think red"], vocabulary,
                                   SCORERS["vqa"].normalize)
    assert rate == pytest.approx(0.5)
    assert answer_vocabulary(["cat", "dog"], ["x"], ["cat"]) == ["cat", "dog"]
    assert answer_vocabulary([], ["x", "y", "x"], ["cat"]) == ["x", "y"]


def test_vqa_scores_pair_across_base_and_finetuned_records_in_the_forgetting_test():
    # a study pairs the same question ids of two evaluations; a VQA set must pair its fractional scores (a 1.0 ->
    # 0.3 drop is forgetting even though both answers are "wrong" to an exact judge), not 1/0 correctness
    from unforget.stats import forgetting_delta
    from unforget.studies.tailor.summary import paired_scores, sample_scores, score_estimate

    base = [{"id": "q1", "score": 1.0, "correct": True}, {"id": "q2", "score": 0.6, "correct": False},
            {"id": "q3", "score": 0.3, "correct": False}, {"id": "q4", "skipped": True}]
    tuned = [{"id": "q3", "score": 0.0, "correct": False}, {"id": "q1", "score": 0.3, "correct": False},
             {"id": "q2", "score": 0.6, "correct": False}]
    before, after = paired_scores(sample_scores(base), sample_scores(tuned))
    assert before.tolist() == [1.0, 0.6, 0.3] and after.tolist() == [0.3, 0.6, 0.0]
    test = forgetting_delta(before, after, n_resamples=500)
    assert test.test == "paired_bootstrap" and test.delta.value == pytest.approx((0.7 + 0.0 + 0.3) / 3)
    estimate = score_estimate(base, 0.05)
    assert estimate.metric == "score" and estimate.estimate.value == pytest.approx(1.9 / 3)
