"""Bootstrap intervals over test images and t intervals over seeds (snc.eval.stats)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from snc.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS
from snc.eval import stats
from snc.eval.robustness import corruption_metrics, error_percent


def _correct(n, error, seed):
    return np.random.default_rng(seed).random(n) >= error


def _errors(clean, corrupted):
    """The per-set errors (%) the engine computes from counts."""
    return {k: error_percent(int((~v).sum()), v.size) for k, v in corrupted.items()}


def _suite(n, seed, names=CORRUPTIONS, flip=0.3):
    """A clean set and a corrupted copy per (corruption, severity): each copy keeps the clean
    answer of an image and flips it wrong with a probability growing with the severity."""
    rng = np.random.default_rng(seed)
    clean = rng.random(n) >= 0.1
    corrupted = {}
    for i, c in enumerate(names):
        for s in range(1, 6):
            corrupted[(c, s)] = clean & (rng.random(n) >= flip * s / 5 + 0.01 * i)
    return clean, corrupted


def test_error_interval_matches_the_binomial_interval():
    n, p = 20000, 0.1
    correct = _correct(n, p, seed=3)
    err = 100.0 * (~correct).mean()
    lo, hi = stats.error_interval(correct)
    half = 100.0 * 1.959964 * math.sqrt(err / 100 * (1 - err / 100) / n)  # normal approx.
    assert lo == pytest.approx(err - half, abs=0.1)
    assert hi == pytest.approx(err + half, abs=0.1)
    # Wilson score interval agrees at this size too
    z, ph = 1.959964, err / 100
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    w = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    assert lo == pytest.approx(100 * (centre - w), abs=0.1)
    assert hi == pytest.approx(100 * (centre + w), abs=0.1)


def test_error_interval_covers_the_true_error_about_95_percent_of_the_time():
    hits = 0
    for draw in range(100):
        lo, hi = stats.error_interval(_correct(400, 0.2, seed=100 + draw), resamples=400,
                                      seed=draw)
        hits += lo <= 20.0 <= hi
    assert 87 <= hits <= 100


def test_indices_are_seeded_and_the_same_in_chunks(monkeypatch):
    a = stats.bootstrap_indices(50, 30, seed=7)
    assert a.shape == (30, 50) and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, stats.bootstrap_indices(50, 30, seed=7))
    assert not np.array_equal(a, stats.bootstrap_indices(50, 30, seed=8))
    correct = _correct(50, 0.3, seed=1)
    whole = stats.error_interval(correct, resamples=30, seed=7)
    # by hand from the materialised indices: the same replicates
    reps = 100.0 * (~correct)[a].sum(axis=1) / 50
    assert whole == tuple(np.percentile(reps, [2.5, 97.5]))
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 50 * 7)  # 7 replicates per chunk
    assert np.array_equal(stats.bootstrap_indices(50, 30, seed=7), a)
    assert stats.error_interval(correct, resamples=30, seed=7) == whole


def test_corruption_metrics_on_arrays_are_elementwise():
    clean, corrupted = _suite(300, seed=2)
    point = _errors(clean, corrupted)
    arrays = {k: np.array([v, v + 1.0, v - 2.0]) for k, v in point.items()}
    for protocol in ("cifar", "imagenet"):
        vec = corruption_metrics(arrays, protocol, np.array([10.0, 11.0, 8.0]))
        for j, shift in enumerate((0.0, 1.0, -2.0)):
            one = corruption_metrics({k: v + shift for k, v in point.items()}, protocol,
                                     10.0 + shift)
            assert set(vec) == set(one)
            for key, value in one.items():
                assert vec[key][j] == value, key


@pytest.mark.parametrize("protocol", ["cifar", "imagenet"])
def test_mce_interval_point_is_corruption_metrics_and_inside(protocol):
    clean, corrupted = _suite(500, seed=4)
    ci = stats.mce_interval(clean, corrupted, protocol=protocol, resamples=300)
    clean_error = error_percent(int((~clean).sum()), clean.size)
    point = corruption_metrics(_errors(clean, corrupted), protocol,
                               clean_error if protocol == "imagenet" else None)
    keys = {"mce", "clean/error"} | {f"corruption/{c}/error" for c in CORRUPTIONS}
    if protocol == "imagenet":
        keys.add("relative_mce")
    assert set(ci) == keys
    for key in keys - {"clean/error"}:
        lo, hi = ci[key]
        assert lo <= point[key] <= hi and lo < hi, key
    assert ci["clean/error"] == stats.error_interval(clean, resamples=300)
    assert ci == stats.mce_interval(clean, corrupted, protocol=protocol, resamples=300)
    assert ci != stats.mce_interval(clean, corrupted, protocol=protocol, resamples=300, seed=1)


def test_validation_corruptions_are_not_in_the_test_mce():
    clean, corrupted = _suite(400, seed=5, names=CORRUPTIONS + EXTRA_CORRUPTIONS)
    benchmark = {k: v for k, v in corrupted.items() if k[0] in CORRUPTIONS}
    errors = _errors(clean, corrupted)
    assert corruption_metrics(errors)["mce"] == corruption_metrics(
        {k: errors[k] for k in benchmark})["mce"]
    assert corruption_metrics(errors)["mce"] != pytest.approx(
        sum(errors.values()) / len(errors))  # the extra ones would change it
    with_extra = stats.mce_interval(clean, corrupted, resamples=200)
    assert with_extra["mce"] == stats.mce_interval(clean, benchmark, resamples=200)["mce"]
    assert "corruption/speckle_noise/error" in with_extra


def _independent(clean, corrupted, protocol, resamples):
    """What resampling every set on its own would give (the wrong way for copies)."""
    n = clean.size
    reps = {k: 100.0 * (~v)[stats.bootstrap_indices(n, resamples, seed=11 + j)].sum(1) / n
            for j, (k, v) in enumerate(corrupted.items())}
    clean_rep = 100.0 * (~clean)[stats.bootstrap_indices(n, resamples, seed=999)].sum(1) / n
    return corruption_metrics(reps, protocol, clean_rep)


def test_pairing_matters():
    n, resamples = 2000, 400
    clean = _correct(n, 0.25, seed=6)
    copies = {(c, s): clean.copy() for c in CORRUPTIONS for s in range(1, 6)}
    paired = stats.mce_interval(clean, copies, protocol="imagenet", resamples=resamples)
    indep = _independent(clean, copies, "imagenet", resamples)

    def width(interval):
        return interval[1] - interval[0]

    # relative mCE subtracts the clean error: copies identical to the clean set change nothing
    # in any paired replicate, independent resampling invents spread
    rel_indep = np.percentile(indep["relative_mce"], [2.5, 97.5])
    assert width(paired["relative_mce"]) < 0.05 * width(rel_indep)
    # mCE of 75 identical copies is one set's error: the paired interval keeps its full width,
    # independent resampling averages 75 independent draws and understates it ~sqrt(75)-fold
    mce_indep = np.percentile(indep["mce"], [2.5, 97.5])
    assert width(paired["mce"]) > 4 * width(mce_indep)
    single = stats.error_interval(clean, resamples=resamples)
    ce = corruption_metrics({k: np.array(single) for k in copies}, "imagenet")["mce"]
    assert paired["mce"] == pytest.approx(tuple(ce))


def test_paired_difference_sign_and_pairing():
    n = 3000
    b = _correct(n, 0.2, seed=8)
    a = b.copy()
    a[np.flatnonzero(~b)[:150]] = True  # a fixes 150 of b's errors: 5 points fewer
    d = stats.paired_difference(a, b)
    assert d["diff"] == pytest.approx(-5.0)
    assert d["high"] < 0 and not d["contains_zero"]
    assert stats.paired_difference(b, a)["diff"] == pytest.approx(5.0)
    same = stats.paired_difference(b, b.copy())
    assert same["diff"] == 0.0 and same["low"] == same["high"] == 0.0 and same["contains_zero"]
    # seeds of a setting: bool[S, N] averages the per-image errors over the seeds
    two = stats.paired_difference(np.stack([a, b]), b)
    assert two["diff"] == pytest.approx(-2.5)


def test_mce_difference_is_paired():
    clean, corrupted = _suite(800, seed=9)
    better = {k: v | (np.arange(v.size) % 10 == 0) for k, v in corrupted.items()}
    d = stats.mce_difference(clean, better, clean, corrupted, resamples=300)
    point = corruption_metrics(_errors(clean, better))["mce"] - corruption_metrics(
        _errors(clean, corrupted))["mce"]
    assert d["diff"] == pytest.approx(point) and d["diff"] < 0
    assert d["low"] <= d["diff"] <= d["high"] < 0
    with pytest.raises(ValueError, match="different corrupted sets"):
        stats.mce_difference(clean, better, clean, dict(list(corrupted.items())[:-1]))


def test_seed_summary_and_difference_by_hand():
    assert stats.seed_summary([1.0]) == {"mean": 1.0, "std": None, "n": 1}
    s = stats.seed_summary([10.0, 12.0, 14.0])
    assert s == {"mean": 12.0, "std": 2.0, "n": 3}
    a, b = [20.1, 19.5, 20.9, 20.4], [21.8, 22.6, 21.1]
    d = stats.seed_difference(a, b)
    ma, mb = sum(a) / 4, sum(b) / 3
    va = sum((x - ma) ** 2 for x in a) / 3 / 4
    vb = sum((x - mb) ** 2 for x in b) / 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert d["diff"] == pytest.approx(ma - mb)
    assert d["low"] == pytest.approx(ma - mb - half) and d["high"] == pytest.approx(ma - mb + half)
    assert d["df"] == pytest.approx(df) and (d["n_a"], d["n_b"]) == (4, 3)
    assert not d["contains_zero"]
    # scipy's Welch test gives the same interval
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d["low"], d["high"]) == pytest.approx((ref.low, ref.high))
    assert stats.seed_difference([1.0, 3.0], [2.0, 2.5])["contains_zero"]
    flat = stats.seed_difference([1.0, 1.0], [2.0, 2.0])
    assert flat["low"] == flat["high"] == -1.0 and flat["df"] is None


def test_bad_input_is_refused():
    good = _correct(100, 0.2, seed=1)
    with pytest.raises(ValueError, match="empty"):
        stats.error_interval(np.zeros(0, dtype=bool))
    with pytest.raises(ValueError, match="bool"):
        stats.error_interval(good.astype(np.float32))
    with pytest.raises(ValueError, match="bool"):
        stats.paired_difference(good, good.astype(int))
    with pytest.raises(ValueError, match="not copies of the same images"):
        stats.paired_difference(good, good[:90])
    with pytest.raises(ValueError, match="not copies of the same images"):
        stats.mce_interval(good, {("fog", s): good[:99] for s in range(1, 6)})
    with pytest.raises(ValueError, match="no corrupted sets"):
        stats.mce_interval(good, {})
    with pytest.raises(ValueError, match="protocol"):
        stats.mce_interval(good, {("fog", s): good for s in range(1, 6)}, protocol="x")
    with pytest.raises(ValueError, match="level"):
        stats.error_interval(good, level=95)
    with pytest.raises(ValueError, match=">= 2 values"):
        stats.seed_difference([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="no values"):
        stats.seed_summary([])
    with pytest.raises(ValueError, match="finite"):
        stats.seed_summary([1.0, float("nan")])
