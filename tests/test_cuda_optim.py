"""CUDA kernels of the rules: trajectories vs the float64 reference and torch fused, launches,
streams, graphs, AMP scalars, misaligned and huge tensors.  Skipped without a GPU."""

import numpy as np
import pytest

import fusedtrain as ft
import fusedtrain.reference as ref
from fusedtrain import _C
from gpu_support import require_torch_cuda, to_cuda, to_host
from optim_cases import CASES, FIRST_OF_EACH_RULE, RULES
from precisions import PRECISIONS, Precision
from stepping import SideBySide, seed_for

pytestmark = pytest.mark.gpu
torch = require_torch_cuda()

STEPS = 20
SHAPES = {"1": (1,), "7": (7,), "4097": (17, 241), "1M+3": (2 ** 20 + 3,)}


class OnDevice(SideBySide):
    """SideBySide whose kernel-side arrays live on the GPU as torch tensors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ext_params = [to_cuda(torch, p) for p in self.ext_params]
        if self.ext_master is not None:
            self.ext_master = [to_cuda(torch, p) for p in self.ext_master]
        self.ext_state = {k: [to_cuda(torch, a) for a in v] for k, v in self.ext_state.items()}

    def new_grads(self):
        ext, host = super().new_grads()
        return [to_cuda(torch, g) for g in ext], host

    def check(self, where=""):
        device = self.ext_params, self.ext_master, self.ext_state
        self.ext_params = [to_host(torch, p) for p in self.ext_params]
        if self.ext_master is not None:
            self.ext_master = [to_host(torch, p) for p in self.ext_master]
        self.ext_state = {k: [to_host(torch, a) for a in v] for k, v in self.ext_state.items()}
        try:
            super().check(where)
        finally:
            self.ext_params, self.ext_master, self.ext_state = device


@pytest.mark.parametrize("size", list(SHAPES))
@pytest.mark.parametrize("precision", PRECISIONS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_trajectory_matches_reference(case, precision, size):
    OnDevice(case, precision, [SHAPES[size]], seed_for("cuda", case, precision, size)).run(STEPS).check()


def _stream_busy_after(fn, busy_ms=3000):
    """Runs fn while the current stream is held busy; True if fn returned before the stream was
    done, i.e. fn never waited for the device (no device or stream synchronization)."""
    torch.cuda._sleep(int(busy_ms * 1e-3 * 2e9))   # ~busy_ms of spinning at up to 2 GHz
    fn()
    return not torch.cuda.current_stream().query()


def test_many_mixed_tensors_fresh_grads_one_launch_no_sync_no_rebuild():
    # OnDevice.new_grads makes new grad tensors every step, as zero_grad(set_to_none=True) does.
    case = next(c for c in CASES if c.rule is RULES["adamw_"])
    rng = np.random.default_rng(0)
    shapes = [(int(n),) for n in rng.integers(1, 5000, size=10_000)]
    run = OnDevice(case, PRECISIONS[0], shapes, seed_for("cuda-many"))
    run.step(1)                       # first step with these sizes uploads the chunk list
    torch.cuda.synchronize()
    launches, builds = _C.cuda_launch_count(), _C.cuda_chunk_list_builds()
    for k in range(2, 5):
        grads, ref_grads = run.new_grads()
        torch.cuda.synchronize()
        assert _stream_busy_after(
            lambda: run.call_rule(ft, run.ext_params, grads, run.ext_state, None, k)), \
            f"step {k} waited for the device"
        run.call_rule(ref, run.ref_params, ref_grads, run.ref_state, None, k)
    assert _C.cuda_launch_count() - launches == 3
    assert _C.cuda_chunk_list_builds() == builds, "new grad pointers rebuilt the chunk list"
    torch.cuda.synchronize()
    run.check()


def test_pointer_swap_between_steps_uses_new_memory():
    p = torch.randn(4099, device="cuda")
    g = torch.randn(4099, device="cuda")
    ft.sgd_([p], [g], lr=0.5)
    fresh = torch.randn(4099, device="cuda")       # p.data = ... : same size, new storage
    old = p
    p = fresh.clone()
    before_old = old.clone()
    ft.sgd_([p], [g], lr=0.5)
    torch.testing.assert_close(p, fresh - 0.5 * g, rtol=0, atol=0)
    assert torch.equal(old, before_old)


def test_list_reused_on_a_second_stream_right_after_its_first_build():
    # The first step with new sizes builds the chunk list; a step on another stream at once must
    # see it complete (the upload is not ordered on the first stream only).
    for trial in range(5):
        n = 70_001 + trial                              # new sizes every trial: a fresh build
        p1, p2 = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
        g = torch.randn(n, device="cuda")
        want1, want2 = p1 - 0.25 * g, p2 - 0.25 * g
        s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
        s1.wait_stream(torch.cuda.current_stream())
        s2.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s1):
            ft.sgd_([p1], [g], lr=0.25)
        with torch.cuda.stream(s2):
            ft.sgd_([p2], [g], lr=0.25)
        torch.cuda.synchronize()
        torch.testing.assert_close(p1, want1, rtol=0, atol=0)
        torch.testing.assert_close(p2, want2, rtol=0, atol=0)


def test_captured_graph_survives_many_other_lists():
    n = 10_007
    p = torch.randn(n, device="cuda")
    g = torch.randn(n, device="cuda")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    lr, step = torch.tensor([0.01], device="cuda"), torch.tensor([1.0], device="cuda")
    shadow = [t.clone() for t in (p, m, v)]
    ft.adam_([p], [g], [m], [v], step=step, lr=lr)
    ft.adam_([shadow[0]], [g], [shadow[1]], [shadow[2]], step=step, lr=lr)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(graph, stream=s):
            ft.adam_([p], [g], [m], [v], step=step, lr=lr)
    torch.cuda.current_stream().wait_stream(s)
    for k in range(2, 8):
        # Many other size lists in between: more than any cache holds.
        for j in range(80):
            q = torch.randn(100 + 37 * j + k, device="cuda")
            ft.sgd_([q], [q.clone()], lr=0.1)
        step.fill_(k)
        graph.replay()
        ft.adam_([shadow[0]], [g], [shadow[1]], [shadow[2]], step=step, lr=lr)
    torch.cuda.synchronize()
    for a, b in zip((p, m, v), shadow):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_two_threads_step_different_lists_concurrently():
    # Each thread's list ends bitwise equal to the same steps taken alone, one thread at a time.
    import threading
    torch.manual_seed(7)
    lists = []
    for t in range(2):
        ps = [torch.randn(n + t, device="cuda") for n in (5, 70_000, 333)]
        gs = [torch.randn_like(x) for x in ps]
        ms, vs = [torch.zeros_like(x) for x in ps], [torch.zeros_like(x) for x in ps]
        lists.append((ps, gs, ms, vs))
    alone = [tuple([x.clone() for x in lst] for lst in item) for item in lists]
    torch.cuda.synchronize()
    errors = []

    def work(ps, gs, ms, vs):
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for k in range(1, 51):
                    ft.adam_(ps, gs, ms, vs, step=k, lr=0.01)
            s.synchronize()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=item) for item in lists]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    for item in alone:
        for k in range(1, 51):
            ft.adam_(*item, step=k, lr=0.01)
    torch.cuda.synchronize()
    for got, want in zip(lists, alone):
        for a, b in zip(sum(got, []), sum(want, [])):
            assert torch.equal(a, b)


@pytest.mark.parametrize("case", FIRST_OF_EACH_RULE, ids=str)
def test_cuda_matches_torch_fused(case):
    f32 = Precision("f32", "float32", "float32")
    shapes = [(4097,), (33, 65)]
    run = OnDevice(case, f32, shapes, seed_for("cuda-torch", case))
    tp = [p.detach().clone().requires_grad_(True) for p in run.ext_params]
    opt = case.torch_optimizer(torch, tp)
    if opt is None:
        pytest.skip("torch has no such optimizer")
    import inspect
    accepted = inspect.signature(type(opt).__init__).parameters   # AdamW takes no decoupled_weight_decay
    defaults = {k: v for k, v in opt.defaults.items()
                if k in accepted and k not in ("foreach", "fused", "differentiable", "capturable")}
    if case.rule.torch_fused:
        opt = type(opt)(tp, **defaults, fused=True)
    for k in range(1, STEPS + 1):
        grads, _ = run.new_grads()
        run.call_rule(ft, run.ext_params, grads, run.ext_state, None, k)
        for p, g in zip(tp, grads):
            p.grad = g.clone()
        opt.step()
    for got, want in zip(run.ext_params, tp):
        torch.testing.assert_close(got, want.detach(), rtol=2e-5, atol=2e-6)


def test_cupy_arrays_and_cuda_array_interface():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(1)
    host = [rng.standard_normal(n).astype(np.float32) for n in (5, 4099)]
    params = [cp.asarray(h) for h in host]
    grads = [cp.asarray(h * 0.5) for h in host]
    bufs = [cp.zeros_like(p) for p in params]
    ft.momentum_(params, grads, bufs, step=1, lr=0.1)
    for p, h in zip(params, host):
        np.testing.assert_allclose(cp.asnumpy(p), h - 0.1 * 0.5 * h, rtol=1e-6)


def test_work_on_a_side_stream_is_ordered():
    s = torch.cuda.Stream()
    p = torch.ones(1 << 22, device="cuda")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    s.wait_stream(torch.cuda.current_stream())    # p, m, v were made on the default stream
    with torch.cuda.stream(s):
        g = torch.full_like(p, 2.0)   # produced on s: our step must run after it, on s
        g.mul_(3.0)
        ft.adam_([p], [g], [m], [v], step=1, lr=0.1)
    s.synchronize()
    torch.testing.assert_close(m, torch.full_like(p, 0.6))


def test_cuda_graph_replay_equals_eager():
    # Eager steps read the same device lr / step values as the graph (a float32 lr and a Python
    # double lr give coefficients one ulp apart), so the two must agree to the bit.
    n = 10_007
    torch.manual_seed(0)
    def make():
        p = torch.randn(n, device="cuda")
        return [p], [torch.randn(n, device="cuda")], [torch.zeros(n, device="cuda")], [torch.zeros(n, device="cuda")]
    eager, graphed = make(), make()
    for a, b in zip(eager, graphed):
        b[0].copy_(a[0])
    lr = torch.tensor([0.01], device="cuda")
    step = torch.tensor([1.0], device="cuda")
    ft.adam_(*graphed, step=step, lr=lr)        # warm-up: uploads the chunk list
    ft.adam_(*eager, step=step, lr=lr)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            ft.adam_(*graphed, step=step, lr=lr)
    torch.cuda.current_stream().wait_stream(s)
    for k in range(2, 12):
        step.fill_(k)
        lr.fill_(0.01 / k)
        g.replay()
        ft.adam_(*eager, step=step, lr=lr)
    torch.cuda.synchronize()
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


def test_device_found_inf_skips_and_grad_scale_unscales():
    p = torch.randn(4097, device="cuda")
    g = torch.randn(4097, device="cuda")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    before = p.clone()
    ft.adam_([p], [g * 8], [m], [v], step=1, found_inf=torch.ones(1, device="cuda"))
    assert torch.equal(p, before) and not m.any() and not v.any()
    p2, m2, v2 = p.clone(), m.clone(), v.clone()
    ft.adam_([p], [g * 8], [m], [v], step=1, grad_scale=torch.tensor([8.0], device="cuda"),
             found_inf=torch.zeros(1, device="cuda"))
    ft.adam_([p2], [g], [m2], [v2], step=1)
    torch.testing.assert_close(p, p2)


def test_bad_input_raises_before_any_launch():
    p = [torch.randn(7, device="cuda"), torch.randn(9, device="cuda")]
    g = [torch.randn(7, device="cuda"), torch.randn(8, device="cuda")]
    m = [torch.zeros(7, device="cuda"), torch.zeros(9, device="cuda")]
    v = [torch.zeros(7, device="cuda"), torch.zeros(9, device="cuda")]
    snapshot = [t.clone() for t in p + m + v]
    torch.cuda.synchronize()
    before = _C.cuda_launch_count()
    with pytest.raises(ValueError, match=r"grads\[1\]"):
        ft.adam_(p, g, m, v, step=1)
    with pytest.raises(ValueError, match=r"params\[0\]|exp_avgs\[0\]|device"):
        ft.adam_(p, [x.cpu() for x in g], m, v, step=1)
    assert _C.cuda_launch_count() == before
    assert all(torch.equal(a, b) for a, b in zip(p + m + v, snapshot))


def test_misaligned_views_take_the_scalar_path():
    base = torch.randn(4098, device="cuda")
    p = base[1:]                                 # contiguous, 4 bytes past a 16-byte boundary
    g = torch.randn(4097, device="cuda")
    want = p - 0.1 * g
    ft.sgd_([p], [g], lr=0.1)
    torch.testing.assert_close(p, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("offset", [1, 3, 8])
def test_half_views_at_2_byte_offsets_and_misaligned_state(dtype, offset):
    # A half param at a 2-byte offset, its fp32 grad aligned, and one state misaligned beside an
    # aligned one: every slot's alignment matters, not only the param's.
    n = 4097 + 64
    rng = np.random.default_rng(offset)
    p_host = rng.standard_normal(n).astype(np.float32)
    g_host = rng.standard_normal(n).astype(np.float32)
    pbase = torch.zeros(n + offset, device="cuda", dtype=dtype)
    p = pbase[offset:]
    p.copy_(torch.from_numpy(p_host).to(dtype))
    g = torch.from_numpy(g_host).cuda()
    mbase = torch.zeros(n + 1, device="cuda")
    m = mbase[1:]                                # 4 bytes past alignment
    v = torch.zeros(n, device="cuda")
    master = p.float()
    ref_p, ref_m, ref_v = p.double(), torch.zeros(n, dtype=torch.float64, device="cuda"), \
        torch.zeros(n, dtype=torch.float64, device="cuda")
    for k in range(1, 4):
        ft.adam_([p], [g], [m], [v], step=k, lr=0.01, master_params=[master])
        gd = g.double()
        ref_m = 0.9 * ref_m + 0.1 * gd
        ref_v = 0.999 * ref_v + 0.001 * gd * gd
        ref_p = ref_p - 0.01 / (1 - 0.9 ** k) * ref_m / (ref_v.sqrt() / (1 - 0.999 ** k) ** 0.5 + 1e-8)
    torch.testing.assert_close(master.double(), ref_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.double(), ref_m, rtol=1e-5, atol=1e-7)
    assert torch.equal(p, master.to(dtype))     # the param is the rounded master


def test_global_norm_clip_and_ema_on_cuda():
    rng = np.random.default_rng(3)
    host = [rng.standard_normal(n).astype(np.float32) for n in (1, 7, 70_001)]
    dev = [to_cuda(torch, h) for h in host]
    want = np.sqrt(sum(float(np.sum(h.astype(np.float64) ** 2)) for h in host))
    assert ft.global_norm(dev) == pytest.approx(want, rel=1e-6)
    assert ft.global_norm(dev, float("inf")) == pytest.approx(max(np.abs(h).max() for h in host), rel=1e-7)
    total = ft.clip_grad_norm_(dev, 1.0)
    assert total == pytest.approx(want, rel=1e-6)
    assert ft.global_norm(dev) == pytest.approx(1.0, rel=1e-5)
    avg = [torch.zeros_like(d) for d in dev]
    ft.ema_(avg, dev, decay=0.9)
    for a, d in zip(avg, dev):
        torch.testing.assert_close(a, 0.1 * d)


def test_fused_clipping_equals_clip_then_step():
    rng = np.random.default_rng(4)
    host = [rng.standard_normal(n).astype(np.float32) * 3 for n in (33, 4097)]
    def state():
        return [to_cuda(torch, h) for h in host], [torch.zeros(h.size, device="cuda") for h in host], \
            [torch.zeros(h.size, device="cuda") for h in host]
    grads = [to_cuda(torch, h * 2) for h in host]
    (p1, m1, v1), (p2, m2, v2) = state(), state()
    ft.adam_(p1, grads, m1, v1, step=1, max_grad_norm=0.5)
    clipped = [g.clone() for g in grads]
    ft.clip_grad_norm_(clipped, 0.5)
    ft.adam_(p2, clipped, m2, v2, step=1)
    for a, b in zip(p1 + m1, p2 + m2):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_tensor_over_2_pow_31_elements():
    free, _ = torch.cuda.mem_get_info()
    n = 2 ** 31 + 5
    if free < 3 * 2 * n + (1 << 30):
        pytest.skip("not enough GPU memory for a 2^31-element float16 tensor pair")
    p = torch.zeros(n, dtype=torch.float16, device="cuda")
    g = torch.ones(n, dtype=torch.float16, device="cuda")
    ft.sgd_([p], [g], lr=0.5)
    assert float(p[-1]) == -0.5 and float(p[0]) == -0.5 and float(p[2 ** 31 + 1]) == -0.5


def test_fused_clipping_under_amp_equals_unscale_clip_step():
    from amp_clip_cases import run_amp_clip_case
    run_amp_clip_case(torch, "cuda")


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_nan_propagates_through_the_norm(norm_type):
    from amp_clip_cases import nan_norm_arrays
    for arrays in nan_norm_arrays():
        got = ft.global_norm([to_cuda(torch, a) for a in arrays], norm_type)
        assert np.isnan(got), (norm_type, [a.dtype for a in arrays])


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "NAdam"])
def test_cuda_complex_params_step_as_torch_steps_them(name):
    """Note [complex params] on the GPU: ft.torch's step over complex CUDA params (real views)
    follows torch.optim's on the same GPU."""
    kw = {"SGD": dict(lr=0.05, momentum=0.9)}.get(name, {})
    g = torch.Generator(device="cuda").manual_seed(3)
    ours = [torch.randn(s, generator=g, device="cuda", dtype=torch.complex64).requires_grad_()
            for s in [(4097,), (7,)]]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = getattr(ft.torch, name)(ours, **kw), getattr(torch.optim, name)(theirs, foreach=False, **kw)
    for _ in range(6):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape, generator=g, device="cuda", dtype=p.dtype)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=2e-6)
        assert a.state[p].keys() == b.state[q].keys()
