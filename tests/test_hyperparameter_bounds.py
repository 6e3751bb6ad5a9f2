"""The closed ends of each hyperparameter range are accepted and follow the reference there."""

import dataclasses

import pytest

from optim_cases import CASES
from precisions import PRECISIONS
from stepping import SideBySide, seed_for

# (case id, options overriding that case): every inclusive bound of the API contract.
BOUNDS = [
    ("sgd_[plain]", {"lr": 0.0}),
    ("momentum_[heavy-ball]", {"momentum": 0.0}),
    ("momentum_[dampening]", {"dampening": 1.0}),
    ("adagrad_[plain]", {"eps": 0.0, "lr_decay": 0.0, "weight_decay": 0.0}),
    ("rmsprop_[plain]", {"alpha": 0.0}),
    ("rmsprop_[centered]", {"alpha": 0.5, "eps": 1e-3}),
    ("adadelta_[plain]", {"rho": 0.0}),
    ("adadelta_[plain]", {"rho": 1.0}),
    ("adam_[plain]", {"beta1": 0.0, "beta2": 0.0}),
    ("adamw_[plain]", {"weight_decay": 0.0, "eps": 0.0}),
]
F32, F64 = PRECISIONS[0], PRECISIONS[1]


def _bound_cases():
    by_id = {c.id: c for c in CASES}
    for case_id, override in BOUNDS:
        base = by_id[case_id]
        label = base.label[:-1] + "|" + ",".join(f"{k}={v}" for k, v in override.items()) + "]"
        yield dataclasses.replace(base, label=label, options={**base.options, **override})


@pytest.mark.parametrize("precision", [F32, F64], ids=str)
@pytest.mark.parametrize("case", list(_bound_cases()), ids=str)
def test_bound_is_accepted_and_matches_reference(case, precision, isa):
    SideBySide(case, precision, [(7,), (33,)], seed_for(case, precision, "bounds")).run(20).check()
