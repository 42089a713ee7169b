"""unforget.stats against hand-computed cases, scipy, statsmodels and simulated populations."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from unforget.errors import ConfigError, DataError
from unforget.stats import (
    Estimate,
    accuracy_estimate,
    agreement_rate,
    bootstrap_interval,
    check_claim,
    cohen_kappa,
    cohen_kappa_estimate,
    forgetting_delta,
    mcnemar_exact,
    paired_bootstrap_test,
    required_sample_size,
    required_sample_size_unpaired,
    retention,
    seed_summary,
    wilson_interval,
)

Z95 = 1.959963984540054


def paired_flags(both: int, only_before: int, only_after: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness flags with the given 2x2 paired table (before right/after right counts)."""
    before = np.array([1] * both + [1] * only_before + [0] * only_after + [0] * neither, dtype=bool)
    after = np.array([1] * both + [0] * only_before + [1] * only_after + [0] * neither, dtype=bool)
    return before, after


# ---------------------------------------------------------------------------------------------------------
# Wilson


def test_wilson_hand_computed_zero_successes():
    # s = 0: low = 0, high = (z^2/n) / (1 + z^2/n)
    est = wilson_interval(0, 10)
    z2n = Z95**2 / 10
    assert est.value == 0.0
    assert est.low == 0.0
    assert est.high == pytest.approx(z2n / (1 + z2n), abs=1e-12)
    assert est.n == 10 and est.method == "wilson"


def test_wilson_hand_computed_half():
    # p = 1/2: centre is exactly 1/2 and half-width = z * sqrt(1/(4n) + z^2/(4n^2)) / (1 + z^2/n)
    n = 40
    est = wilson_interval(20, n)
    half = Z95 * math.sqrt(0.25 / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    assert est.low == pytest.approx(0.5 - half, abs=1e-12)
    assert est.high == pytest.approx(0.5 + half, abs=1e-12)


@pytest.mark.parametrize(
    "successes,n,confidence",
    [(0, 1, 0.95), (1, 1, 0.95), (7, 20, 0.95), (81, 100, 0.95), (999, 1000, 0.95), (13, 57, 0.9), (3, 12, 0.99)],
)
def test_wilson_matches_statsmodels(successes, n, confidence):
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    low, high = proportion.proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    est = wilson_interval(successes, n, confidence)
    assert est.low == pytest.approx(low, abs=1e-10)
    assert est.high == pytest.approx(high, abs=1e-10)
    assert est.confidence == confidence


def test_accuracy_estimate_accepts_bools_and_ints():
    assert accuracy_estimate([True, False, True, True]) == wilson_interval(3, 4)
    assert accuracy_estimate([1, 0, 1, 1]) == wilson_interval(3, 4)
    assert accuracy_estimate(np.array([1.0, 0.0])).value == 0.5


@pytest.mark.parametrize("bad", [[], [1, 2, 0], [0.5, 1.0], ["yes", "no"], [[1, 0]]])
def test_accuracy_estimate_rejects_non_flags(bad):
    with pytest.raises(DataError):
        accuracy_estimate(bad)


def test_wilson_rejects_bad_arguments():
    with pytest.raises(DataError):
        wilson_interval(0, 0)
    with pytest.raises(DataError):
        wilson_interval(11, 10)
    with pytest.raises(ConfigError):
        wilson_interval(3, 10, confidence=95)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_is_inside_unit_range_and_contains_point(case):
    successes, n = case
    est = wilson_interval(successes, n)
    assert 0.0 <= est.low <= est.value <= est.high <= 1.0


# ---------------------------------------------------------------------------------------------------------
# McNemar and the paired difference interval


@pytest.mark.parametrize(
    "table",
    [(59, 16, 6, 80), (10, 0, 0, 5), (10, 3, 3, 10), (300, 60, 15, 25), (0, 1, 0, 0), (5, 0, 9, 1), (40, 12, 11, 7)],
)
def test_mcnemar_p_matches_statsmodels_and_binomtest(table):
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    both, only_before, only_after, neither = table
    before, after = paired_flags(*table)
    result = mcnemar_exact(before, after)
    expected = contingency.mcnemar([[both, only_before], [only_after, neither]], exact=True).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if only_before + only_after:
        binom = scipy_stats.binomtest(only_before, only_before + only_after, 0.5).pvalue
        assert result.p_value == pytest.approx(binom, rel=1e-9)
    assert (result.n_discordant_b, result.n_discordant_c) == (only_before, only_after)


def test_mcnemar_published_example_cavo_2012():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 8 (R package
    # contingencytables): table [[59, 6], [16, 80]] -> exact conditional McNemar P = 0.052479 and the
    # Newcombe square-and-add interval for p1+ - p+1 of -0.0621 (-0.1186 to -0.0046).
    # Here "after" is the row variable and "before" the column variable, so delta = p1+ - p+1.
    before, after = paired_flags(both=59, only_before=16, only_after=6, neither=80)
    result = mcnemar_exact(before, after)
    assert result.p_value == pytest.approx(0.052479, abs=5e-7)
    assert result.delta.value == pytest.approx(-0.0621, abs=5e-5)
    assert result.delta.low == pytest.approx(-0.1186, abs=5e-5)
    assert result.delta.high == pytest.approx(-0.0046, abs=5e-5)
    assert result.delta.method == "newcombe_paired_wilson"
    assert not result.significant
    assert result.before == wilson_interval(75, 161)
    assert result.after == wilson_interval(65, 161)


def test_mcnemar_no_discordant_pairs_gives_p_one():
    flags = np.array([1, 1, 0, 1], dtype=bool)
    result = mcnemar_exact(flags, flags)
    assert result.p_value == 1.0
    assert result.delta.value == 0.0
    assert result.delta.low <= 0.0 <= result.delta.high


def test_mcnemar_large_effect_is_significant_with_tiny_p():
    before, after = paired_flags(both=200, only_before=124, only_after=8, neither=68)
    result = mcnemar_exact(before, after)
    assert result.significant
    assert result.p_value < 1e-20
    assert result.delta.high < 0


def test_mcnemar_rejects_unpaired_lengths():
    with pytest.raises(DataError, match="same samples"):
        mcnemar_exact([1, 0, 1], [1, 0])


@settings(max_examples=200, deadline=None)
@given(st.tuples(*[st.integers(0, 40)] * 4).filter(lambda t: sum(t) > 0))
def test_newcombe_interval_is_a_proper_interval(table):
    before, after = paired_flags(*table)
    delta = mcnemar_exact(before, after).delta
    assert -1.0 <= delta.low <= delta.value <= delta.high <= 1.0


def test_newcombe_paired_interval_coverage_on_simulated_population():
    # Population: before right 80%, after right 70%; 15% of samples get worse and 5% better,
    # so the true delta is 0.05 - 0.15 = -0.10.
    rng = np.random.default_rng(12345)
    probabilities = [0.65, 0.15, 0.05, 0.15]  # both, only before, only after, neither
    true_delta = probabilities[2] - probabilities[1]
    hits = 0
    n_datasets = 400
    for _ in range(n_datasets):
        counts = rng.multinomial(120, probabilities)
        delta = mcnemar_exact(*paired_flags(*counts)).delta
        hits += delta.contains(true_delta)
    assert 0.92 <= hits / n_datasets <= 0.98


# ---------------------------------------------------------------------------------------------------------
# Bootstrap


def test_bootstrap_point_value_and_determinism():
    data = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    first = bootstrap_interval(lambda x: x.mean(-1), data, seed=3)
    again = bootstrap_interval(lambda x: x.mean(-1), data, seed=3)
    other = bootstrap_interval(lambda x: x.mean(-1), data, seed=4)
    assert first.value == pytest.approx(data.mean())
    assert first == again
    assert first != other
    assert data.min() <= first.low <= first.value <= first.high <= data.max()


def test_bootstrap_matches_scipy_paired_difference():
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.2, size=150)
    tuned = base - 0.05 + rng.normal(0, 0.1, size=150)
    ours = bootstrap_interval(lambda a, b: b.mean(-1) - a.mean(-1), base, tuned, n_resamples=20000, seed=1)
    theirs = scipy_stats.bootstrap(
        (base, tuned),
        lambda a, b, axis=-1: b.mean(axis) - a.mean(axis),
        paired=True,
        vectorized=True,
        n_resamples=20000,
        method="percentile",
        random_state=np.random.default_rng(2),
    ).confidence_interval
    assert ours.low == pytest.approx(theirs.low, abs=0.004)
    assert ours.high == pytest.approx(theirs.high, abs=0.004)
    assert ours.method == "bootstrap_percentile_paired"


def test_bootstrap_unpaired_matches_scipy_independent_groups():
    rng = np.random.default_rng(5)
    group_a = rng.normal(1.0, 1.0, size=80)
    group_b = rng.normal(1.5, 1.0, size=120)
    ours = bootstrap_interval(lambda a, b: b.mean(-1) - a.mean(-1), group_a, group_b, n_resamples=20000, paired=False)
    theirs = scipy_stats.bootstrap(
        (group_a, group_b),
        lambda a, b, axis=-1: b.mean(axis) - a.mean(axis),
        vectorized=True,
        n_resamples=20000,
        method="percentile",
        random_state=np.random.default_rng(6),
    ).confidence_interval
    assert ours.low == pytest.approx(theirs.low, abs=0.02)
    assert ours.high == pytest.approx(theirs.high, abs=0.02)
    assert ours.n == 200


def test_paired_bootstrap_is_narrower_than_unpaired_for_correlated_data():
    rng = np.random.default_rng(9)
    base = rng.normal(0, 1, size=200)
    tuned = base + 0.1 + rng.normal(0, 0.05, size=200)
    statistic = lambda a, b: b.mean(-1) - a.mean(-1)  # noqa: E731
    paired = bootstrap_interval(statistic, base, tuned, n_resamples=1000)
    unpaired = bootstrap_interval(statistic, base, tuned, n_resamples=1000, paired=False)
    assert (paired.high - paired.low) < 0.2 * (unpaired.high - unpaired.low)
    assert paired.low > 0


def test_bootstrap_coverage_on_simulated_population():
    # 400 datasets of 150 correctness flags from a population with accuracy 0.7.
    rng = np.random.default_rng(2024)
    hits = 0
    n_datasets = 400
    for k in range(n_datasets):
        flags = rng.random(150) < 0.7
        est = bootstrap_interval(lambda x: x.mean(-1), flags, n_resamples=1000, seed=k)
        hits += est.contains(0.7)
    assert 0.92 <= hits / n_datasets <= 0.98


def test_retention_coverage_on_simulated_paired_population():
    # Paired population: base right 80%; tuned keeps 75% of those and gets none of the others right,
    # so retention = 0.6 / 0.8 = 0.75.
    rng = np.random.default_rng(7)
    hits = 0
    n_datasets = 200
    for k in range(n_datasets):
        base = rng.random(200) < 0.8
        tuned = base & (rng.random(200) < 0.75)
        hits += retention(base, tuned, n_resamples=1000, seed=k).contains(0.75)
    assert 0.92 <= hits / n_datasets <= 0.98


def test_bootstrap_rejects_non_vectorised_statistic():
    with pytest.raises(TypeError, match="last axis"):
        bootstrap_interval(lambda x: float(np.mean(x)), [1.0, 2.0, 3.0])


def test_bootstrap_rejects_paired_arrays_of_different_lengths():
    with pytest.raises(DataError, match="paired=False"):
        bootstrap_interval(lambda a, b: a.mean(-1) - b.mean(-1), [1.0, 2.0], [1.0, 2.0, 3.0])


def test_bootstrap_handles_more_elements_than_one_chunk():
    # 4000 samples x 2000 resamples spans several chunks; the interval must still be sane and seeded.
    flags = np.tile([True, False, True, True], 1000)
    est = bootstrap_interval(lambda x: x.mean(-1), flags)
    assert est == bootstrap_interval(lambda x: x.mean(-1), flags)
    assert est.low < 0.75 < est.high
    assert est.high - est.low == pytest.approx(2 * Z95 * math.sqrt(0.75 * 0.25 / 4000), rel=0.15)


# ---------------------------------------------------------------------------------------------------------
# Paired scores, forgetting, retention


def test_paired_bootstrap_test_matches_scipy_interval_and_t_test():
    rng = np.random.default_rng(11)
    before = rng.normal(0.6, 0.15, size=300)
    after = before - 0.02 + rng.normal(0, 0.15, size=300)
    result = paired_bootstrap_test(before, after, n_resamples=4000)
    diffs = after - before
    assert result.delta.value == pytest.approx(diffs.mean())
    scipy_ci = scipy_stats.bootstrap(
        (diffs,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(1)
    ).confidence_interval
    assert result.delta.low == pytest.approx(scipy_ci.low, abs=0.004)
    assert result.delta.high == pytest.approx(scipy_ci.high, abs=0.004)
    # With 300 near-normal differences the bootstrap test agrees with the paired t-test.
    assert result.p_value == pytest.approx(scipy_stats.ttest_rel(after, before).pvalue, abs=0.03)
    assert result.sd_of_differences == pytest.approx(np.std(diffs, ddof=1))
    assert result.n_discordant_b + result.n_discordant_c == 300


def test_paired_bootstrap_test_extremes():
    scores = np.linspace(0, 1, 50)
    same = paired_bootstrap_test(scores, scores)
    assert same.p_value == 1.0 and not same.significant
    shifted = paired_bootstrap_test(scores, scores + 0.2 + 0.01 * np.sin(np.arange(50)), n_resamples=999)
    assert shifted.p_value == pytest.approx(1 / 1000)
    assert shifted.significant


def test_forgetting_delta_on_flags_is_base_minus_tuned():
    base, tuned = paired_flags(both=50, only_before=30, only_after=5, neither=15)
    result = forgetting_delta(base, tuned)
    plain = mcnemar_exact(base, tuned)
    assert result.test == "mcnemar_exact"
    assert result.delta_of == "base - tuned"
    assert result.delta.value == pytest.approx(0.25)
    assert (result.delta.low, result.delta.high) == (-plain.delta.high, -plain.delta.low)
    assert result.p_value == plain.p_value
    assert result.before.value == 0.8 and result.after.value == 0.55


def test_forgetting_delta_on_scores_uses_paired_bootstrap():
    base = np.array([0.9, 0.8, 0.75, 0.6, 0.95, 0.85] * 10)
    tuned = base - 0.1
    result = forgetting_delta(base, tuned)
    assert result.test == "paired_bootstrap"
    assert result.delta.value == pytest.approx(0.1)
    assert result.delta.low == pytest.approx(0.1) and result.delta.high == pytest.approx(0.1)


def test_retention_hand_computed():
    base = [1, 1, 1, 1, 0]
    tuned = [1, 1, 1, 0, 0]
    est = retention(base, tuned)
    assert est.value == pytest.approx(0.75)
    assert est.low <= 0.75 <= est.high
    with pytest.raises(DataError, match="retention is undefined"):
        retention([0, 0, 0], [1, 0, 1])


# ---------------------------------------------------------------------------------------------------------
# Power and claims


def test_required_sample_size_paired_hand_computed():
    # Connor (1987): psi = 0.3, delta = 0.1, alpha = 0.05, power = 0.8:
    # n = (1.959964 * sqrt(0.3) + 0.841621 * sqrt(0.29))^2 / 0.01 = 233.1 -> 234
    assert required_sample_size(0.7, 0.8, discordance=0.3) == 234
    assert required_sample_size(0.8, 0.7, discordance=0.3) == 234
    # Fewer discordant pairs -> fewer samples needed for the same change.
    assert required_sample_size(0.7, 0.8, discordance=0.12) < 234


def test_required_sample_size_unpaired_matches_statsmodels():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for p_before, p_after in [(0.7, 0.8), (0.5, 0.45), (0.9, 0.6), (0.2, 0.25)]:
        expected = proportion.samplesize_proportions_2indep_onetail(
            p_after - p_before, p_before, power=0.8, alpha=0.05, alternative="two-sided"
        )
        assert required_sample_size_unpaired(p_before, p_after) == math.ceil(expected)
    assert required_sample_size(0.7, 0.8) == required_sample_size_unpaired(0.7, 0.8)


def test_required_sample_size_gives_the_promised_power_in_simulation():
    # Simulate the exact McNemar test at the computed n: rejection rate should be close to 80%.
    p_worse, p_better = 0.06, 0.14  # discordance 0.2, delta +0.08
    n = required_sample_size(0.7, 0.78, discordance=0.2)
    rng = np.random.default_rng(3)
    counts = rng.multinomial(n, [p_worse, p_better, 1 - p_worse - p_better], size=4000)
    b, c = counts[:, 0], counts[:, 1]
    p_values = np.minimum(1.0, 2 * scipy_stats.binom.cdf(np.minimum(b, c), b + c, 0.5))
    assert 0.74 <= np.mean(p_values < 0.05) <= 0.86


def test_required_sample_size_rejects_impossible_inputs():
    with pytest.raises(ConfigError, match="no effect"):
        required_sample_size(0.7, 0.7, discordance=0.2)
    with pytest.raises(ConfigError, match="impossible"):
        required_sample_size(0.5, 0.8, discordance=0.1)
    with pytest.raises(ConfigError):
        required_sample_size(0.5, 1.2, discordance=0.8)
    with pytest.raises(ConfigError):
        required_sample_size(0.5, 0.6, discordance=0.2, power=1.0)


def test_check_claim_held_quotes_the_numbers():
    # Accuracy on shapes 0.81 -> 0.52 on 400 samples.
    before, after = paired_flags(both=200, only_before=124, only_after=8, neither=68)
    test = mcnemar_exact(before, after)
    check = check_claim("fine-tuning hurts shapes", test, "negative", subject="accuracy on shapes")
    assert check.verdict == "held" and check.held is True and check.needed_n is None
    assert check.evidence.startswith(f"accuracy on shapes fell from {test.before} to {test.after}")
    assert "0.81 [" in check.evidence and "0.52 [" in check.evidence
    # the claim has a direction, so the one-sided test decides: P(X >= 124), X ~ Binomial(132, 1/2)
    one_sided = scipy_stats.binomtest(124, 132, 0.5, alternative="greater").pvalue
    assert check.p_value == pytest.approx(one_sided, rel=1e-9)
    assert f"one-sided exact McNemar p={one_sided:.2g} < alpha=0.05" in check.evidence
    assert check.method.startswith("one-sided exact McNemar") and check.margin is None


def test_check_claim_is_one_sided_where_two_sided_is_not_significant():
    # 16 worse, 6 better of 161: two-sided exact McNemar p = 0.052 misses alpha 0.05, the one-sided p = 0.026 does not
    before, after = paired_flags(both=59, only_before=16, only_after=6, neither=80)
    test = mcnemar_exact(before, after)
    assert test.p_value == pytest.approx(scipy_stats.binomtest(16, 22, 0.5).pvalue) and test.p_value > 0.05
    check = check_claim("accuracy drops", test, "negative")
    assert check.verdict == "held"
    assert check.p_value == pytest.approx(scipy_stats.binomtest(16, 22, 0.5, alternative="greater").pvalue)
    # the bootstrap's two-sided p is symmetric: its one-sided p is half of it in the observed direction
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 0.1, size=80)
    boot = paired_bootstrap_test(x, x + 0.01 + rng.normal(0, 0.05, size=80))
    assert boot.one_sided_p("positive") == pytest.approx(boot.p_value / 2)
    assert boot.one_sided_p("negative") == pytest.approx(1 - boot.p_value / 2)


def test_check_claim_opposite_direction_is_not_held():
    before, after = paired_flags(both=200, only_before=124, only_after=8, neither=68)
    check = check_claim("fine-tuning helps shapes", mcnemar_exact(before, after), "positive")
    assert check.verdict == "not held" and check.held is False


def test_check_claim_not_shown_reports_needed_samples():
    # 14 worse, 8 better of 161: one-sided p = P(X >= 14 | 22) = 0.14; the needed n is for a one-sided test at
    # 0.05, i.e. Connor's two-sided formula at alpha 0.10
    before, after = paired_flags(both=61, only_before=14, only_after=8, neither=78)
    test = mcnemar_exact(before, after)
    check = check_claim("accuracy drops", test, "negative")
    assert check.verdict == "not shown" and check.held is None
    expected_n = required_sample_size(75 / 161, 69 / 161, discordance=22 / 161, alpha=0.10)
    assert check.needed_n == expected_n
    assert f"{expected_n:,} paired samples" in check.evidence
    # The same data cannot support the opposite claim, and then no sample size is quoted.
    other = check_claim("accuracy rises", test, "positive")
    assert other.verdict == "not shown" and other.needed_n is None
    assert "other way" in other.evidence


def test_check_claim_not_shown_for_scores_uses_normal_approximation():
    rng = np.random.default_rng(4)
    before = rng.normal(0.5, 0.1, size=60)
    after = before + 0.005 + rng.normal(0, 0.1, size=60)
    test = paired_bootstrap_test(before, after)
    check = check_claim("scores rise", test, "positive", subject="judge score")
    assert check.verdict == "not shown"
    z = scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)  # one-sided at 0.05
    assert check.needed_n == math.ceil((z * test.sd_of_differences / test.delta.value) ** 2)


def test_check_claim_no_change_needs_margin_and_uses_interval():
    flags = np.tile([1, 1, 1, 0], 500).astype(bool)
    after = flags.copy()
    after[:6] = ~after[:6]
    test = mcnemar_exact(flags, after)
    with pytest.raises(ConfigError, match="margin"):
        check_claim("no forgetting", test, "no_change")
    assert check_claim("no forgetting", test, "no_change", margin=0.03).verdict == "held"
    assert check_claim("no forgetting", test, "no_change", margin=0.001).verdict == "not shown"
    before, after = paired_flags(both=200, only_before=124, only_after=8, neither=68)
    assert check_claim("no forgetting", mcnemar_exact(before, after), "no_change", margin=0.05).verdict == "not held"


def test_check_claim_not_worse_is_non_inferiority():
    # A gain of +0.05 whose interval reaches past +0.1 "keeps" the accuracy: only the lower end matters.
    before, after = paired_flags(both=60, only_before=2, only_after=6, neither=12)
    test = mcnemar_exact(before, after)
    assert test.delta.value == pytest.approx(0.05) and test.delta.high > 0.1 and -0.1 < test.delta.low < 0
    assert test.p_value > 0.2  # the superiority test says nothing, and it is not the test of this claim
    assert check_claim("keeps", test, "no_change", margin=0.1).verdict == "not shown"
    keeps = check_claim("keeps", test, "not_worse", margin=0.1)
    assert keeps.verdict == "held" and keeps.margin == 0.1 and keeps.p_value is None
    assert "non-inferiority with margin 0.1" in keeps.evidence and "p=" not in keeps.evidence
    # a loss whose whole interval is beyond the margin is "not held"; one that reaches it is "not shown"
    before, after = paired_flags(both=100, only_before=40, only_after=5, neither=55)
    lost = mcnemar_exact(before, after)
    assert check_claim("keeps", lost, "not_worse", margin=0.05).verdict == "not held"
    assert check_claim("keeps", lost, "not_worse", margin=lost.delta.low * -1 + 0.01).verdict == "held"
    assert check_claim("keeps", lost, "not_worse", margin=-lost.delta.value).verdict == "not shown"
    # the mirror for a delta that counts forgetting (base - tuned): at most +margin
    assert check_claim("forgets at most", replace(lost, delta=replace(lost.delta, value=-lost.delta.value,
                       low=-lost.delta.high, high=-lost.delta.low)), "not_better", margin=0.05).verdict == "not held"


def test_claim_check_to_dict_is_strict_json():
    before, after = paired_flags(both=61, only_before=14, only_after=8, neither=78)
    check = check_claim("accuracy drops", mcnemar_exact(before, after), "negative")
    data = json.loads(json.dumps(check.to_dict(), allow_nan=False))
    assert data["verdict"] == "not shown"
    assert data["test"]["delta"]["method"] == "newcombe_paired_wilson"
    assert data["test"]["before"]["value"] == pytest.approx(75 / 161)
    assert data["p_value"] == pytest.approx(scipy_stats.binomtest(14, 22, 0.5, alternative="greater").pvalue)
    assert data["method"].startswith("one-sided exact McNemar") and data["margin"] is None


# ---------------------------------------------------------------------------------------------------------
# Seeds and agreement


def test_seed_summary_hand_computed():
    summary = seed_summary([0.70, 0.74, 0.72])
    assert summary.mean == pytest.approx(0.72)
    assert summary.std == pytest.approx(0.02)  # sample std: sqrt((0.0004 + 0.0004 + 0) / 2)
    assert (summary.min, summary.max, summary.n_seeds) == (0.70, 0.74, 3)
    assert summary.values == (0.70, 0.74, 0.72)
    assert json.loads(json.dumps(summary.to_dict(), allow_nan=False))["n_seeds"] == 3


def test_seed_summary_single_seed_has_no_spread():
    summary = seed_summary([0.5])
    assert summary.std is None and summary.to_dict()["std"] is None
    with pytest.raises(DataError):
        seed_summary([])


@pytest.mark.parametrize(
    "a,b",
    [
        (["yes", "no", "yes", "yes", "no"], ["yes", "no", "no", "yes", "no"]),
        ([0, 1, 2, 2, 1, 0, 0], [0, 1, 1, 2, 1, 2, 0]),
        (["cat", "dog", "cat", "cat"], ["dog", "cat", "dog", "dog"]),
        (["a", "a", "a", "b"], ["a", "a", "a", "a"]),
        (["x", "y", "z", "x", "y", "z"], ["x", "y", "z", "x", "y", "z"]),
    ],
)
def test_cohen_kappa_matches_sklearn(a, b):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert cohen_kappa(a, b) == pytest.approx(sklearn_metrics.cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_hand_computed_and_undefined():
    # p_o = 0.8; p_e = 0.6*0.4 + 0.4*0.6 = 0.48 -> kappa = 0.32 / 0.52
    a = ["y"] * 6 + ["n"] * 4
    b = ["y"] * 4 + ["n"] * 6
    assert agreement_rate(a, b).value == pytest.approx(0.8)
    assert cohen_kappa(a, b) == pytest.approx(0.32 / 0.52)
    assert math.isnan(cohen_kappa(["y", "y"], ["y", "y"]))
    with pytest.raises(DataError, match="different numbers"):
        cohen_kappa(["y"], ["y", "n"])


def test_agreement_rate_and_kappa_interval():
    rng = np.random.default_rng(8)
    truth = rng.integers(0, 3, size=300)
    judge_a = np.where(rng.random(300) < 0.85, truth, rng.integers(0, 3, size=300))
    judge_b = np.where(rng.random(300) < 0.85, truth, rng.integers(0, 3, size=300))
    agreement = agreement_rate(judge_a.tolist(), judge_b.tolist())
    assert agreement == wilson_interval(int(np.sum(judge_a == judge_b)), 300)
    kappa = cohen_kappa_estimate(judge_a.tolist(), judge_b.tolist(), n_resamples=1000)
    assert kappa.value == pytest.approx(cohen_kappa(judge_a.tolist(), judge_b.tolist()))
    assert kappa.low < kappa.value < kappa.high
    assert 0.5 < kappa.low and kappa.high < 0.9


# ---------------------------------------------------------------------------------------------------------
# Estimate


def test_estimate_json_round_trip_and_format():
    est = Estimate(value=0.8125, low=0.77, high=0.84, n=400, method="wilson")
    assert str(est) == "0.81 [0.77, 0.84]"
    assert est.format(3) == "0.812 [0.770, 0.840]"
    assert Estimate.from_dict(json.loads(json.dumps(est.to_dict()))) == est
    unbounded = Estimate(value=2.0, low=1.0, high=math.inf, n=3, method="bootstrap_percentile")
    data = unbounded.to_dict()
    assert data["high"] is None
    json.dumps(data, allow_nan=False)
    assert math.isnan(Estimate.from_dict(data).high)
    assert est.negated() == Estimate(value=-0.8125, low=-0.84, high=-0.77, n=400, method="wilson")


def test_claim_not_significant_with_one_sided_discordance_gives_needed_n():
    """10/20 -> 11/20 with a single changed sample: 'not shown', and a sample size, never an error."""
    from unforget.stats import check_claim, mcnemar_exact

    before = [1] * 10 + [0] * 10
    after = [1] * 11 + [0] * 9
    verdict = check_claim("accuracy rises", mcnemar_exact(before, after), expect="positive")
    assert verdict.verdict == "not shown"
    assert verdict.needed_n is not None and verdict.needed_n > 20
