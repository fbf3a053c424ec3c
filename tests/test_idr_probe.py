"""IDR probe arithmetic on constructed representations with known answers."""
import numpy as np
import pytest

from kdsr_pdd.idr_probe import loo_ridge_r2, mean_cosine, pooled_r2, variation_ratio

SIGMAS = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
N_PHOTOS = 6


def design(n_photos=N_PHOTOS, sigmas=SIGMAS):
    """Every photo with every sigma: (sigma [N], photo id [N])."""
    return np.tile(sigmas, n_photos), np.repeat(np.arange(n_photos), len(sigmas))


def test_linear_in_sigma_with_photo_offsets_gives_r2_one():
    """IDR = sigma * a + offset(photo): the offsets are large, touch every dimension and differ per photo,
    but lie in a 3-D subspace shared by the photos (content directions), so a linear probe fitted on the
    other photos can cancel them exactly; the sigma direction a is random, not orthogonal to them."""
    rng = np.random.default_rng(0)
    sigma, photo = design()
    d = 12
    direction = rng.normal(size=d)
    offsets = rng.normal(scale=5.0, size=(N_PHOTOS, 3)) @ rng.normal(size=(3, d))
    idrs = 3.0 * np.outer(sigma, direction) + offsets[photo] + 0.7
    result = loo_ridge_r2(idrs, sigma, photo)
    assert result.r2 == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(result.predictions, sigma, atol=1e-3)
    assert set(result.alphas) == set(range(N_PHOTOS))


def test_single_feature_linear_in_sigma_with_fixed_alpha():
    sigma, photo = design()
    idrs = np.stack([2 * sigma - 1, np.repeat(np.arange(N_PHOTOS) ** 2.0, len(SIGMAS))], axis=1)
    assert loo_ridge_r2(idrs, sigma, photo, alphas=[1e-9]).r2 == pytest.approx(1.0, abs=1e-6)


def test_representation_ignoring_sigma_scores_at_most_zero():
    rng = np.random.default_rng(1)
    sigma, photo = design()
    photo_codes = rng.normal(size=(N_PHOTOS, 16))
    idrs = photo_codes[photo]  # the photo only: nothing about sigma
    for alphas in ([1e-3], [1.0], np.logspace(-6, 4, 21)):
        assert loo_ridge_r2(idrs, sigma, photo, alphas=alphas).r2 <= 1e-12


def test_noise_ignoring_sigma_scores_below_zero_on_average():
    rng = np.random.default_rng(2)
    sigma, photo = design()
    scores = [loo_ridge_r2(rng.normal(size=(len(sigma), 8)), sigma, photo).r2 for _ in range(20)]
    assert np.mean(scores) < 0.0


def test_pooled_r2_definition():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert pooled_r2(y, y) == 1.0
    assert pooled_r2(y, np.full(4, 2.5)) == 0.0
    # SS_res = 4 * 1 = 4, SS_tot = 5 -> 1 - 4/5
    assert pooled_r2(y, y + 1) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        pooled_r2(np.ones(3), np.ones(3))


def test_variation_ratio_hand_computed():
    # content 0: dim0 in {0, 2} -> var 1; content 1: dim0 in {10, 14} -> var 4; dim1 constant 0.
    # within = mean(1, 4) = 2.5; means: dim0 {1, 12} -> var 30.25; ratio = 2.5 / 30.25
    idrs = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [14.0, 0.0]])
    content = np.array([0, 0, 1, 1])
    assert variation_ratio(idrs, content) == pytest.approx(2.5 / 30.25)
    # the ratio sums over dimensions: a second dimension adds to both parts
    idrs2 = np.array([[0.0, 1.0], [2.0, 1.0], [10.0, 3.0], [14.0, 3.0]])  # dim1: within 0, between 1
    assert variation_ratio(idrs2, content) == pytest.approx(2.5 / 31.25)
    with pytest.raises(ValueError):
        variation_ratio(np.array([[0.0], [1.0], [0.0], [1.0]]), content)  # equal means: B = 0


def test_mean_cosine_hand_computed():
    s = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    t = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    assert mean_cosine(s, t) == pytest.approx((1.0 + 1 / np.sqrt(2) - 1.0) / 3)
    assert mean_cosine(t, t) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mean_cosine(np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError):
        mean_cosine(np.ones((2, 2)), np.ones((2, 3)))


def test_input_checks():
    sigma, photo = design(n_photos=2)
    with pytest.raises(ValueError):
        loo_ridge_r2(np.ones((len(sigma), 2)), sigma[:-1], photo)
    with pytest.raises(ValueError):
        loo_ridge_r2(np.ones((len(sigma), 2)), sigma, np.zeros(len(sigma), dtype=int))
    # two photos: no inner CV, the fallback alpha is used
    assert loo_ridge_r2(np.stack([sigma, sigma], 1), sigma, photo).alphas == {0: 1.0, 1: 1.0}
