"""The reference rules equal the textbook algorithms their docstrings cite (CS231n, Goodfellow et al. ch. 8)."""

import numpy as np
import pytest

import fusedtrain.reference as ref

STEPS = 25
# A diagonal quadratic, so gradients can be taken at any point, including look-ahead points.
CURVATURE = np.array([0.3, 1.0, 2.5, 7.0])


def grad_at(theta):
    return CURVATURE * theta


def start():
    return np.array([1.0, -2.0, 0.5, 3.0])


def test_momentum_is_cs231n_and_goodfellow_8_2():
    lr, rho = 0.05, 0.9
    p, buf = [start()], [np.zeros(4)]
    x, vx = start(), np.zeros(4)        # CS231n: v = rho*v + dx; x -= lr*v
    theta, v = start(), np.zeros(4)     # Alg. 8.2: v = a*v - eps*g; theta += v
    for k in range(1, STEPS + 1):
        ref.momentum_(p, [grad_at(p[0])], buf, step=k, lr=lr, momentum=rho)
        vx = rho * vx + grad_at(x)
        x = x - lr * vx
        v = rho * v - lr * grad_at(theta)
        theta = theta + v
        np.testing.assert_allclose(p[0], x, rtol=1e-12)
        np.testing.assert_allclose(p[0], theta, rtol=1e-12)


def test_nesterov_is_goodfellow_8_3_at_the_look_ahead_point():
    lr, a = 0.05, 0.9
    p, buf = [start()], [np.zeros(4)]
    theta, v = start(), np.zeros(4)     # Alg. 8.3: g at theta + a*v; v = a*v - eps*g; theta += v
    for k in range(1, STEPS + 1):
        ref.momentum_(p, [grad_at(p[0])], buf, step=k, lr=lr, momentum=a, nesterov=True)
        v = a * v - lr * grad_at(theta + a * v)
        theta = theta + v
        # The reference stores the look-ahead weights theta + a*v.
        np.testing.assert_allclose(p[0], theta + a * v, rtol=1e-12, atol=1e-14)


def test_sgd_is_goodfellow_8_1():
    p = [start()]
    theta = start()
    for _ in range(STEPS):
        ref.sgd_(p, [grad_at(p[0])], lr=0.1)
        theta = theta - 0.1 * grad_at(theta)
    np.testing.assert_allclose(p[0], theta, rtol=1e-14)


def test_adagrad_is_goodfellow_8_4():
    lr, delta = 0.1, 1e-7
    p, s = [start()], [np.zeros(4)]
    theta, r = start(), np.zeros(4)
    for k in range(1, STEPS + 1):
        ref.adagrad_(p, [grad_at(p[0])], s, step=k, lr=lr, eps=delta)
        g = grad_at(theta)
        r = r + g * g
        theta = theta - lr / (delta + np.sqrt(r)) * g
        np.testing.assert_allclose(p[0], theta, rtol=1e-12)


def test_rmsprop_is_goodfellow_8_5_without_the_small_constant():
    # The book puts delta inside the square root and torch outside; with none they agree.
    lr, rho = 0.01, 0.9
    p, sq = [start()], [np.zeros(4)]
    theta, r = start(), np.zeros(4)
    for _ in range(STEPS):
        ref.rmsprop_(p, [grad_at(p[0])], sq, lr=lr, alpha=rho, eps=0.0)
        g = grad_at(theta)
        r = rho * r + (1 - rho) * g * g
        theta = theta - lr / np.sqrt(r) * g
        np.testing.assert_allclose(p[0], theta, rtol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_nesterov_is_goodfellow_8_6_at_the_look_ahead_point(centered):
    lr, rho, a = 0.01, 0.9, 0.8
    p, sq, buf, gavg = [start()], [np.zeros(4)], [np.zeros(4)], [np.zeros(4)]
    theta, v, r, rg = start(), np.zeros(4), np.zeros(4), np.zeros(4)
    for _ in range(STEPS):
        ref.rmsprop_(p, [grad_at(p[0])], sq, lr=lr, alpha=rho, eps=0.0, momentum=a, momentum_buffers=buf,
                     nesterov=True, centered=centered, grad_avgs=gavg)
        g = grad_at(theta + a * v)                      # gradient at the interim point
        r = rho * r + (1 - rho) * g * g
        rg = rho * rg + (1 - rho) * g
        scale = np.sqrt(r - rg * rg) if centered else np.sqrt(r)
        v = a * v - lr / scale * g
        theta = theta + v
        np.testing.assert_allclose(p[0], theta + a * v, rtol=1e-10, atol=1e-13)


def test_adam_is_goodfellow_8_7():
    lr, rho1, rho2, delta = 0.01, 0.9, 0.999, 1e-8
    p, m, v = [start()], [np.zeros(4)], [np.zeros(4)]
    theta, s, r = start(), np.zeros(4), np.zeros(4)
    for t in range(1, STEPS + 1):
        ref.adam_(p, [grad_at(p[0])], m, v, step=t, lr=lr, beta1=rho1, beta2=rho2, eps=delta)
        g = grad_at(theta)
        s = rho1 * s + (1 - rho1) * g
        r = rho2 * r + (1 - rho2) * g * g
        s_hat, r_hat = s / (1 - rho1 ** t), r / (1 - rho2 ** t)
        theta = theta - lr * s_hat / (np.sqrt(r_hat) + delta)
        np.testing.assert_allclose(p[0], theta, rtol=1e-12)


def test_adamw_decays_before_the_adam_step():
    lr, wd = 0.01, 0.1
    p, m, v = [start()], [np.zeros(4)], [np.zeros(4)]
    q, m2, v2 = [start()], [np.zeros(4)], [np.zeros(4)]
    for t in range(1, STEPS + 1):
        g = grad_at(p[0])
        ref.adamw_(p, [g], m, v, step=t, lr=lr, weight_decay=wd)
        q[0] *= 1 - lr * wd
        ref.adam_(q, [g], m2, v2, step=t, lr=lr)
        np.testing.assert_allclose(p[0], q[0], rtol=1e-14)


def test_adadelta_is_zeiler_algorithm_1():
    rho, eps = 0.95, 1e-6
    p, sq, acc = [start()], [np.zeros(4)], [np.zeros(4)]
    x, eg2, edx2 = start(), np.zeros(4), np.zeros(4)
    for _ in range(STEPS):
        ref.adadelta_(p, [grad_at(p[0])], sq, acc, rho=rho, eps=eps)
        g = grad_at(x)
        eg2 = rho * eg2 + (1 - rho) * g * g
        dx = -np.sqrt(edx2 + eps) / np.sqrt(eg2 + eps) * g
        edx2 = rho * edx2 + (1 - rho) * dx * dx
        x = x + dx
        np.testing.assert_allclose(p[0], x, rtol=1e-12)


def test_half_params_are_rounded_to_their_dtype_on_store():
    p = [np.array([1.0, 2.0, -3.0], np.float16)]
    ref.sgd_(p, [np.array([1e-4, 1.0, 0.3])], lr=0.1)
    exact = np.array([1.0, 2.0, -3.0]) - 0.1 * np.array([1e-4, 1.0, 0.3])
    assert p[0].dtype == np.float16
    np.testing.assert_array_equal(p[0], exact.astype(np.float16))
