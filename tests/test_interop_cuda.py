"""CUDA tensors on the import routes: torch CUDA tensors (exchange API and __dlpack__), CuPy
arrays, the current stream, and ft.torch steps on CUDA params that are replayed (Note [step
plans]) yet follow new grads and `p.data` swaps."""

import pytest

import fusedtrain as ft
from fusedtrain import _C
from gpu_support import require_torch_cuda
from precisions import Tolerance, assert_close

pytestmark = pytest.mark.gpu
torch = require_torch_cuda()

F32 = Tolerance(2e-5, 2e-6)


@pytest.fixture(params=["exchange", "dlpack"])
def route(request):
    if request.param == "exchange" and not hasattr(torch.Tensor, "__dlpack_c_exchange_api__"):
        pytest.skip("this torch has no __dlpack_c_exchange_api__")
    _C._set_exchange_route(request.param == "exchange")
    yield request.param
    _C._set_exchange_route(True)


def test_cuda_tensors_import_with_pointer_device_and_layout(route):
    base = torch.randn(6, 9, 4, device="cuda")
    views = [base, base[2:], base.permute(2, 0, 1), torch.nn.Parameter(torch.randn(5, device="cuda")),
             torch.randn(3, 4, 5, 6, device="cuda").to(memory_format=torch.channels_last)]
    got = _C._import_views(views)
    for t, g in zip(views, got):
        strides = None if t.is_contiguous() else tuple(t.stride())
        assert g == (t.data_ptr(), "float32", "cuda", t.device.index, tuple(t.shape), strides)


def test_current_stream_comes_from_torch():
    t = torch.randn(3, device="cuda")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        handle = _C._framework_stream(t)
        if handle is None:
            pytest.skip("this torch has no DLPack exchange API")
        assert handle == side.cuda_stream
    assert _C._framework_stream(t) == torch.cuda.current_stream().cuda_stream


def test_cupy_arrays_import_by_attributes():
    cupy = pytest.importorskip("cupy")
    a = cupy.arange(24, dtype=cupy.float32).reshape(4, 6)
    got = _C._import_views([a, a[1:], a.T])
    assert got[0] == (a.data.ptr, "float32", "cuda", a.device.id, (4, 6), None)
    assert got[1][0] == a.data.ptr + 6 * 4
    assert got[2][5] == (1, 6)
    with pytest.raises(ValueError, match=r"arrays\[0\] is not contiguous"):
        _C._import_views([a[:, ::2]])


@pytest.mark.parametrize("name,kw", [("AdamW", dict(lr=0.02)), ("SGD", dict(lr=0.05, momentum=0.9))])
def test_ft_torch_on_cuda_follows_new_grads_and_swaps(route, name, kw):
    g = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(7, 5), (1,), (4097,), (3, 4, 5, 6)]
    params = [torch.randn(s, device="cuda", generator=g).requires_grad_() for s in shapes]
    params[3].data = params[3].data.contiguous(memory_format=torch.channels_last)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ours = getattr(ft.torch, name)(params, **kw)
    ref = getattr(torch.optim, name)(ref_params, foreach=False, **kw)
    for step in range(5):
        if step == 3:
            fresh = torch.randn(shapes[0], device="cuda", generator=g)
            params[0].data, ref_params[0].data = fresh.clone(), fresh.clone()
        for p, q in zip(params, ref_params):
            grad = torch.randn(p.shape, device="cuda", generator=g)
            p.grad, q.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    for i, (p, q) in enumerate(zip(params, ref_params)):
        assert_close(p.detach().cpu().numpy(), q.detach().cpu().numpy(), F32, f"params[{i}]")
