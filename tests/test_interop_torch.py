"""Importing torch tensors: DLPack's C exchange API and the __dlpack__ route agree, zero copy,
storage offsets honoured, bad tensors refused (before anything is written), nothing leaked."""

import sys

import numpy as np
import pytest

import fusedtrain as ft
from fusedtrain import _C

torch = pytest.importorskip("torch")

HAS_EXCHANGE = hasattr(torch.Tensor, "__dlpack_c_exchange_api__")


@pytest.fixture(params=["exchange", "dlpack"])
def route(request):
    """Each test runs through both import routes (the exchange one where this torch has it)."""
    if request.param == "exchange" and not HAS_EXCHANGE:
        pytest.skip("this torch has no __dlpack_c_exchange_api__")
    _C._set_exchange_route(request.param == "exchange")
    yield request.param
    _C._set_exchange_route(True)


def _expected(t):
    """What an import must report: torch's own pointer, dtype, shape and (dense) strides."""
    strides = None if t.is_contiguous() or t.numel() <= 1 else tuple(t.stride())
    return (t.data_ptr(), str(t.dtype).replace("torch.", ""), "cpu", 0, tuple(t.shape), strides)


def _views():
    base = torch.arange(7 * 11 * 3, dtype=torch.float32).reshape(7, 11, 3)
    return {
        "contiguous": base,
        "offset-view": base[2:],                        # storage offset of 2 * 33 elements
        "row": base[5, 3],                               # offset, 3 contiguous elements
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "one-of-strided": base[1:2, 4:5, 1:2],          # one element: any strides are fine
        "empty": torch.empty(0, 5),
        "permuted": base.permute(2, 0, 1),               # dense, not C order
        "transposed-offset": base[3].t(),                # dense 2-d slice of a block, offset
        "channels-last": torch.randn(2, 5, 3, 3).to(memory_format=torch.channels_last),
        "bf16": torch.randn(9, dtype=torch.bfloat16),
        "f16-param": torch.nn.Parameter(torch.randn(4, 1, 3).half()),
        "param": torch.nn.Parameter(torch.randn(13)),
    }


def test_import_reports_torch_pointer_shape_and_layout(route):
    views = _views()
    got = _C._import_views(list(views.values()))
    for (name, t), g in zip(views.items(), got):
        assert g == _expected(t), name


def test_routes_agree():
    if not HAS_EXCHANGE:
        pytest.skip("this torch has no __dlpack_c_exchange_api__")
    views = list(_views().values())
    fast = _C._import_views(views)
    _C._set_exchange_route(False)
    try:
        slow = _C._import_views(views)
    finally:
        _C._set_exchange_route(True)
    assert fast == slow


def _bad_tensors():
    base = torch.randn(6, 10)
    c = torch.randn(1, dtype=torch.complex64)
    return {
        "gapped": (base[:, ::2], ValueError, "leave gaps"),
        "overlapping": (torch.randn(1, 10).expand(6, 10), ValueError, "leave gaps or overlap"),
        "neg-view": (torch._neg_view(torch.randn(6, 10)), ValueError, "neg"),
        "neg-imag": (c.conj().imag, ValueError, "neg"),      # one element: dense, but negated
        "complex": (torch.randn(6, 10, dtype=torch.complex64), TypeError, "dtype"),
        "int": (torch.ones(6, 10, dtype=torch.int32), TypeError, "dtype"),
        "sparse": (torch.randn(6, 10).to_sparse(), TypeError, ""),
        "meta": (torch.empty(6, 10, device="meta"), TypeError, ""),
    }


@pytest.mark.parametrize("bad", list(_bad_tensors()))
def test_bad_tensor_raises_naming_it_and_writes_nothing(route, bad):
    tensor, error, words = _bad_tensors()[bad]
    shape = tuple(tensor.shape)
    params = [torch.randn(5), torch.randn(*shape)]
    grads = [torch.randn(5), torch.randn(*shape)]
    m = [torch.zeros(5), torch.zeros(*shape)]
    v = [torch.zeros(5), torch.zeros(*shape)]
    v[1] = tensor
    before = [t.clone() for t in params + grads + m[:1] + v[:1]]
    with pytest.raises(error, match=r"adamw_: exp_avg_sqs\[1\] .*" + words):
        ft.adamw_(params, grads, m, v, step=1, lr=0.1)
    for t, b in zip(params + grads + m[:1] + v[:1], before):
        assert torch.equal(t, b)


class _ClaimsNegated(torch.Tensor):
    """A subclass whose is_neg is Python code: the neg check must call it, not torch's C
    function (Note [neg check] in csrc/bindings/interop.cpp)."""

    def is_neg(self):
        return True


def test_neg_check_calls_a_subclass_override(route):
    p = torch.randn(7).as_subclass(_ClaimsNegated)
    before = p.clone()
    with pytest.raises(ValueError, match=r"sgd_: params\[0\] .*neg"):
        ft.sgd_([p], [torch.randn(7)], lr=0.1)
    assert torch.equal(p.as_subclass(torch.Tensor), before.as_subclass(torch.Tensor))


def test_params_and_state_must_share_a_layout(route):
    p = torch.randn(3, 4, 5, 7).to(memory_format=torch.channels_last)
    g, m, v = torch.randn(3, 4, 5, 7), torch.zeros_like(p), torch.zeros_like(p)
    before = p.clone()
    with pytest.raises(ValueError, match=r"grads\[0\] has C order but params\[0\] has strides"):
        ft.adamw_([p], [g], [m], [v], step=1, lr=0.1)
    assert torch.equal(p, before)


@pytest.mark.parametrize("layout", ["channels_last", "permuted", "transposed"])
def test_dense_layouts_step_like_contiguous_copies(route, isa, layout):
    rng = torch.Generator().manual_seed(3)
    shapes = [(6, 5, 3, 7), (2, 3, 1, 9)] if layout == "channels_last" else [(5, 3, 7), (4, 1, 9)]

    def arrange(t):
        if layout == "channels_last":
            return t.contiguous(memory_format=torch.channels_last)
        if layout == "permuted":
            return t.permute(2, 0, 1).contiguous().permute(1, 2, 0)   # same values, memory order 2,0,1
        return t.transpose(0, 2).contiguous().transpose(0, 2)

    ref = {k: [torch.randn(s, generator=rng) for s in shapes] for k in ("p", "m")}
    ref["v"] = [torch.rand(s, generator=rng) for s in shapes]
    ours = {k: [arrange(t.clone()) for t in ts] for k, ts in ref.items()}
    assert not any(t.is_contiguous() for ts in ours.values() for t in ts)
    ptrs = [t.data_ptr() for ts in ours.values() for t in ts]
    for step in range(1, 4):
        grads = [torch.randn(s, generator=rng) for s in shapes]
        ft.adamw_(ref["p"], grads, ref["m"], ref["v"], step=step, lr=0.05)
        ft.adamw_(ours["p"], [arrange(g) for g in grads], ours["m"], ours["v"], step=step, lr=0.05)
    assert [t.data_ptr() for ts in ours.values() for t in ts] == ptrs
    for k in ref:
        for a, b in zip(ours[k], ref[k]):
            assert torch.equal(a, b), k


def test_import_holds_no_references(route):
    ts = [torch.randn(3), torch.nn.Parameter(torch.randn(3)), torch.randn(2, 3)[1]]
    counts = [sys.getrefcount(t) for t in ts]
    for _ in range(3):
        _C._import_views(ts)
        ft.sgd_(ts, [torch.randn(3) for _ in ts], lr=0.1)
        with pytest.raises(ValueError):
            ft.sgd_(ts, [torch.randn(3), torch.randn(4, 3)[:, 0], torch.randn(3)], lr=0.1)
    assert [sys.getrefcount(t) for t in ts] == counts


def test_numpy_layouts():
    a = np.asfortranarray(np.arange(35, dtype=np.float32).reshape(5, 7))
    got = _C._import_views([a, a.T, np.zeros((3, 0)), a[:, 2:3]])
    assert got[0][5] == (1, 5) and got[1][5] is None and got[2][5] is None
    assert got[3] == (a[:, 2:3].ctypes.data, "float32", "cpu", 0, (5, 1), None)
    with pytest.raises(ValueError, match=r"arrays\[0\] is not contiguous"):
        _C._import_views([np.zeros(10, np.float32)[::-1]])
    with pytest.raises(ValueError, match=r"arrays\[1\] is not contiguous"):
        _C._import_views([a, np.zeros((4, 6), np.float32)[:, :5]])


def test_framework_stream_of_cpu_tensor_is_none():
    assert _C._framework_stream(torch.randn(3)) is None
    assert _C._framework_stream(np.zeros(3)) is None


class _FakeMemory:
    def __init__(self, ptr, device_id):
        self.ptr, self.device_id = ptr, device_id


def _fake_cupy(ptr, shape, strides, dtype, device_id=1):
    """An object laid out like a CuPy array, to exercise the attribute route without a GPU."""
    cls = type("ndarray", (), {"__module__": "cupy._core.core",
                               "__cuda_array_interface__": property(lambda self: {})})
    a = cls()
    a.data, a.shape, a.strides, a.dtype = _FakeMemory(ptr, device_id), shape, strides, np.dtype(dtype)
    return a


def test_cupy_attribute_route_reads_pointer_layout_and_device():
    arrays = [_fake_cupy(4096, (3, 5), (20, 4), "float32"),
              _fake_cupy(8192, (3, 5), (4, 12), "float32"),           # dense, column-major
              _fake_cupy(16384, (7,), (2,), "float16", device_id=0)]
    got = _C._import_views(arrays)
    assert got[0] == (4096, "float32", "cuda", 1, (3, 5), None)
    assert got[1] == (8192, "float32", "cuda", 1, (3, 5), (1, 3))
    assert got[2] == (16384, "float16", "cuda", 0, (7,), None)
    with pytest.raises(ValueError, match=r"arrays\[0\] is not contiguous"):
        _C._import_views([_fake_cupy(4096, (3, 5), (40, 8), "float32")])
    with pytest.raises(TypeError, match=r"arrays\[0\] has dtype int32"):
        _C._import_views([_fake_cupy(4096, (3,), (4,), "int32")])


def test_tensor_subclass_with_its_own_dispatch_is_refused_by_name(torch):
    # Note [dispatch subclasses]: a wrapper subclass exports no memory of its own; reading it
    # crashed before. A subclass that keeps torch's dispatch (like nn.Parameter) is an ordinary
    # tensor.
    class Wrapper(torch.Tensor):
        @staticmethod
        def __new__(cls, inner):
            return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype)

        def __init__(self, inner):
            self.inner = inner

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            raise NotImplementedError(func)

    class Plain(torch.Tensor):
        pass

    w = Wrapper(torch.ones(8))
    with pytest.raises(TypeError, match=r"arrays\[1\] is a Wrapper, a tensor subclass"):
        ft.global_norm([torch.ones(3), w])
    p = torch.ones(9).as_subclass(Plain)
    assert ft.global_norm([p]) == 3.0
