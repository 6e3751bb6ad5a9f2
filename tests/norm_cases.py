"""What the normalization case tables (bn_cases.py, ln_cases.py) share: case fields, random inputs."""

import numpy as np

from precisions import dtype_named
from stepping import seed_for


class NormCase:
    """What every normalization case (a frozen dataclass with fields id and shape) does: it
    prints as its id, which is its test id."""

    def __str__(self):
        return self.id


class ChannelCase(NormCase):
    """A case whose x has channels: `shape` (N, C, *spatial), or (N, *spatial, C) with the
    field channels_last."""

    @property
    def channels(self):
        return self.shape[-1] if self.channels_last else self.shape[1]

    def to_nchw(self, a):
        """The same values as an (N, C, *spatial) array (what torch's functional norms take)."""
        return np.moveaxis(a, -1, 1) if self.channels_last else a


def rng_for(*tags):
    return np.random.default_rng(seed_for(*tags))


def norm_inputs(family, case, dtype_name, tags, param_shape, running_stats):
    """``(x, weight, bias[, running_mean, running_var], dy)``: x (values 0.5 + 2 * normal, so the
    mean is not 0) and dy in dtype_name; weight and bias (None without affine) and the running
    statistics (with running_stats) of param_shape, float32 (float64 for float64)."""
    dtype = dtype_named(dtype_name)
    rng = rng_for(family, case.id, dtype_name, *tags)
    x = (0.5 + 2.0 * rng.standard_normal(case.shape)).astype(np.float32).astype(dtype)
    pdtype = np.float64 if dtype_name == "float64" else np.float32
    weight = bias = None
    if case.affine:
        weight = rng.uniform(0.5, 1.5, param_shape).astype(pdtype)
        bias = rng.standard_normal(param_shape).astype(pdtype)
    stats = ()
    if running_stats:
        stats = (rng.standard_normal(param_shape).astype(pdtype),
                 rng.uniform(0.5, 2.0, param_shape).astype(pdtype))
    dy = rng.standard_normal(case.shape).astype(np.float32).astype(dtype)
    return (x, weight, bias, *stats, dy)
