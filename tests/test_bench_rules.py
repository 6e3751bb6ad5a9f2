"""The benchmark and demo tables of optimizer rules follow the rule table (Note [bench rules])."""
from fusedtrain import demo
from fusedtrain._optim_rules import FUNCTIONS
from fusedtrain.bench import optim as bench_optim


def test_every_functional_rule_is_benchmarked_and_in_the_demo():
    timed = {r.fn for r in bench_optim.RULES}
    trained = {o.fn.__name__ for o in demo.OPTIMIZERS}
    assert set(FUNCTIONS) <= timed
    assert set(FUNCTIONS) <= trained


def test_bench_rules_move_the_bytes_and_share_torchs_state():
    rules = bench_optim.RULES_BY_NAME
    assert [r.name for r in bench_optim.RULES] == [
        "sgd", "momentum", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "amsgrad", "lion",
        "nadam"]
    assert {n: r.bytes_per_param for n, r in rules.items()} == {
        "sgd": 12, "momentum": 20, "adagrad": 20, "rmsprop": 20, "adadelta": 28, "adam": 28,
        "adamw": 28, "amsgrad": 36, "lion": 20, "nadam": 28}
    assert {n: r.torch_cls for n, r in rules.items()} == {
        "sgd": "SGD", "momentum": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop",
        "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW", "amsgrad": "Adam", "lion": "",
        "nadam": "NAdam"}
    # torch.optim.SGD's momentum defaults to 0: the twin must be told the functional's 0.9.
    assert rules["momentum"].hyper == {"lr": 0.01, "momentum": 0.9}
    assert rules["amsgrad"].state_kwargs == ("max_exp_avg_sqs",)
    assert rules["amsgrad"].torch_state == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    assert rules["adagrad"].torch_state == ("sum",)


def test_bench_stepper_takes_steps():
    import numpy as np
    import fusedtrain as ft
    for rule in bench_optim.RULES:
        params, grads = bench_optim.cpu_data([8, 3])
        before = [p.copy() for p in params]
        step = bench_optim.stepper(ft, rule, params, grads, np.zeros_like)
        step()
        step()
        assert all(np.isfinite(p).all() for p in params), rule.name
        assert not np.array_equal(params[0], before[0]), rule.name
