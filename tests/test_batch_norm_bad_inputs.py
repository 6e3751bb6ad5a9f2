"""Invalid batch-norm calls raise TypeError/ValueError naming the argument and write nothing."""

import numpy as np

import fusedtrain as ft
from bad_calls import Bad, bad_call_tests, read_only, set_arg


def _forward_call():
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((6, 4, 5)).astype(np.float32),
            "weight": np.ones(4, np.float32), "bias": np.zeros(4, np.float32),
            "running_mean": rng.standard_normal(4).astype(np.float32),
            "running_var": np.ones(4, np.float32), "training": True, "momentum": 0.1,
            "eps": 1e-5, "channels_last": False}


def _backward_call():
    f = _forward_call()
    _, mean, invstd = ft.batch_norm_forward(f["x"])
    return {"dy": np.ones_like(f["x"]), "x": f["x"], "weight": f["weight"], "save_mean": mean,
            "save_invstd": invstd, "channels_last": False}


def _update_call():
    rng = np.random.default_rng(2)
    return {"running_mean": np.zeros(4, np.float32), "running_var": np.ones(4, np.float32),
            "mean": rng.standard_normal(4).astype(np.float32),
            "var": np.ones(4, np.float32), "count": 10, "momentum": 0.1}


def _merge_call():
    return {"means": np.zeros((3, 4), np.float32), "vars": np.ones((3, 4), np.float32),
            "counts": [2, 3, 4]}


TEMPLATES = {
    "batch_norm_forward": (_forward_call, ["x"]),
    "batch_norm_backward": (_backward_call, ["dy", "x", "weight", "save_mean", "save_invstd"]),
    "batch_norm_stats": (lambda: {"x": _forward_call()["x"]}, ["x"]),
    "update_running_stats_": (_update_call, ["running_mean", "running_var", "mean", "var", "count"]),
    "merge_stats": (_merge_call, ["means", "vars", "counts"]),
}


F, B, U = "batch_norm_forward", "batch_norm_backward", "update_running_stats_"
CASES = [
    Bad(F, "x-list", set_arg("x", [[1.0, 2.0], [3.0, 4.0]]), TypeError, ("x",)),
    Bad(F, "x-int", set_arg("x", lambda c: c["x"].astype(np.int32)), TypeError, ("x",)),
    Bad(F, "x-1d", set_arg("x", np.ones(5, np.float32)), ValueError, ("x",)),
    Bad(F, "x-one-value-per-channel", set_arg("x", np.ones((1, 4), np.float32)), ValueError, ("x",)),
    Bad(F, "x-one-value-per-channel-3d", set_arg("x", np.ones((1, 4, 1), np.float32)), ValueError, ("x",)),
    Bad(F, "x-not-contiguous", set_arg("x", lambda c: np.ones((6, 4, 10), np.float32)[:, :, ::2]), ValueError, ("x",)),
    Bad(F, "weight-shape", set_arg("weight", np.ones(5, np.float32)), ValueError, ("weight",)),
    Bad(F, "weight-2d", set_arg("weight", np.ones((4, 1), np.float32)), ValueError, ("weight",)),
    Bad(F, "bias-dtype", set_arg("bias", np.zeros(4, np.float16)), TypeError, ("bias",)),
    Bad(F, "running-mean-shape", set_arg("running_mean", np.zeros(3, np.float32)), ValueError, ("running_mean",)),
    Bad(F, "running-var-read-only", read_only("running_var"), ValueError, ("running_var",)),
    Bad(F, "running-var-missing", set_arg("running_var", None), ValueError, ("running_var",)),
    Bad(F, "channels-last-mismatch", set_arg("channels_last", True), ValueError, ("weight",)),
    Bad(F, "eval-without-running", lambda c: c.update(training=False, running_mean=None, running_var=None),
        ValueError, ("running_mean",)),
    Bad(F, "momentum-above-1", set_arg("momentum", 1.5), ValueError, ("momentum",)),
    Bad(F, "momentum-nan", set_arg("momentum", float("nan")), ValueError, ("momentum",)),
    Bad(F, "eps-negative", set_arg("eps", -1e-5), ValueError, ("eps",)),
    Bad(F, "training-not-bool", set_arg("training", "yes"), TypeError, ("training",)),
    Bad(F, "momentum-beyond-float64", set_arg("momentum", 10 ** 400), ValueError, ("momentum",)),
    Bad(F, "eps-beyond-float64", set_arg("eps", 10 ** 400), ValueError, ("eps",)),
    Bad(B, "dy-shape", set_arg("dy", np.ones((6, 4, 4), np.float32)), ValueError, ("dy",)),
    Bad(B, "dy-dtype", set_arg("dy", lambda c: c["dy"].astype(np.float64)), TypeError, ("dy",)),
    Bad(B, "save-mean-shape", set_arg("save_mean", np.zeros(3, np.float32)), ValueError, ("save_mean",)),
    Bad(B, "save-invstd-none", set_arg("save_invstd", None), TypeError, ("save_invstd",)),
    Bad(B, "weight-shape", set_arg("weight", np.ones(2, np.float32)), ValueError, ("weight",)),
    Bad(B, "input-grad-not-bool", set_arg("input_grad", "no"), TypeError, ("input_grad",)),
    Bad(B, "sums-not-tuple", set_arg("sums", np.zeros(4)), TypeError, ("sums",)),
    Bad(B, "sums-without-input-grad", lambda c: c.update(sums=(np.zeros(4), np.zeros(4), 60),
                                                         input_grad=False), ValueError, ("sums",)),
    Bad(B, "sum-dy-shape", set_arg("sums", (np.zeros(3), np.zeros(4), 60)), ValueError, ("sum_dy",)),
    Bad(B, "sum-dy-none", set_arg("sums", (None, np.zeros(4), 60)), ValueError, ("sum_dy",)),
    Bad(B, "sum-dy-xhat-dtype", set_arg("sums", (np.zeros(4), np.zeros(4, np.int32), 60)),
        TypeError, ("sum_dy_xhat",)),
    # x holds 30 values per channel: a batch it is a slice of has at least as many.
    Bad(B, "sums-count-below-local", set_arg("sums", (np.zeros(4), np.zeros(4), 29)), ValueError,
        ("count",)),
    Bad(B, "sums-count-nan", set_arg("sums", (np.zeros(4), np.zeros(4), float("nan"))), ValueError,
        ("count",)),
    Bad("batch_norm_stats", "x-0d", set_arg("x", np.float32(3.0)), ValueError, ("x",)),
    Bad(U, "count-1", set_arg("count", 1), ValueError, ("count",)),
    Bad(U, "count-str", set_arg("count", "10"), TypeError, ("count",)),
    Bad(U, "mean-shape", set_arg("mean", np.zeros(5, np.float32)), ValueError, ("mean",)),
    Bad(U, "var-dtype", set_arg("var", np.ones(4, np.int64)), TypeError, ("var",)),
    Bad(U, "running-var-read-only", read_only("running_var"), ValueError, ("running_var",)),
    Bad(U, "momentum-negative", set_arg("momentum", -0.1), ValueError, ("momentum",)),
    Bad(U, "count-beyond-float64", set_arg("count", 10 ** 400), ValueError, ("count",)),
    Bad("merge_stats", "counts-beyond-float64", set_arg("counts", [1, 10 ** 400, 3]), ValueError,
        ("counts",)),
    Bad("merge_stats", "counts-length", set_arg("counts", [1, 2]), ValueError, ("counts",)),
    Bad("merge_stats", "counts-negative", set_arg("counts", [1, -2, 3]), ValueError, ("counts",)),
    Bad("merge_stats", "vars-shape", set_arg("vars", np.ones((3, 5), np.float32)), ValueError, ("vars",)),
    Bad("merge_stats", "means-1d", set_arg("means", np.zeros(4, np.float32)), ValueError, ("means",)),
]

test_bad_input_raises_naming_argument_and_writes_nothing, test_valid_template_call_succeeds = \
    bad_call_tests(CASES, TEMPLATES)
