"""Importing CuPy arrays by their attributes (Note [cupy contiguity]), on any machine with CuPy
installed: the arrays are CuPy views of host memory, which an import reads no byte of, so no
GPU is needed.  Each view reports CuPy's own pointer, shape and (dense) strides; a gapped view is
refused."""

import numpy as np
import pytest

from fusedtrain import _C

cupy = pytest.importorskip("cupy")


@pytest.fixture(scope="module")
def host_backed():
    """f(shape, dtype): a C-contiguous CuPy array over host memory, values 0, 1, 2, ..."""
    keep = []

    def make(shape, dtype=np.float32):
        host = np.arange(int(np.prod(shape)), dtype=dtype)
        keep.append(host)
        mem = cupy.cuda.memory.UnownedMemory(host.ctypes.data, max(host.nbytes, 1), host,
                                             device_id=0)
        return cupy.ndarray(shape, dtype, memptr=cupy.cuda.memory.MemoryPointer(mem, 0))
    return make


def _expected(a):
    dense = None if a.flags.c_contiguous else tuple(s // a.itemsize for s in a.strides)
    return (a.data.ptr, np.dtype(a.dtype).name, "cuda", a.data.device_id, tuple(a.shape), dense)


def test_views_report_cupys_pointer_shape_and_strides(host_backed):
    a = host_backed((4, 6))
    b = host_backed((2, 3, 5, 7), np.float64)
    views = [a, a[1:], a[1:3], a.T, a[2:3, 4:5], a[:0], a.reshape(24), b, b.transpose(0, 2, 3, 1),
             b[1], host_backed((1,)), host_backed((3,), np.float16)]
    got = _C._import_views(views)
    for i, (v, g) in enumerate(zip(views, got)):
        assert g == _expected(v), f"views[{i}]"


def test_a_gapped_view_is_refused(host_backed):
    a = host_backed((4, 6))
    assert _C._import_views([a, a[1:], a.T], True, False) == 3
    with pytest.raises(ValueError, match=r"arrays\[1\] is not contiguous"):
        _C._import_views([a, a[:, ::2]])


def test_attributes_a_subclass_overrides_are_read_even_after_imports(host_backed):
    """Note [cached getters]: the getters looked up once per type give way to what a subclass
    defines, also when it defines it after the type was imported."""
    a = host_backed((4, 6))

    class Tagged(cupy.ndarray):
        __module__ = "cupy._tagged"  # the attribute route is CuPy's own types'

    t = Tagged(a.shape, a.dtype, memptr=a.data)
    assert _C._import_views([t, t]) == [_expected(a)] * 2
    Tagged.shape = property(lambda self: (24,))
    assert _C._import_views([t])[0][4] == (24,)
    del Tagged.shape
    assert _C._import_views([t, a, t]) == [_expected(a)] * 3
