"""Statistics behind every number unforget reports: intervals, paired tests, power, agreement.

Conventions used by every metrics file and report:

- An accuracy (a proportion) carries a Wilson score interval (`accuracy_estimate`).
- A figure derived from per-sample results (forgetting, retention, BWT, gain) carries a percentile
  bootstrap interval over samples (`bootstrap_interval`); when the arrays describe the same samples
  (base and fine-tuned model asked the same questions) the same indices are resampled for all of them.
- Base vs fine-tuned on the same samples is a paired design: exact McNemar for correct/incorrect
  (`mcnemar_exact`), paired bootstrap for continuous scores (`paired_bootstrap_test`).
- A claim holds only where its test is significant (`check_claim`); otherwise it is "not shown", with the
  number of samples that would show an effect of the observed size (`required_sample_size`).
- Spread over training seeds (`seed_summary`) is reported apart from the sample-level interval: the two
  answer different questions (would another seed change it / would another test set change it).

Every result is a dataclass whose ``to_dict()`` is JSON-ready (non-finite floats become ``None``).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Hashable, Literal, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# Resampled index blocks are built in chunks of at most this many elements (about 16 MB of int64).
_MAX_RESAMPLE_ELEMENTS = 2_000_000

Expectation = Literal["positive", "negative", "not_worse", "not_better", "no_change"]
Verdict = Literal["held", "not held", "not shown"]
# How each paired test is named in sentences and tables.
TEST_NAMES = {"mcnemar_exact": "exact McNemar", "paired_bootstrap": "paired bootstrap"}


# ---------------------------------------------------------------------------------------------------------
# Result types


@dataclass(frozen=True)
class Estimate:
    """A point value with its interval: ``value`` in ``[low, high]`` at ``confidence``.

    ``n`` is the number of samples behind it; ``method`` names how the interval was made
    ("wilson", "newcombe_paired_wilson", "bootstrap_percentile_paired", ...).
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": json_float(self.value),
            "low": json_float(self.low),
            "high": json_float(self.high),
            "n": int(self.n),
            "method": self.method,
            "confidence": float(self.confidence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Estimate:
        """Inverse of `to_dict` (``None`` bounds come back as NaN), for reports reading metrics.json."""
        return cls(
            value=_float_or_nan(data["value"]),
            low=_float_or_nan(data["low"]),
            high=_float_or_nan(data["high"]),
            n=int(data["n"]),
            method=str(data["method"]),
            confidence=float(data.get("confidence", 0.95)),
        )

    def format(self, digits: int = 2) -> str:
        """``"0.81 [0.77, 0.84]"``."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.format()

    def contains(self, x: float) -> bool:
        return bool(self.low <= x <= self.high)

    def negated(self) -> Estimate:
        """The same estimate for ``-value`` (bounds swap)."""
        return replace(self, value=-self.value, low=-self.high, high=-self.low)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of the same samples before and after (e.g. base vs fine-tuned model).

    ``delta`` is the effect with its interval, defined as ``delta_of`` says ("after - before", or
    "base - tuned" for forgetting). ``n_discordant_b`` counts samples that got worse (right before, wrong
    after; for scores: lower after), ``n_discordant_c`` those that got better. ``significant`` is
    ``p_value < alpha``; intervals are at confidence ``1 - alpha`` so they agree with the test.
    """

    delta: Estimate
    p_value: float
    test: str
    n_discordant_b: int
    n_discordant_c: int
    significant: bool
    alpha: float
    delta_of: str = "after - before"
    before: Estimate | None = None
    after: Estimate | None = None
    sd_of_differences: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta": self.delta.to_dict(),
            "delta_of": self.delta_of,
            "p_value": json_float(self.p_value),
            "test": self.test,
            "n_discordant_b": int(self.n_discordant_b),
            "n_discordant_c": int(self.n_discordant_c),
            "significant": bool(self.significant),
            "alpha": float(self.alpha),
            "before": self.before.to_dict() if self.before is not None else None,
            "after": self.after.to_dict() if self.after is not None else None,
            "sd_of_differences": json_float(self.sd_of_differences),
        }

    def one_sided_p(self, direction: Literal["positive", "negative"]) -> float:
        """p of the one-sided test whose alternative is "delta > 0" (``positive``) or "delta < 0" (``negative``).

        Exact McNemar: the binomial tail P(X >= c) (positive) or P(X >= b) (negative), X ~ Binomial(b + c, 1/2).
        Other tests: half the two-sided p when the observed delta points that way, else 1 - half (their two-sided
        p is symmetric by construction: the recentred bootstrap counts |m* - d| >= |d|).
        """
        if direction not in ("positive", "negative"):
            raise ConfigError(f"one_sided_p: direction={direction!r}; use 'positive' or 'negative'.")
        if self.test == "mcnemar_exact":
            b, c = self.n_discordant_b, self.n_discordant_c
            if b + c == 0:
                return 1.0
            k = c if direction == "positive" else b
            return float(scipy_stats.binom.sf(k - 1, b + c, 0.5))
        half = min(1.0, self.p_value / 2.0)
        wanted = 1.0 if direction == "positive" else -1.0
        return half if float(np.sign(self.delta.value)) == wanted else 1.0 - half


@dataclass(frozen=True)
class ClaimCheck:
    """The verdict on one claim: ``held`` is True / False / None for "held" / "not held" / "not shown"."""

    claim: str
    held: bool | None
    verdict: Verdict
    evidence: str
    test: PairedTest | None = None
    needed_n: int | None = None
    # How the verdict was reached, printed beside it: "one-sided exact McNemar" / "non-inferiority, margin 0.05"...,
    # the p-value of that test (None where an interval decides) and the margin (None for directional claims).
    method: str | None = None
    p_value: float | None = None
    margin: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "held": self.held,
            "verdict": self.verdict,
            "evidence": self.evidence,
            "test": self.test.to_dict() if self.test is not None else None,
            "needed_n": self.needed_n,
            "method": self.method,
            "p_value": json_float(self.p_value),
            "margin": json_float(self.margin),
        }


@dataclass(frozen=True)
class SeedSummary:
    """Mean and spread of one figure over training seeds (``std`` is the sample std, ddof=1)."""

    mean: float
    std: float | None
    min: float
    max: float
    n_seeds: int
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["std"] = json_float(self.std)
        data["values"] = [float(v) for v in self.values]
        return data


def json_float(x: float | None) -> float | None:
    """``x`` as a JSON-ready float: NaN and infinities become ``None`` (strict JSON has no such numbers)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------------------
# Proportions


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """Wilson score interval for ``successes`` out of ``n`` (Wilson 1927).

    With ``p = s/n`` and ``z`` the two-sided normal quantile::

        centre = (p + z^2/2n) / (1 + z^2/n)
        half   = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)

    Unlike the Wald interval it stays inside [0, 1] and keeps its coverage near 0 and 1.
    """
    _check_level(confidence, "confidence")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise DataError(f"wilson_interval needs n >= 1 samples, got n={n!r}: there is nothing to estimate.")
    if isinstance(successes, bool) or int(successes) != successes or not 0 <= successes <= n:
        raise DataError(f"wilson_interval: successes={successes!r} must be a whole number in [0, n={n}].")
    s, n = int(successes), int(n)
    p = s / n
    z = _z_two_sided(confidence)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # Exact at the edges: float rounding would otherwise leave 1e-17 outside [0, 1] or off the point.
    low = 0.0 if s == 0 else max(0.0, centre - half)
    high = 1.0 if s == n else min(1.0, centre + half)
    return Estimate(value=p, low=low, high=high, n=n, method="wilson", confidence=confidence)


def accuracy_estimate(correct: Sequence[bool | int], confidence: float = 0.95) -> Estimate:
    """Accuracy of per-sample correctness flags (True/False or 0/1) with its Wilson interval."""
    flags = _as_binary(correct, "correct")
    return wilson_interval(int(flags.sum()), flags.size, confidence)


# ---------------------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap_interval(
    statistic: Callable[..., np.ndarray],
    *arrays: Sequence[float] | np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = True,
) -> Estimate:
    """Percentile bootstrap interval of ``statistic`` over samples.

    ``statistic(*resampled)`` receives every array with a leading resample axis, shape ``(k, n_i)``, and
    must reduce over the last axis to shape ``(k,)``, e.g. ``lambda a, b: a.mean(-1) - b.mean(-1)``;
    all resamples are then computed in a few numpy calls. The point value is the statistic on the data
    as given; the bounds are the ``(1-c)/2`` and ``(1+c)/2`` percentiles of the resampled statistics.

    ``paired=True``: the arrays describe the same samples (one row = one question asked of several
    models) and have one length; each resample draws one set of indices used for all arrays.
    ``paired=False``: the arrays are independent groups, each resampled on its own.
    Resamples whose statistic is NaN (e.g. 0/0) are dropped, with a warning in the log.
    """
    point, resampled, n = _bootstrap_statistics(statistic, arrays, n_resamples, seed, paired)
    method = "bootstrap_percentile_paired" if paired and len(arrays) > 1 else "bootstrap_percentile"
    return interval_from_resamples(point, resampled, n=n, confidence=confidence, method=method)


def interval_from_resamples(
    value: float, resampled: np.ndarray, *, n: int, confidence: float = 0.95, method: str = "bootstrap_percentile"
) -> Estimate:
    """Turn bootstrap replicates of a statistic into an `Estimate` (percentile interval).

    For callers that compute several statistics from one set of resamples (continual metrics).
    """
    _check_level(confidence, "confidence")
    low, high = _percentile_bounds(np.asarray(resampled, dtype=float).reshape(-1), confidence)
    return Estimate(value=float(value), low=low, high=high, n=int(n), method=method, confidence=confidence)


def bootstrap_indices(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """``(n_resamples, n)`` indices drawn with replacement: one bootstrap resample per row."""
    return rng.integers(0, n, size=(n_resamples, n))


# ---------------------------------------------------------------------------------------------------------
# Paired tests


def mcnemar_exact(
    before_correct: Sequence[bool | int], after_correct: Sequence[bool | int], alpha: float = 0.05
) -> PairedTest:
    """Exact McNemar test of a change in accuracy on the same samples, and the change with its interval.

    With b = #(right before, wrong after) and c = #(wrong before, right after), under "no change" b is
    Binomial(b + c, 1/2); the two-sided p is ``min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))``, as in
    ``statsmodels.stats.contingency_tables.mcnemar(table, exact=True)`` (p = 1 when b + c = 0).

    ``delta`` = after accuracy - before accuracy = (c - b) / n, with the Newcombe (1998, method 10)
    hybrid score interval for a difference of paired proportions: the two Wilson intervals combined
    with the estimated correlation between the paired proportions. It is closed-form (no resampling),
    stays in [-1, 1] and keeps its coverage at small n and near 0/1 accuracy.
    """
    _check_level(alpha, "alpha")
    before = _as_binary(before_correct, "before_correct")
    after = _as_binary(after_correct, "after_correct")
    _check_same_length(before, after, "before_correct", "after_correct")
    n = before.size
    both = int(np.sum(before & after))
    b = int(np.sum(before & ~after))
    c = int(np.sum(~before & after))
    neither = n - both - b - c
    p_value = _mcnemar_exact_p(b, c)
    confidence = 1.0 - alpha
    delta = _newcombe_paired_interval(both, c, b, neither, confidence)
    return PairedTest(
        delta=delta,
        p_value=p_value,
        test="mcnemar_exact",
        n_discordant_b=b,
        n_discordant_c=c,
        significant=bool(p_value < alpha),
        alpha=alpha,
        delta_of="after - before",
        before=wilson_interval(both + b, n, confidence),
        after=wilson_interval(both + c, n, confidence),
    )


def paired_bootstrap_test(
    before_scores: Sequence[float],
    after_scores: Sequence[float],
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap test of a change in mean score on the same samples.

    ``delta`` = mean(after - before) with the percentile bootstrap interval of the mean difference.
    The p-value tests "mean difference = 0" by bootstrapping the differences recentred to mean zero
    (Efron & Tibshirani 1993, 16.4): ``p = (1 + #{|m*_b - d| >= |d|}) / (B + 1)``, where m*_b are the
    resampled mean differences and d the observed one; its resolution is ``1 / (n_resamples + 1)``.
    """
    _check_level(alpha, "alpha")
    before = _as_scores(before_scores, "before_scores")
    after = _as_scores(after_scores, "after_scores")
    _check_same_length(before, after, "before_scores", "after_scores")
    diffs = after - before
    confidence = 1.0 - alpha
    point, resampled, n = _bootstrap_statistics(_mean_last_axis, (diffs,), n_resamples, seed, True)
    delta = interval_from_resamples(
        point, resampled, n=n, confidence=confidence, method="bootstrap_percentile_paired"
    )
    extreme = int(np.sum(np.abs(resampled - point) >= abs(point)))
    p_value = (1 + extreme) / (len(resampled) + 1)
    return PairedTest(
        delta=delta,
        p_value=p_value,
        test="paired_bootstrap",
        n_discordant_b=int(np.sum(diffs < 0)),
        n_discordant_c=int(np.sum(diffs > 0)),
        significant=bool(p_value < alpha),
        alpha=alpha,
        delta_of="after - before",
        before=bootstrap_interval(_mean_last_axis, before, n_resamples=n_resamples, confidence=confidence, seed=seed),
        after=bootstrap_interval(_mean_last_axis, after, n_resamples=n_resamples, confidence=confidence, seed=seed),
        sd_of_differences=float(np.std(diffs, ddof=1)) if n > 1 else None,
    )


def forgetting_delta(
    base_correct: Sequence[float],
    tuned_correct: Sequence[float],
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    """Forgetting = base - tuned on the same samples (positive means the fine-tuned model forgot).

    Correct/incorrect flags (bool or 0/1) use `mcnemar_exact`; any other scores use
    `paired_bootstrap_test`. ``before`` is the base model, ``after`` the fine-tuned one; the delta and its
    interval are negated so that forgetting is positive.
    """
    base = np.asarray(base_correct)
    tuned = np.asarray(tuned_correct)
    if _looks_binary(base) and _looks_binary(tuned):
        test = mcnemar_exact(base, tuned, alpha=alpha)
    else:
        test = paired_bootstrap_test(base, tuned, alpha=alpha, n_resamples=n_resamples, seed=seed)
    return replace(test, delta=test.delta.negated(), delta_of="base - tuned")


def retention(
    base: Sequence[float],
    tuned: Sequence[float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Retention = mean(tuned) / mean(base) on the same samples (1.0 = nothing lost; x100 for %).

    Paired percentile bootstrap interval (the same samples are resampled for both models).
    """
    base_arr = _as_scores(base, "base")
    tuned_arr = _as_scores(tuned, "tuned")
    _check_same_length(base_arr, tuned_arr, "base", "tuned")
    if base_arr.mean() == 0:
        raise DataError(
            "retention is undefined: the base model scores 0 on every one of these samples. "
            "Report the fine-tuned accuracy (accuracy_estimate) instead."
        )
    return bootstrap_interval(
        _ratio_of_means, base_arr, tuned_arr, n_resamples=n_resamples, confidence=confidence, seed=seed
    )


# ---------------------------------------------------------------------------------------------------------
# Power and claims


def required_sample_size(
    p_before: float,
    p_after: float,
    discordance: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Samples needed for a two-sided test at ``alpha`` to detect ``p_after - p_before`` with ``power``.

    Paired McNemar design (``discordance`` = share of samples whose correctness differs between the two
    models, psi = p10 + p01, with delta = p_after - p_before = p01 - p10), Connor (1987)::

        n = (z_{1-alpha/2} * sqrt(psi) + z_{power} * sqrt(psi - delta^2))^2 / delta^2

    The formula is for the asymptotic McNemar test; the exact test used by `mcnemar_exact` is slightly
    conservative, so its power at this n is a few points lower (about 0.77 instead of 0.80 in simulation
    for psi = 0.2, delta = 0.08).

    Without ``discordance`` it falls back to `required_sample_size_unpaired` (independent samples of
    this size for each model), which ignores the pairing and so is conservative when the two models
    agree on most samples.
    """
    if discordance is None:
        return required_sample_size_unpaired(p_before, p_after, alpha=alpha, power=power)
    _check_probability(p_before, "p_before")
    _check_probability(p_after, "p_after")
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    delta = p_after - p_before
    if delta == 0:
        raise ConfigError("required_sample_size: p_before equals p_after, so there is no effect to detect.")
    if not abs(delta) <= discordance <= 1:
        raise ConfigError(
            f"required_sample_size: discordance={discordance} is impossible for a change of {delta:+.4f}; "
            f"it must lie in [|p_after - p_before|, 1] = [{abs(delta):.4f}, 1]."
        )
    z_alpha = _z_two_sided(1.0 - alpha)
    z_power = float(scipy_stats.norm.ppf(power))
    root = z_alpha * math.sqrt(discordance) + z_power * math.sqrt(discordance - delta * delta)
    return max(1, math.ceil(root * root / (delta * delta) - 1e-9))


def required_sample_size_unpaired(p_before: float, p_after: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Samples per group for a two-sided two-proportion z-test (pooled variance under the null)::

        n = (z_{1-alpha/2} * sqrt(2 pbar (1 - pbar)) + z_{power} * sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2
    """
    _check_probability(p_before, "p_before")
    _check_probability(p_after, "p_after")
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    delta = p_after - p_before
    if delta == 0:
        raise ConfigError("required_sample_size: p_before equals p_after, so there is no effect to detect.")
    pooled = (p_before + p_after) / 2
    z_alpha = _z_two_sided(1.0 - alpha)
    z_power = float(scipy_stats.norm.ppf(power))
    root = z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_power * math.sqrt(
        p_before * (1 - p_before) + p_after * (1 - p_after)
    )
    return max(1, math.ceil(root * root / (delta * delta) - 1e-9))


def check_claim(
    claim: str,
    test: PairedTest,
    expect: Expectation,
    *,
    subject: str = "accuracy",
    margin: float = 0.0,
    power: float = 0.8,
) -> ClaimCheck:
    """Turn a paired test and what the claim states into a verdict with the numbers behind it, the claim tested
    as stated (one-sided where the claim has a direction).

    ``expect="positive"`` / ``"negative"`` ("improves", "forgets more"): the one-sided test of that direction
    (`PairedTest.one_sided_p`) at the test's alpha: "held" when it rejects, "not held" when the one-sided test of
    the opposite direction rejects, otherwise "not shown", with ``needed_n`` = samples that would show an effect
    of the observed size with ``power`` (`required_sample_size` for McNemar, the normal approximation for
    scores).
    ``expect="not_worse"`` ("keeps", "stays", "no forgetting" where delta = after - before): non-inferiority with
    ``margin``: "held" when the lower end of the delta's (1 - alpha) interval lies above ``-margin`` (a one-sided
    test at alpha/2, the usual non-inferiority convention), "not held" when its upper end lies below
    ``-margin``, otherwise "not shown". ``"not_better"`` is the mirror (delta <= +margin, e.g. when delta is
    "base - tuned" forgetting). ``"no_change"``: two-sided equivalence, the whole interval inside +/-margin.
    ``subject`` names the figure in the evidence sentence, e.g. "accuracy on shapes".
    """
    if expect not in ("positive", "negative", "not_worse", "not_better", "no_change"):
        raise ConfigError(f"check_claim: expect={expect!r}; use 'positive', 'negative', 'not_worse', 'not_better' "
                          "or 'no_change'.")
    delta = test.delta
    needed_n: int | None = None
    name = TEST_NAMES.get(test.test, test.test)
    level = f"{1 - test.alpha:.0%}"
    p_used: float | None = None
    if expect in ("not_worse", "not_better", "no_change"):
        if margin <= 0:
            raise ConfigError(
                f"check_claim: expect={expect!r} needs margin > 0, the largest change that still counts as "
                "'no change' (e.g. margin=0.02 for two accuracy points): a test can never show an effect of 0."
            )
        if expect == "not_worse":
            method = f"non-inferiority (margin {margin:g}; lower end of the {level} interval)"
            if delta.low > -margin:
                verdict: Verdict = "held"
                reason = f"the lower end {delta.low:+.3f} lies above -{margin:g}"
            elif delta.high < -margin:
                verdict, reason = "not held", f"the whole interval lies below -{margin:g}"
            else:
                verdict, reason = "not shown", f"the lower end {delta.low:+.3f} reaches below -{margin:g}"
        elif expect == "not_better":
            method = f"non-superiority (margin {margin:g}; upper end of the {level} interval)"
            if delta.high < margin:
                verdict, reason = "held", f"the upper end {delta.high:+.3f} lies below +{margin:g}"
            elif delta.low > margin:
                verdict, reason = "not held", f"the whole interval lies above +{margin:g}"
            else:
                verdict, reason = "not shown", f"the upper end {delta.high:+.3f} reaches above +{margin:g}"
        else:
            method = f"equivalence (margin +/-{margin:g}; the {level} interval)"
            if -margin <= delta.low and delta.high <= margin:
                verdict, reason = "held", f"the interval lies within +/-{margin:g}"
            elif delta.low > margin or delta.high < -margin:
                verdict, reason = "not held", f"the interval lies beyond +/-{margin:g}"
            else:
                verdict, reason = "not shown", f"the interval crosses +/-{margin:g}"
        used_margin: float | None = margin
    else:
        opposite = "negative" if expect == "positive" else "positive"
        p_used = test.one_sided_p(expect)  # type: ignore[arg-type]
        p_other = test.one_sided_p(opposite)  # type: ignore[arg-type]
        sign = ">" if expect == "positive" else "<"
        method = f"one-sided {name} (delta {sign} 0, alpha {test.alpha:g})"
        used_margin = None
        wanted = 1.0 if expect == "positive" else -1.0
        observed = float(np.sign(delta.value))
        if p_used < test.alpha:
            verdict, reason = "held", f"one-sided {name} p={p_used:.2g} < alpha={test.alpha:g}"
        elif p_other < test.alpha:
            verdict = "not held"
            reason = f"one-sided {name} p={p_other:.2g} < alpha={test.alpha:g} in the opposite direction"
        else:
            verdict, reason = "not shown", f"one-sided {name} p={p_used:.2g}, not below alpha={test.alpha:g}"
            if observed == wanted:
                needed_n = _needed_n_for_observed_effect(test, power)
                if needed_n is not None:
                    reason += (
                        f"; about {needed_n:,} paired samples would show an effect of this size "
                        f"with {power:.0%} power"
                    )
            elif observed == 0:
                reason += "; no change was observed"
            else:
                reason += "; the observed change goes the other way"
    if used_margin is not None:
        reason = f"{method.split(' (')[0]} with margin {used_margin:g}: {reason}"
    evidence = f"{_describe_test(test, subject)}: {reason}"
    held = {"held": True, "not held": False, "not shown": None}[verdict]
    return ClaimCheck(claim=claim, held=held, verdict=verdict, evidence=evidence, test=test, needed_n=needed_n,
                      method=method, p_value=p_used, margin=used_margin)


# ---------------------------------------------------------------------------------------------------------
# Seeds and agreement


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean, sample standard deviation (None for a single seed), min and max of one figure over seeds."""
    arr = _as_scores(values, "seed values")
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else None
    return SeedSummary(
        mean=float(arr.mean()),
        std=std,
        min=float(arr.min()),
        max=float(arr.max()),
        n_seeds=int(arr.size),
        values=tuple(float(v) for v in arr),
    )


def agreement_rate(a: Sequence[Hashable], b: Sequence[Hashable], confidence: float = 0.95) -> Estimate:
    """Share of samples on which two raters (judges) give the same label, with its Wilson interval."""
    codes_a, codes_b, _ = _encode_label_pairs(a, b)
    return wilson_interval(int(np.sum(codes_a == codes_b)), codes_a.size, confidence)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa = (p_o - p_e) / (1 - p_e) between two raters' labels on the same samples.

    p_o is the observed agreement, p_e the agreement expected by chance from each rater's label shares.
    NaN when p_e = 1 (both raters always give the same single label: kappa is undefined).
    """
    codes_a, codes_b, n_labels = _encode_label_pairs(a, b)
    return float(_kappa_last_axis(codes_a[None, :], codes_b[None, :], n_labels)[0])


def cohen_kappa_estimate(
    a: Sequence[Hashable],
    b: Sequence[Hashable],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """`cohen_kappa` with a paired percentile bootstrap interval over samples."""
    codes_a, codes_b, n_labels = _encode_label_pairs(a, b)
    return bootstrap_interval(
        lambda x, y: _kappa_last_axis(x, y, n_labels),
        codes_a,
        codes_b,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------------------
# Internals


def _bootstrap_statistics(
    statistic: Callable[..., np.ndarray],
    arrays: Sequence[Sequence[float] | np.ndarray],
    n_resamples: int,
    seed: int,
    paired: bool,
) -> tuple[float, np.ndarray, int]:
    """Point value, the ``n_resamples`` resampled statistics, and the sample count for the Estimate."""
    if not arrays:
        raise DataError("bootstrap needs at least one array of per-sample values.")
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ConfigError(f"n_resamples={n_resamples!r}: use a whole number >= 1 (2000 is usual).")
    data = []
    for i, arr in enumerate(arrays):
        a = np.asarray(arr)
        if a.ndim != 1 or a.size == 0:
            raise DataError(f"bootstrap array {i} must be a non-empty 1-D sequence, got shape {a.shape}.")
        data.append(a)
    lengths = [a.size for a in data]
    if paired and len(set(lengths)) > 1:
        raise DataError(
            f"paired bootstrap needs arrays over the same samples, got lengths {lengths}. "
            "Align them by sample id, or pass paired=False for independent groups."
        )
    point = _call_statistic(statistic, [a[None, :] for a in data], 1)[0]
    rng = np.random.default_rng(seed)
    resampled = np.empty(int(n_resamples), dtype=float)
    per_resample = lengths[0] if paired else sum(lengths)
    chunk = max(1, _MAX_RESAMPLE_ELEMENTS // per_resample)
    for start in range(0, int(n_resamples), chunk):
        k = min(chunk, int(n_resamples) - start)
        if paired:
            idx = bootstrap_indices(rng, lengths[0], k)
            batch = [a[idx] for a in data]
        else:
            batch = [a[bootstrap_indices(rng, a.size, k)] for a in data]
        resampled[start : start + k] = _call_statistic(statistic, batch, k)
    n = lengths[0] if paired else sum(lengths)
    return float(point), resampled, n


def _call_statistic(statistic: Callable[..., np.ndarray], batch: list[np.ndarray], k: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(statistic(*batch), dtype=float)
    if out.shape != (k,):
        raise TypeError(
            f"bootstrap statistic returned shape {out.shape} for {k} resample(s); it must reduce over the "
            f"last axis and return shape ({k},), e.g. lambda a: a.mean(-1)."
        )
    return out


def _percentile_bounds(resampled: np.ndarray, confidence: float) -> tuple[float, float]:
    kept = resampled[~np.isnan(resampled)]
    dropped = resampled.size - kept.size
    if dropped:
        logger.warning("bootstrap: %d of %d resamples gave an undefined statistic and were dropped",
                       dropped, resampled.size)
    if kept.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0 * 100.0
    if np.isinf(kept).any():
        # Interpolating towards an infinite replicate gives NaN; take order statistics instead.
        return float(np.percentile(kept, tail, method="lower")), float(np.percentile(kept, 100 - tail, method="higher"))
    return float(np.percentile(kept, tail)), float(np.percentile(kept, 100 - tail))


def _mcnemar_exact_p(b: int, c: int) -> float:
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * scipy_stats.binom.cdf(min(b, c), b + c, 0.5)))


def _newcombe_paired_interval(
    both: int, only_first: int, only_second: int, neither: int, confidence: float
) -> Estimate:
    """Newcombe (1998) method 10 interval for p_first - p_second on paired binary data.

    ``only_first`` counts samples right for the first measure only, ``only_second`` right for the second only.
    """
    n = both + only_first + only_second + neither
    first_right, second_right = both + only_first, both + only_second
    p1, p2 = first_right / n, second_right / n
    w1 = wilson_interval(first_right, n, confidence)
    w2 = wilson_interval(second_right, n, confidence)
    margins = first_right * (n - first_right) * second_right * (n - second_right)
    if margins == 0:
        phi = 0.0
    else:
        # Newcombe's correlation estimate, with his correction of ad - bc towards zero by n/2 when positive.
        cross = both * neither - only_first * only_second
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross >= 0:
            phi = 0.0
        else:
            phi = cross / math.sqrt(margins)
    d1_low, d1_high = p1 - w1.low, w1.high - p1
    d2_low, d2_high = p2 - w2.low, w2.high - p2
    delta = p1 - p2
    lower = delta - math.sqrt(max(0.0, d1_low**2 - 2 * phi * d1_low * d2_high + d2_high**2))
    upper = delta + math.sqrt(max(0.0, d2_low**2 - 2 * phi * d2_low * d1_high + d1_high**2))
    return Estimate(
        value=delta,
        low=max(-1.0, lower),
        high=min(1.0, upper),
        n=n,
        method="newcombe_paired_wilson",
        confidence=confidence,
    )


def _needed_n_for_observed_effect(test: PairedTest, power: float) -> int | None:
    """Samples a one-sided test at the test's alpha (= a two-sided one at 2 alpha) needs to show the observed effect."""
    alpha = min(2.0 * test.alpha, 0.999)
    if test.test == "mcnemar_exact" and test.before is not None and test.after is not None:
        n = test.delta.n
        b, c = test.n_discordant_b, test.n_discordant_c
        if b == c:
            return None
        # The observed change and discordance; p_before/p_after only enter through their difference.
        # |c - b| <= b + c always; clamp so rounding of (c - b) / n never makes the discordance look too small
        delta = (c - b) / n
        return required_sample_size(
            test.before.value, test.before.value + delta, discordance=min(1.0, max((b + c) / n, abs(delta)) + 1e-9),
            alpha=alpha, power=power,
        )
    if test.sd_of_differences is not None and test.delta.value != 0 and test.sd_of_differences > 0:
        z = _z_two_sided(1.0 - alpha) + float(scipy_stats.norm.ppf(power))
        return max(2, math.ceil((z * test.sd_of_differences / abs(test.delta.value)) ** 2))
    return None


def _describe_test(test: PairedTest, subject: str) -> str:
    parts = []
    if test.before is not None and test.after is not None:
        if test.after.value < test.before.value:
            verb = "fell"
        elif test.after.value > test.before.value:
            verb = "rose"
        else:
            verb = "stayed"
        parts.append(f"{subject} {verb} from {test.before} to {test.after}")
    else:
        parts.append(subject)
    parts.append(f"({test.delta_of} = {test.delta.format(3)}, n={test.delta.n})")
    # no test and no p here: the verdict's own test (one-sided, or an interval against a margin) follows
    parts.append(f"({test.n_discordant_b} samples worse, {test.n_discordant_c} better)")
    return " ".join(parts)


def _kappa_last_axis(codes_a: np.ndarray, codes_b: np.ndarray, n_labels: int) -> np.ndarray:
    observed = np.mean(codes_a == codes_b, axis=-1)
    chance = np.zeros(codes_a.shape[:-1])
    for label in range(n_labels):
        chance += np.mean(codes_a == label, axis=-1) * np.mean(codes_b == label, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (observed - chance) / (1.0 - chance)
    # Chance agreement of 1 means a single label everywhere: kappa is undefined, not +-inf.
    return np.where(np.isclose(chance, 1.0), np.nan, kappa)


def _encode_label_pairs(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, int]:
    labels_a, labels_b = list(a), list(b)
    if not labels_a:
        raise DataError("agreement needs at least one sample labelled by both raters; got none.")
    if len(labels_a) != len(labels_b):
        raise DataError(
            f"the two raters labelled different numbers of samples ({len(labels_a)} vs {len(labels_b)}); "
            "align them by sample id first."
        )
    codes: dict[Hashable, int] = {}
    codes_a = np.array([codes.setdefault(x, len(codes)) for x in labels_a], dtype=np.int64)
    codes_b = np.array([codes.setdefault(x, len(codes)) for x in labels_b], dtype=np.int64)
    return codes_a, codes_b, len(codes)


def _mean_last_axis(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=-1)


def _ratio_of_means(base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
    return tuned.mean(axis=-1) / base.mean(axis=-1)


def _looks_binary(arr: np.ndarray) -> bool:
    if arr.dtype == bool:
        return True
    if arr.dtype.kind not in "iuf":
        return False
    return bool(np.isin(arr, (0, 1)).all())


def _as_binary(values: Sequence[bool | int] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D sequence of True/False (or 0/1), got shape {arr.shape}.")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{name} must hold True/False or 0/1 per sample, got values of type {arr.dtype}.")
    bad = np.flatnonzero(~np.isin(arr, (0, 1)))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{name}[{i}] is {arr[i]!r}: correctness must be True/False or 0/1 "
            "(use paired_bootstrap_test for continuous scores)."
        )
    return arr.astype(bool)


def _as_scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must hold numbers, got values of type {arr.dtype}.")
    arr = arr.astype(float)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{name}[{i}] is {arr[i]!r}: every value must be a finite number.")
    return arr


def _check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.size != b.size:
        raise DataError(
            f"{name_a} has {a.size} samples but {name_b} has {b.size}: a paired comparison needs the same "
            "samples in the same order (align them by sample id)."
        )


def _check_level(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name}={value!r} must be a number strictly between 0 and 1 (e.g. 0.95 / 0.05 / 0.8).")


def _check_probability(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name}={value!r} must be a proportion in [0, 1].")


def _z_two_sided(confidence: float) -> float:
    return float(scipy_stats.norm.ppf(0.5 + confidence / 2.0))


def _float_or_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)
