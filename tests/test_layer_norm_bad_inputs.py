"""Invalid layer / RMS / group / instance norm calls raise TypeError/ValueError naming the function
and the argument, and write nothing."""

import numpy as np

import fusedtrain as ft
from bad_calls import Bad, bad_call_tests, read_only, set_arg


def _rng():
    return np.random.default_rng(3)


def _ln_forward():
    return {"x": _rng().standard_normal((6, 4, 5)).astype(np.float32), "normalized_shape": (4, 5),
            "weight": np.ones((4, 5), np.float32), "bias": np.zeros((4, 5), np.float32), "eps": 1e-5}


def _ln_backward():
    f = _ln_forward()
    _, mean, rstd = ft.layer_norm_forward(f["x"], (4, 5))
    return {"dy": np.ones_like(f["x"]), "x": f["x"], "normalized_shape": (4, 5), "mean": mean,
            "rstd": rstd, "weight": f["weight"]}


def _rms_forward():
    f = _ln_forward()
    return {"x": f["x"], "normalized_shape": 5, "weight": np.ones(5, np.float32), "eps": None}


def _rms_backward():
    x = _ln_forward()["x"]
    _, rstd = ft.rms_norm_forward(x, 5)
    return {"dy": np.ones_like(x), "x": x, "normalized_shape": 5, "rstd": rstd,
            "weight": np.ones(5, np.float32)}


def _gn_forward():
    return {"x": _rng().standard_normal((3, 6, 4, 5)).astype(np.float32), "num_groups": 3,
            "weight": np.ones(6, np.float32), "bias": np.zeros(6, np.float32), "eps": 1e-5,
            "channels_last": False}


def _gn_backward():
    f = _gn_forward()
    _, mean, rstd = ft.group_norm_forward(f["x"], 3)
    return {"dy": np.ones_like(f["x"]), "x": f["x"], "num_groups": 3, "mean": mean, "rstd": rstd,
            "weight": f["weight"], "channels_last": False}


def _instance():
    return {"x": _rng().standard_normal((3, 6, 4, 5)).astype(np.float32),
            "running_mean": np.zeros(6, np.float32), "running_var": np.ones(6, np.float32),
            "weight": np.ones(6, np.float32), "bias": np.zeros(6, np.float32),
            "use_input_stats": True, "momentum": 0.1, "eps": 1e-5, "channels_last": False}


LF, LB, RF, RB = "layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward"
GF, GB, IN = "group_norm_forward", "group_norm_backward", "instance_norm"
TEMPLATES = {
    LF: (_ln_forward, ["x", "normalized_shape"]),
    LB: (_ln_backward, ["dy", "x", "normalized_shape", "mean", "rstd"]),
    RF: (_rms_forward, ["x", "normalized_shape"]),
    RB: (_rms_backward, ["dy", "x", "normalized_shape", "rstd"]),
    GF: (_gn_forward, ["x", "num_groups"]),
    GB: (_gn_backward, ["dy", "x", "num_groups", "mean", "rstd"]),
    IN: (_instance, ["x"]),
}


CASES = [
    Bad(LF, "x-list", set_arg("x", [[1.0, 2.0]]), TypeError, ("x",)),
    Bad(LF, "x-int", set_arg("x", lambda c: c["x"].astype(np.int32)), TypeError, ("x",)),
    Bad(LF, "x-not-contiguous", set_arg("x", lambda c: np.ones((6, 4, 10), np.float32)[:, :, ::2]), ValueError, ("x",)),
    Bad(LF, "shape-mismatch", set_arg("normalized_shape", (5, 4)), ValueError, ("normalized_shape",)),
    Bad(LF, "shape-too-long", set_arg("normalized_shape", (2, 6, 4, 5)), ValueError, ("normalized_shape",)),
    Bad(LF, "shape-empty", set_arg("normalized_shape", ()), ValueError, ("normalized_shape",)),
    Bad(LF, "shape-float", set_arg("normalized_shape", (4.0, 5)), TypeError, ("normalized_shape",)),
    Bad(LF, "shape-str", set_arg("normalized_shape", "45"), TypeError, ("normalized_shape",)),
    Bad(LF, "weight-shape", set_arg("weight", np.ones(20, np.float32)), ValueError, ("weight",)),
    Bad(LF, "bias-dtype", set_arg("bias", np.zeros((4, 5), np.float16)), TypeError, ("bias",)),
    Bad(LF, "eps-negative", set_arg("eps", -1.0), ValueError, ("eps",)),
    Bad(LF, "eps-nan", set_arg("eps", float("nan")), ValueError, ("eps",)),
    Bad(LF, "no-columns", lambda c: c.update(x=np.ones((3, 0), np.float32), normalized_shape=0, weight=None, bias=None),
        ValueError, ("normalized_shape",)),
    Bad(LB, "dy-shape", set_arg("dy", np.ones((6, 4, 4), np.float32)), ValueError, ("dy",)),
    Bad(LB, "dy-dtype", set_arg("dy", lambda c: c["dy"].astype(np.float64)), TypeError, ("dy",)),
    Bad(LB, "mean-shape", set_arg("mean", np.zeros(6, np.float32)), ValueError, ("mean",)),
    Bad(LB, "rstd-none", set_arg("rstd", None), TypeError, ("rstd",)),
    Bad(LB, "weight-shape", set_arg("weight", np.ones((5, 4), np.float32)), ValueError, ("weight",)),
    Bad(LB, "bias_grads-str", set_arg("bias_grads", "no"), TypeError, ("bias_grads",)),
    Bad(LB, "weight_grads-none", set_arg("weight_grads", None), TypeError, ("weight_grads",)),
    Bad(RF, "shape-mismatch", set_arg("normalized_shape", 4), ValueError, ("normalized_shape",)),
    Bad(RF, "eps-inf", set_arg("eps", float("inf")), ValueError, ("eps",)),
    Bad(RF, "weight-2d", set_arg("weight", np.ones((1, 5), np.float32)), ValueError, ("weight",)),
    Bad(RB, "rstd-shape", set_arg("rstd", np.ones((6, 4), np.float32)), ValueError, ("rstd",)),
    Bad(RB, "x-different-device-kind", set_arg("x", lambda c: c["x"].tolist()), TypeError, ("x",)),
    Bad(GF, "groups-not-dividing", set_arg("num_groups", 4), ValueError, ("num_groups",)),
    Bad(GF, "groups-zero", set_arg("num_groups", 0), ValueError, ("num_groups",)),
    Bad(GF, "groups-float", set_arg("num_groups", 3.0), TypeError, ("num_groups",)),
    Bad(GF, "x-1d", set_arg("x", np.ones(6, np.float32)), ValueError, ("x",)),
    Bad(GF, "weight-shape", set_arg("weight", np.ones(5, np.float32)), ValueError, ("weight",)),
    Bad(GF, "channels-last-mismatch", set_arg("channels_last", True), ValueError, ("num_groups",)),
    Bad(GF, "channels-last-not-bool", set_arg("channels_last", "yes"), TypeError, ("channels_last",)),
    Bad(GF, "no-values-per-group", set_arg("x", np.ones((2, 6, 0), np.float32)), ValueError, ("x",)),
    Bad(GB, "mean-shape", set_arg("mean", np.zeros((3, 2), np.float32)), ValueError, ("mean",)),
    Bad(GB, "dy-shape", set_arg("dy", np.ones((3, 6, 4, 4), np.float32)), ValueError, ("dy",)),
    Bad(GB, "groups-changed", set_arg("num_groups", 2), ValueError, ("mean",)),
    Bad(IN, "running-var-missing", set_arg("running_var", None), ValueError, ("running_var",)),
    Bad(IN, "running-mean-read-only", read_only("running_mean"), ValueError, ("running_mean",)),
    Bad(IN, "running-var-shape", set_arg("running_var", np.ones(5, np.float32)), ValueError, ("running_var",)),
    Bad(IN, "no-running-stats-without-input-stats",
        lambda c: c.update(use_input_stats=False, running_mean=None, running_var=None), ValueError, ("running_mean",)),
    Bad(IN, "one-value-per-instance", set_arg("x", np.ones((3, 6, 1), np.float32)), ValueError, ("x",)),
    Bad(IN, "momentum-above-1", set_arg("momentum", 1.5), ValueError, ("momentum",)),
    Bad(IN, "use-input-stats-not-bool", set_arg("use_input_stats", None), TypeError, ("use_input_stats",)),
    Bad(IN, "weight-aliases-running-mean", lambda c: c.update(weight=c["running_mean"]), ValueError,
        ("running_mean", "weight")),
]

test_bad_input_raises_naming_argument_and_writes_nothing, test_valid_template_call_succeeds = \
    bad_call_tests(CASES, TEMPLATES)
