"""Bad input to the foundation API: clear errors naming the argument, raised before any work."""

import numpy as np
import pytest

import gaussflow as gf


@pytest.mark.parametrize(
    "mean,cov,exc,match",
    [
        (np.zeros(2), np.eye(3), ValueError, "cov must be 2 x 2"),
        (np.zeros((2, 1)), np.eye(2), ValueError, "mean must have 1 dimension"),
        (np.zeros(2), np.ones(2), ValueError, "cov must have 2 dimension"),
        (np.array([0.0, np.nan]), np.eye(2), ValueError, "mean contains NaN"),
        (np.zeros(2), np.array([[1.0, np.inf], [np.inf, 1.0]]), ValueError, "cov contains NaN or inf"),
        (np.zeros(2), np.array([[1.0, 0.5], [0.2, 1.0]]), ValueError, "cov is not symmetric"),
        (np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]), ValueError, "not positive semi-definite"),
        (np.zeros(2), np.zeros((2, 3)), ValueError, "cov must be square"),
        ("ab", np.eye(2), TypeError, "mean must be an array"),
        (np.zeros(0), np.eye(0), ValueError, "at least one entry"),
    ],
)
def test_gaussian_rejects(mean, cov, exc, match):
    with pytest.raises(exc, match=match):
        gf.Gaussian(mean, cov)


def test_gaussian_accepts_within_tolerance_and_symmetrises():
    C = np.array([[1.0, 0.3], [0.3 + 1e-13, 1.0]])
    g = gf.Gaussian([0.0, 1.0], C)
    assert np.array_equal(np.asarray(g.cov), np.asarray(g.cov).T)
    gf.Gaussian([0.0, 0.0], np.zeros((2, 2)))  # degenerate (PSD) is allowed


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(Q=np.ones((2, 3)), K=np.ones((2, 2)), V=np.eye(3)), ValueError, "K has shape"),
        (dict(Q=np.ones((2, 3)), K=np.ones((2, 3)), V=np.ones((3, 2))), ValueError, "V has shape"),
        (dict(Q=np.ones((2, 3)), K=np.ones((2, 3)), V=np.ones((2, 3))), ValueError, "W_O is required"),
        (dict(Q=np.ones((2, 3)), K=np.ones((2, 3)), V=np.ones((2, 3)), W_O=np.ones((2, 2))),
         ValueError, "W_O has shape"),
        (dict(Q=np.ones(3), K=np.ones((2, 3)), V=np.eye(3)), ValueError, "Q must have 2 dimension"),
        (dict(Q=np.ones((2, 3)), K=np.ones((2, 3)), V=np.eye(3), beta=np.nan), ValueError,
         "beta must be finite"),
        (dict(Q=np.ones((2, 3)), K=np.ones((2, 3)), V=np.eye(3), beta="x"), TypeError,
         "beta must be a real number"),
        (dict(Q=np.full((2, 3), np.inf), K=np.ones((2, 3)), V=np.eye(3)), ValueError,
         "Q contains NaN"),
    ],
)
def test_softmax_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gf.Softmax(**kwargs)


def test_velocity_and_moment_rhs_check_their_arguments():
    f = gf.Softmax(np.eye(2), np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        f.velocity(gf.Gaussian.standard(2), np.ones(3))
    with pytest.raises(ValueError, match="dimension 3"):
        f.moment_rhs(gf.Gaussian.standard(3))
    with pytest.raises(TypeError, match="gf.Gaussian"):
        f.moment_rhs((np.zeros(2), np.eye(2)))


def test_derive_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'softmaxx'"):
        gf.derive("softmaxx")
