"""MixStyle, DSU, EFDMix and Permuted AdaIN: formulas against loop re-statements, statistics
of the outputs, the draws' distributions, gradients, and the units' switching."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from snc.ops import (
    DSU,
    STYLE_METHODS,
    DSUOptions,
    EFDMix,
    EFDMixOptions,
    MixStyle,
    MixStyleOptions,
    PermutedAdaIN,
    PermutedAdaINOptions,
    cross_norm,
    dsu,
    efdmix,
    mixstyle,
    permuted_adain,
    sample_dsu_args,
    sample_efdmix_args,
    sample_mixstyle_args,
    sample_permuted_adain_args,
    style_unit,
)

SAMPLERS = {
    "mixstyle": sample_mixstyle_args,
    "dsu": sample_dsu_args,
    "efdmix": sample_efdmix_args,
    "padain": sample_permuted_adain_args,
}


def feats(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(shape[:2] + (1,) * (len(shape) - 2), generator=g) * 2 + 0.5
    shift = torch.randn(shape[:2] + (1,) * (len(shape) - 2), generator=g)
    return (torch.randn(shape, generator=g) * scale + shift).to(dtype)


def np_stats(a, eps):
    """Loop re-statement: per (n, c) mean and sqrt(unbiased var + eps), shapes (N, C)."""
    n, c = a.shape[:2]
    mu, sig = np.zeros((n, c)), np.zeros((n, c))
    for i in range(n):
        for j in range(c):
            v = a[i, j].ravel().astype(np.float64)
            mu[i, j] = v.sum() / v.size
            sig[i, j] = math.sqrt(((v - mu[i, j]) ** 2).sum() / (v.size - 1) + eps)
    return mu, sig


def np_restyle(a, mu, sig, mu_new, sig_new):
    out = np.empty(a.shape)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = (a[i, j] - mu[i, j]) / sig[i, j] * sig_new[i, j] + mu_new[i, j]
    return out


def out_mean_std(out):
    flat = out.double().flatten(2)
    return flat.mean(-1), flat.std(-1)


# ----- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: MixStyleOptions(p=1.5), r"style\.p must be in \[0, 1\], got 1\.5"),
    (lambda: MixStyleOptions(alpha=0), r"style\.alpha must be > 0, got 0"),
    (lambda: MixStyleOptions(eps=-1e-6), r"style\.eps must be > 0"),
    (lambda: MixStyleOptions(mix="pairs"), r"style\.mix 'pairs'; choose one of random"),
    (lambda: DSUOptions(p=-0.1), r"style\.p must be in \[0, 1\]"),
    (lambda: DSUOptions(factor=-1.0), r"style\.factor must be >= 0, got -1\.0"),
    (lambda: DSUOptions(eps=0.0), r"style\.eps must be > 0"),
    (lambda: EFDMixOptions(alpha=-0.1), r"style\.alpha must be > 0"),
    (lambda: EFDMixOptions(mix="domain"), r"choose one of random, crossdomain"),
    (lambda: PermutedAdaINOptions(p=2), r"style\.p must be in \[0, 1\], got 2"),
    (lambda: PermutedAdaINOptions(eps=0), r"style\.eps must be > 0"),
])
def test_options_reject_bad_values_naming_the_key(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_defaults_are_the_papers():
    assert MixStyleOptions() == MixStyleOptions(p=0.5, alpha=0.1, eps=1e-6, mix="random")
    assert DSUOptions() == DSUOptions(p=0.5, eps=1e-6, factor=1.0)
    assert EFDMixOptions() == EFDMixOptions(p=0.5, alpha=0.1, mix="random")
    assert PermutedAdaINOptions() == PermutedAdaINOptions(p=0.01, eps=1e-5)


# ----- MixStyle --------------------------------------------------------------------------------
# a large eps tells the unbiased variance (L - 1) from the biased one: the ops are otherwise
# invariant to a common scale of the standard deviations
EPS_CASES = pytest.mark.parametrize("eps", [1e-6, 0.5])


@EPS_CASES
def test_mixstyle_formula_against_loops(eps):
    x = feats(3, 2, 4, 3)
    perm, lam = torch.tensor([2, 0, 1]), torch.tensor([0.3, 0.9, 0.05])
    out = mixstyle(x, perm=perm, lam=lam, eps=eps)
    a = x.double().numpy()
    mu, sig = np_stats(a, eps)
    p, w = perm.numpy(), lam.double().numpy()[:, None]
    expected = np_restyle(a, mu, sig, w * mu + (1 - w) * mu[p], w * sig + (1 - w) * sig[p])
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_mixstyle_lam_one_is_identity_and_lam_zero_takes_the_partners_statistics():
    x = feats(4, 3, 5, 5, seed=1)
    swap = torch.tensor([1, 0, 3, 2])
    torch.testing.assert_close(mixstyle(x, perm=swap, lam=torch.ones(4)), x,
                               rtol=1e-5, atol=1e-5)
    mean, std = out_mean_std(mixstyle(x, perm=swap, lam=0.0))
    x_mean, x_std = out_mean_std(x)
    torch.testing.assert_close(mean, x_mean[swap], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(std, x_std[swap], rtol=1e-5, atol=1e-5)


def test_mixstyle_statistics_carry_no_gradient():
    x = feats(4, 2, 3, 3, seed=2, dtype=torch.float64).requires_grad_()
    perm, lam = torch.tensor([3, 2, 1, 0]), torch.tensor([0.2, 0.7, 0.4, 0.9])
    w = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((mixstyle(x, perm=perm, lam=lam) * w).sum(), x)
    # with mu and sig constants, d out / d x = sig_mix / sig, elementwise
    mu, sig = np_stats(x.detach().numpy(), 1e-6)
    p, lw = perm.numpy(), lam.double().numpy()[:, None]
    ratio = (lw * sig + (1 - lw) * sig[p]) / sig
    np.testing.assert_allclose(grad.numpy(), w.numpy() * ratio[:, :, None, None], rtol=1e-10)


# ----- DSU -------------------------------------------------------------------------------------
@EPS_CASES
def test_dsu_formula_against_loops(eps):
    x = feats(4, 3, 3, 4, seed=4)
    g = torch.Generator().manual_seed(5)
    noise_mu, noise_sig = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    out = dsu(x, noise_mu=noise_mu, noise_sig=noise_sig, factor=0.7, eps=eps)
    mu, sig = np_stats(x.double().numpy(), eps)
    sd_mu = np.sqrt(mu.var(axis=0, ddof=1) + eps)
    sd_sig = np.sqrt(sig.var(axis=0, ddof=1) + eps)
    beta = mu + 0.7 * noise_mu.double().numpy() * sd_mu
    gamma = sig + 0.7 * noise_sig.double().numpy() * sd_sig
    expected = np_restyle(x.double().numpy(), mu, sig, beta, gamma)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_dsu_with_factor_zero_is_identity():
    x = feats(4, 3, 5, 5, seed=6)
    noise = torch.randn(4, 3)
    out = dsu(x, noise_mu=noise, noise_sig=-noise, factor=0.0)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)
    out = dsu(x, noise_mu=noise, noise_sig=-noise, factor=1.0)
    assert (out - x).abs().max() > 1e-2


def test_dsu_sampled_beta_and_gamma_have_the_papers_mean_and_variance():
    x = feats(4, 3, 6, 6, seed=7)
    mu, sig = np_stats(x.double().numpy(), 1e-6)
    var_mu = mu.var(axis=0, ddof=1) + 1e-6
    var_sig = sig.var(axis=0, ddof=1) + 1e-6
    a = x.double().numpy()
    xnorm = (a - mu[:, :, None, None]) / sig[:, :, None, None]
    g = torch.Generator().manual_seed(8)
    opts = DSUOptions(p=1.0, factor=1.5)
    betas, gammas = [], []
    for _ in range(2000):
        out = dsu(x, **sample_dsu_args(x.shape, opts, generator=g)).double().numpy()
        beta = out.mean(axis=(2, 3))  # x_norm has mean zero: the output's mean is beta
        gammas.append(((out - beta[:, :, None, None]) * xnorm).sum(axis=(2, 3))
                      / (xnorm ** 2).sum(axis=(2, 3)))
        betas.append(beta)
    betas, gammas = np.stack(betas), np.stack(gammas)
    for draws, centre, var in ((betas, mu, var_mu), (gammas, sig, var_sig)):
        se = np.sqrt(1.5 ** 2 * var / len(draws))
        assert (np.abs(draws.mean(axis=0) - centre) < 5 * se).all()
        np.testing.assert_allclose(draws.var(axis=0), np.broadcast_to(1.5 ** 2 * var, mu.shape),
                                   rtol=0.2)


def test_dsu_gradcheck():
    x = feats(3, 2, 3, 2, seed=9, dtype=torch.float64).requires_grad_()
    noise_mu, noise_sig = torch.randn(3, 2), torch.randn(3, 2)
    assert torch.autograd.gradcheck(
        lambda t: dsu(t, noise_mu=noise_mu, noise_sig=noise_sig, factor=0.8, eps=1e-3), (x,))


def test_dsu_batch_of_one_is_a_clear_error():
    x = feats(1, 3, 4, 4)
    match = "DSU estimates the variance of the statistics over the batch; use batch_size >= 2"
    with pytest.raises(ValueError, match=match):
        dsu(x, noise_mu=torch.zeros(1, 3), noise_sig=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=match):  # whatever the coin
        sample_dsu_args(x.shape, DSUOptions(p=0.0))
    unit = DSU(p=1.0)
    unit.active = True
    with pytest.raises(ValueError, match=match):
        unit(x)
    assert unit.eval()(x) is x


# ----- EFDMix ----------------------------------------------------------------------------------
def np_efdmix(a, perm, lam):
    """Loop re-statement: each value moves to the partner's value of the same rank."""
    out = np.empty(a.shape)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j].ravel()
            partner = np.sort(a[perm[i], j].ravel())
            o = np.empty_like(v)
            for k, pos in enumerate(np.argsort(v, kind="stable")):
                o[pos] = v[pos] + (1 - lam[i]) * (partner[k] - v[pos])
            out[i, j] = o.reshape(a.shape[2:])
    return out


def test_efdmix_formula_against_loops():
    x = feats(3, 2, 4, 3, seed=10)
    perm, lam = torch.tensor([1, 2, 0]), torch.tensor([0.25, 0.8, 0.0])
    out = efdmix(x, perm=perm, lam=lam)
    expected = np_efdmix(x.double().numpy(), perm.numpy(), lam.double().numpy())
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_efdmix_lam_zero_gives_the_partners_sorted_values_and_lam_one_gives_x():
    x = feats(4, 3, 5, 5, seed=11)
    swap = torch.tensor([1, 0, 3, 2])
    out = efdmix(x, perm=swap, lam=torch.zeros(4))
    torch.testing.assert_close(out.flatten(2).sort(-1).values, x[swap].flatten(2).sort(-1).values)
    # the order of x is kept: the ranks of the output are those of x
    torch.testing.assert_close(out.flatten(2).argsort(-1), x.flatten(2).argsort(-1))
    torch.testing.assert_close(efdmix(x, perm=swap, lam=1.0), x)


def test_efdmix_gradient_reaches_x_whole_and_the_partner_through_its_sorted_values():
    x = feats(2, 2, 3, 3, seed=12, dtype=torch.float64).requires_grad_()
    perm, lam = torch.tensor([1, 0]), torch.tensor([0.3, 0.6])
    w = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    (grad,) = torch.autograd.grad((efdmix(x, perm=perm, lam=lam) * w).sum(), x)
    a, wa = x.detach().numpy(), w.numpy()
    expected = wa.copy()  # d o_i / d x_i = 1: the stop-gradient term gives nothing
    for j in range(2):  # sample i feeds sample perm^-1(i) = 1 - i through its value of rank k
        for i in range(2):
            other = 1 - i
            rank_i = np.argsort(a[i, j].ravel(), kind="stable")
            rank_o = np.argsort(a[other, j].ravel(), kind="stable")
            g = expected[i, j].ravel().copy()
            for k in range(rank_i.size):
                g[rank_i[k]] += (1 - lam[other].item()) * wa[other, j].ravel()[rank_o[k]]
            expected[i, j] = g.reshape(3, 3)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12)


# ----- Permuted AdaIN --------------------------------------------------------------------------
@EPS_CASES
def test_permuted_adain_formula_against_loops(eps):
    x = feats(4, 3, 4, 5, seed=14)
    perm = torch.tensor([2, 3, 1, 0])
    mu, sig = np_stats(x.double().numpy(), eps)
    p = perm.numpy()
    expected = np_restyle(x.double().numpy(), mu, sig, mu[p], sig[p])
    out = permuted_adain(x, perm=perm, eps=eps)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_permuted_adain_gives_the_partners_statistics_as_cross_norm_does():
    x = feats(4, 3, 4, 5, seed=14)
    perm = torch.tensor([2, 3, 1, 0])
    out = permuted_adain(x, perm=perm, eps=1e-5)
    mean, std = out_mean_std(out)
    x_mean, x_std = out_mean_std(x)
    torch.testing.assert_close(mean, x_mean[perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(std, x_std[perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, cross_norm(x, perm=perm, eps=1e-5), rtol=1e-5, atol=1e-5)


def test_permuted_adain_gradient_flows_through_the_content_not_the_partner():
    """As the authors' code: the partner's statistics are computed on ``x.detach()``. The
    gradient equals that of a re-statement whose style statistics are constants, which
    gradcheck confirms numerically."""
    x = feats(3, 2, 3, 2, seed=15, dtype=torch.float64).requires_grad_()
    perm = torch.tensor([1, 2, 0])
    mu_s, sig_s = np_stats(x.detach().numpy(), 1e-5)
    mu_s = torch.from_numpy(mu_s[perm.numpy()]).view(3, 2, 1, 1)
    sig_s = torch.from_numpy(sig_s[perm.numpy()]).view(3, 2, 1, 1)

    def restated(t):
        mean = t.mean(dim=(2, 3), keepdim=True)
        std = (t.var(dim=(2, 3), keepdim=True) + 1e-5).sqrt()
        return (t - mean) / std * sig_s + mu_s

    weights = torch.randn(3, 2, 3, 2, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((permuted_adain(x, perm=perm) * weights).sum(), x)
    (expected,) = torch.autograd.grad((restated(x) * weights).sum(), x)
    torch.testing.assert_close(grad, expected)
    assert torch.autograd.gradcheck(restated, (x,))
    (full,) = torch.autograd.grad(((cross_norm(x, perm=perm)) * weights).sum(), x)
    assert not torch.allclose(full, grad)  # CrossNorm lets the gradient reach the partner


# ----- the draws -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(STYLE_METHODS))
def test_apply_coin_fires_with_probability_p(method):
    options_class = STYLE_METHODS[method][0]
    p = options_class().p
    g = torch.Generator().manual_seed(16)
    draws = 4000
    fired = sum(SAMPLERS[method]((4, 2, 3, 3), options_class(), generator=g) is not None
                for _ in range(draws))
    assert abs(fired - draws * p) < 5 * math.sqrt(draws * p * (1 - p))


@pytest.mark.parametrize("method", ["mixstyle", "efdmix"])
def test_mixing_weights_follow_beta_alpha_alpha(method):
    options = STYLE_METHODS[method][0](p=1.0)
    g = torch.Generator().manual_seed(17)
    lam = torch.cat([SAMPLERS[method]((8, 2, 3, 3), options, generator=g)["lam"]
                     for _ in range(500)]).double()
    assert abs(lam.mean().item() - 0.5) < 0.03
    assert abs(lam.var().item() - 1 / (4 * (2 * 0.1 + 1))) < 0.01  # 0.2083
    assert ((lam >= 0) & (lam <= 1)).all()


@pytest.mark.parametrize("method", ["mixstyle", "efdmix"])
def test_partner_permutations_random_and_crossdomain(method):
    options_class = STYLE_METHODS[method][0]
    g = torch.Generator().manual_seed(18)
    seen = set()
    for _ in range(100):
        perm = SAMPLERS[method]((8, 2, 3, 3), options_class(p=1.0, mix="crossdomain"),
                                generator=g)["perm"]
        assert sorted(perm.tolist()) == list(range(8))
        assert (perm[:4] >= 4).all() and (perm[4:] < 4).all()
        seen.update(zip(range(8), perm.tolist(), strict=True))
    assert len(seen) == 32  # every cross-half pair occurs
    perm = SAMPLERS[method]((8, 2, 3, 3), options_class(p=1.0), generator=g)["perm"]
    assert sorted(perm.tolist()) == list(range(8))


@pytest.mark.parametrize("unit_class", [MixStyle, EFDMix])
def test_crossdomain_with_an_odd_batch_is_a_clear_error(unit_class):
    x = feats(5, 2, 3, 3)
    with pytest.raises(ValueError, match="needs an even batch size, got 5"):
        SAMPLERS["mixstyle" if unit_class is MixStyle else "efdmix"](
            x.shape, unit_class.options_class(p=0.0, mix="crossdomain"))
    unit = unit_class(mix="crossdomain")
    unit.active = True
    with pytest.raises(ValueError, match="style.mix=random"):
        unit(x)


# ----- the units -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(STYLE_METHODS))
def test_unit_acts_only_when_training_and_active(method):
    options_class, unit_class = STYLE_METHODS[method]
    unit = style_unit(options_class(p=1.0))
    assert type(unit) is unit_class and not unit.active and unit.training
    x = feats(4, 3, 5, 5, seed=19)
    assert unit(x) is x  # inactive
    unit.active = True
    unit.generator = torch.Generator().manual_seed(3)  # not the global stream: no order effects
    out = unit(x)
    assert out.shape == x.shape and (out - x).abs().max() > 1e-3
    assert unit.eval()(x) is x
    unit.train()
    half = unit(x.bfloat16())
    assert half.dtype == torch.bfloat16
    never = unit_class(p=0.0)
    never.active = True
    assert never(x) is x


@pytest.mark.parametrize("method", list(STYLE_METHODS))
def test_units_with_alike_seeded_generators_give_identical_outputs(method):
    options_class, unit_class = STYLE_METHODS[method]
    units = [unit_class(options_class(p=0.5)) for _ in range(3)]
    for unit, seed in zip(units, (20, 20, 21), strict=True):
        unit.active = True
        unit.generator = torch.Generator().manual_seed(seed)
    x = feats(4, 3, 5, 5, seed=22)
    outs = [[unit(x) for _ in range(6)] for unit in units]
    for a, b in zip(outs[0], outs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(outs[0], outs[2], strict=True))


def test_style_unit_registry_overrides_and_type_errors():
    assert set(STYLE_METHODS) == {"mixstyle", "dsu", "efdmix", "padain"}
    assert MixStyle(mix="crossdomain").options.mix == "crossdomain"
    assert isinstance(style_unit(PermutedAdaINOptions()), PermutedAdaIN)
    with pytest.raises(TypeError, match="no style unit takes dict"):
        style_unit({})
    with pytest.raises(TypeError, match="MixStyle takes MixStyleOptions, got DSUOptions"):
        MixStyle(DSUOptions())
    unit = DSU(p=1.0)
    unit.active = True
    unit.controller = SimpleNamespace(capture=True)
    with pytest.raises(ValueError, match="compile=false"):
        unit(feats(2, 2, 3, 3))


def test_statistics_need_two_spatial_positions():
    with pytest.raises(ValueError, match="at least 2 spatial positions"):
        mixstyle(feats(2, 3, 1, 1), perm=torch.tensor([1, 0]), lam=0.5)
