"""The CUDA normalization kernels (batch, layer, RMS, group, instance norm), full-batch passes
(L-BFGS, conjugate gradient) and optimizer steps (every rule, over the multi-tensor table), run
on the host by the emulation of
tests/cuda_emu (Note [host emulation]: each block's threads are fibers, so barriers, shared
memory and warp shuffles keep their meaning) against the CPU kernels on the same inputs: every
case x dtype, with few and with many SMs (one and several block splits), tensors of several
chunks.
Machines without a GPU run the CUDA code's index arithmetic, reductions and merges this way;
timing and races between blocks still need a GPU (tests marked gpu)."""
import ctypes
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fusedtrain as ft
from bn_cases import CASES as BN_CASES
from bn_cases import DTYPES, make_inputs
from fullbatch_problems import curvature_pairs, inverse_curvatures
from ln_cases import GROUP_CASES, ROW_CASES, group_inputs, instance_norm_applies, row_inputs
from precisions import dtype_named
from source_tree import closing_paren, host_compiler, kernel_sources, source_path

HERE = pathlib.Path(__file__).resolve().parent
EMU = HERE / "cuda_emu"
SOURCES = ["bn_kernels.cu", "ln_kernels.cu", "gn_kernels.cu", "fullbatch_kernels.cu",
           "multi_tensor_table.cu", "norm_kernels.cu", "optim_kernels.cu"]
CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
SM_COUNTS = [2, 132]
ULP = {"float32": 2.0 ** -23, "float64": 2.0 ** -52, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


# ---- build (once per source tree and compiler; reused across test runs)

def _rewrite_launches(text):
    """`kernel<args><<<grid, block, shmem, stream>>>(params);` ->
    `::ft_emu::launch(grid, block, shmem, stream, [&] { kernel<args>(params); },
    ::ft_emu::kernel_id(kernel<args>));` (Note [launch limits] asks which kernel it is)"""
    out, i = [], 0
    while (j := text.find("<<<", i)) >= 0:
        b = j
        if text[b - 1] == ">":                    # back over the template arguments
            depth = 0
            while True:
                b -= 1
                depth += {">": 1, "<": -1}.get(text[b], 0)
                if depth == 0:
                    break
        while b > 0 and (text[b - 1].isalnum() or text[b - 1] in "_:"):
            b -= 1
        k = text.index(">>>", j)
        assert text[k + 3] == "(", text[k:k + 40]
        p = closing_paren(text, k + 3)
        assert text[p + 1] == ";", text[p:p + 40]
        kernel = text[b:j]
        out += [text[i:b], f"::ft_emu::launch({text[j + 3:k]}, [&] {{ {kernel}({text[k + 4:p]}); }}, "
                           f"::ft_emu::kernel_id({kernel}));"]
        i = p + 2
    return "".join(out) + text[i:]


def _rewrite_launch_bounds(text):
    """`__global__ void __launch_bounds__(B, ...) kernel(params) {` -> the same, its body opening
    with `::ft_emu::check_launch_bounds(B);`: a GPU refuses a block past B threads (Note [launch
    limits]); the stand-in macro drops the bounds."""
    out, i = [], 0
    while (j := text.find("__launch_bounds__(", i)) >= 0:
        open_ = j + len("__launch_bounds__")
        p = closing_paren(text, open_)
        first = text[open_ + 1:p].split(",")[0]  # the thread count: a plain name in every kernel
        b = closing_paren(text, text.index("(", p + 1)) + 1  # past the kernel's parameters
        while text[b].isspace():
            b += 1
        assert text[b] == "{", text[j:b + 40]
        out += [text[i:b + 1], f" ::ft_emu::check_launch_bounds({first.strip()});"]
        i = b + 1
    return "".join(out) + text[i:]


def _rewrite_static_shared(text):
    """`__shared__ T name[N];` -> the same, then `::ft_emu::poison_shared_once(&name, sizeof(name));`
    (Note [static shared memory])."""
    return re.sub(r"(?m)^(\s*__shared__ [^;(]+?\s+(\w+)(?:\[[^\]]*\])+;)",
                  r"\1 ::ft_emu::poison_shared_once(&\2, sizeof(\2));", text)


def _rewrite(text):
    return _rewrite_static_shared(_rewrite_launch_bounds(_rewrite_launches(text)))


def _build():
    if not sys.platform.startswith("linux"):
        pytest.skip("needs ucontext (Linux)")
    csrc, cxx = source_path("csrc/cuda/bn_kernels.cu").parents[1], host_compiler()
    inputs = kernel_sources(csrc)
    inputs += sorted(EMU.iterdir())
    key = hashlib.sha256((cxx + os.environ.get("FUSEDTRAIN_SANITIZED", "")).encode())
    for p in inputs:
        key.update(p.name.encode() + p.read_bytes())
    out = pathlib.Path(tempfile.gettempdir()) / f"fusedtrain-cuda-emu-{key.hexdigest()[:16]}"
    lib = out / "libemu.so"
    if lib.exists():
        return lib
    work = pathlib.Path(tempfile.mkdtemp(prefix="fusedtrain-cuda-emu-"))
    (work / "csrc" / "cuda").mkdir(parents=True)
    for p in (csrc / "cuda").iterdir():
        if p.suffix in (".cu", ".cuh", ".h"):
            (work / "csrc" / "cuda" / p.name).write_text(_rewrite(p.read_text()))
    # nvcc defines __device__ and friends in every unit; here the stand-in does (-include).
    # FUSEDTRAIN_SANITIZED (the CI's sanitizer job) builds it with ASan + UBSan as well: an
    # out-of-bounds read of a kernel is then an error, not a stray value.
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"] \
        if os.environ.get("FUSEDTRAIN_SANITIZED") == "1" else []
    flags = [*sanitize, "-std=c++20", "-O1", "-fPIC", "-include", str(EMU / "cuda_runtime.h"), f"-I{EMU}",
             f"-I{work / 'csrc'}", f"-I{csrc}"]
    units = [(["-x", "c++", str(work / "csrc" / "cuda" / s)], s) for s in SOURCES]
    units += [([str(EMU / s)], s) for s in ("emu_runtime.cpp", "emu_entry.cpp", "emu_fullbatch.cpp",
                                            "emu_optim.cpp", "emu_selftest.cpp")]
    jobs = [subprocess.Popen([cxx, *flags, "-c", *src, "-o", str(work / f"{name}.o")],
                             stderr=subprocess.PIPE, text=True) for src, name in units]
    for job, (_, name) in zip(jobs, units):
        _, err = job.communicate()
        assert job.returncode == 0, f"compiling {name}:\n{err[-4000:]}"
    subprocess.run([cxx, *sanitize, "-shared", "-o", str(work / "libemu.so"),
                    *(str(work / f"{name}.o") for _, name in units)], check=True)
    out.mkdir(exist_ok=True)
    os.replace(work / "libemu.so", lib)
    shutil.rmtree(work, ignore_errors=True)
    return lib


@pytest.fixture(scope="module")
def emu():
    lib = ctypes.CDLL(str(_build()))
    lib.emu_error.restype = ctypes.c_char_p
    p, i64, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.emu_fb.argtypes = [i64, i64, i64, p, p, i64, i64, i64, dbl, dbl, dbl, p, p, p, p]
    lib.emu_rule.argtypes = [ctypes.c_char_p, i64, i64, i64, p, p, i64, p, p, i64, dbl,
                             p, i64, p, i64, p, i64, p, i64]
    lib.emu_norm.argtypes = [i64, p, p, p, dbl, p, dbl, p, i64, dbl, p, p]
    return lib


def _call(lib, name, *args):
    conv = [ctypes.c_void_p(a.ctypes.data) if isinstance(a, np.ndarray) else
            None if a is None else ctypes.c_double(a) if isinstance(a, float) else
            ctypes.c_int64(a) for a in args]
    if getattr(lib, name)(*conv) != 0:
        raise RuntimeError(f"{name}: {lib.emu_error().decode()}")


def _code(a):
    return 0 if a is None else CODES[str(a.dtype)]


def _like(a, dtype=None):
    """Output memory pre-filled with NaN: a value the kernels never write stays NaN."""
    out = np.empty(a.shape if hasattr(a, "shape") else a, dtype or a.dtype)
    out.fill(np.nan)
    return out


def _close(got, want, dtype_name, what, scale_like=None):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    tol = {"float64": 1e-10, "float32": 2e-5}.get(dtype_name, 4 * ULP[dtype_name])
    bad = ~(np.abs(got - want) <= tol * (scale if scale_like is None else scale_like))
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} differ; first at "
                           f"{np.argwhere(bad)[0]}: {got[bad][0]} vs {want[bad][0]}")


def _stats_dtype(dtype_name):
    """The kernels' statistics dtype: float64 for float64 input, else float32."""
    return np.float64 if dtype_name == "float64" else np.float32


def _grid(cases):
    return [pytest.param(c, d, s, id=f"{c}-{d}-{s}") for c in cases for d in DTYPES for s in SM_COUNTS]


# ---- the emulation's own rules: what a GPU refuses it refuses (Note [launch limits]), what a GPU
# leaves undefined it poisons (Note [shuffle sources])

KB = 1024
LAUNCHES = [  # grid, block, dynamic shared bytes, bytes allowed (-1: never asked), refused because
    ((1, 1, 1), (256, 1, 1), 48 * KB, -1, None),
    ((2, 3, 4), (8, 4, 2), 0, -1, None),
    ((4, 1, 1), (256, 1, 1), 100 * KB, 100 * KB, None),
    ((4, 1, 1), (256, 1, 1), 227 * KB, 227 * KB, None),
    ((0, 1, 1), (256, 1, 1), 0, -1, "a grid dimension is 0"),
    ((3, 0, 1), (256, 1, 1), 0, -1, "a grid dimension is 0"),
    ((1, 65536, 1), (256, 1, 1), 0, -1, "a grid dimension is past its limit"),
    ((1, 1, 1), (0, 1, 1), 0, -1, "a block dimension is 0"),
    ((1, 1, 1), (1025, 1, 1), 0, -1, "past 1024 threads"),
    ((1, 1, 1), (64, 32, 1), 0, -1, "past 1024 threads"),
    ((1, 1, 1), (1, 1, 65), 0, -1, "past 1024 threads"),
    ((1, 1, 1), (256, 1, 1), 48 * KB + 1, -1, "the kernel was not allowed more"),
    ((1, 1, 1), (256, 1, 1), 64 * KB, 60 * KB, "than the kernel was allowed"),
    ((1, 1, 1), (256, 1, 1), 228 * KB, 228 * KB, "cudaFuncSetAttribute refused"),
]


def _assert_refused(emu, rc, refused):
    """rc of an emu_selftest_* call: 0 where refused is None, else -1 with refused in the error."""
    if refused is None:
        assert rc == 0, emu.emu_error().decode()
    else:
        assert rc == -1 and refused in emu.emu_error().decode()


@pytest.mark.parametrize("grid, block, shared, allowed, refused", LAUNCHES, ids=str)
def test_emulation_launch_limits(emu, grid, block, shared, allowed, refused):
    _assert_refused(emu, emu.emu_selftest_launch(*(ctypes.c_uint(v) for v in (*grid, *block)),
                                                 ctypes.c_int64(shared), ctypes.c_int64(allowed)), refused)


def test_emulation_launch_bounds(emu):
    _call(emu, "emu_selftest_bounds", 64)
    with pytest.raises(RuntimeError, match="past the kernel's __launch_bounds__ of 64"):
        _call(emu, "emu_selftest_bounds", 65)
    # Every bounded kernel of the sources gets the check, first thing in its body.
    for path in source_path("csrc/cuda").iterdir():
        text = path.read_text()
        out = _rewrite_launch_bounds(text)
        assert out.count("::ft_emu::check_launch_bounds(") == text.count("__launch_bounds__("), path.name


def test_emulation_static_shared_memory(emu):
    out = np.zeros(3, np.float32)
    emu.emu_set_schedule(1)  # thread 1 reads before thread 0 writes
    try:
        _call(emu, "emu_selftest_static_shared", out)
    finally:
        emu.emu_set_schedule(-1)
    assert np.isnan(out).all()  # not the 1, 2 the blocks before left
    # Every static shared array of the sources gets poisoned.
    for path in source_path("csrc/cuda").iterdir():
        text = path.read_text()
        declared = len(re.findall(r"(?m)^\s*__shared__ ", text))
        assert _rewrite_static_shared(text).count("::ft_emu::poison_shared_once(") == declared, path.name


def test_emulation_divergent_barriers(emu):
    with pytest.raises(RuntimeError, match=r"different barriers in one round, .*emu_selftest.cpp:\d+ and "):
        _call(emu, "emu_selftest_divergent_barrier")


ASYNC_CASES = [  # case of emu_selftest_async, refused because
    (0, None), (1, "not aligned"), (2, "not aligned"), (3, "outside the block's dynamic shared memory"),
    (4, "outside the block's dynamic shared memory"), (5, None), (6, "2 past 16-byte alignment"),
    (7, "prefetch of 24 bytes"),
]


@pytest.mark.parametrize("which, refused", ASYNC_CASES)
def test_emulation_async_copy_and_prefetch(emu, which, refused):
    _assert_refused(emu, emu.emu_selftest_async(ctypes.c_int64(which)), refused)


def test_emulation_shuffle_sources(emu):
    out = np.full(32, -1.0, np.float32)
    _call(emu, "emu_selftest_shuffle", 0, out)
    assert out[:8].tolist() == list(range(8, 16))  # lanes 8-15 are alive
    assert np.isnan(out[8:16]).all()               # lanes 16-23 have exited: undefined
    assert (out[16:] == -1).all()
    with pytest.raises(RuntimeError, match="mask without itself"):
        _call(emu, "emu_selftest_shuffle", 1, out)


# ---- batch norm

def _bn_emulated(emu, case, dtype, inputs, save=None):
    """Emulated batch norm forward (training) and backward of `inputs` (make_inputs'): y,
    save_mean, save_invstd, running mean and var, dx, dweight, dbias.  The backward takes `save`
    (save_mean, save_invstd) where given, else the forward's."""
    x, w, b, rm, rv, dy = inputs
    cl, C = case.channels_last, case.channels
    outer, inner = (x.size // C, 1) if cl else (x.shape[0], x.size // (x.shape[0] * C))
    sdt = _stats_dtype(dtype)
    y, sm, si = _like(x), _like((C,), sdt), _like((C,), sdt)
    rm_e, rv_e = rm.copy(), rv.copy()
    _call(emu, "emu_bn_forward", x, y, CODES[dtype], outer, C, inner, w, b, _code(w), rm_e, rv_e,
          _code(rm), sm, si, CODES[str(np.dtype(sdt))], 1, case.momentum, 1e-5)
    save = save or (sm, si)
    dx = _like(x)
    dw = db = None
    if w is not None:
        dw, db = _like(w), _like(b)
    _call(emu, "emu_bn_backward", dy, x, dx, CODES[dtype], outer, C, inner, w, _code(w),
          save[0], save[1], _code(save[0]), dw, db, _code(dw), None, None, 0, 0.0)
    return {"y": y, "save_mean": sm, "save_invstd": si, "running_mean": rm_e, "running_var": rv_e,
            "dx": dx, "dweight": dw, "dbias": db}


@pytest.mark.parametrize("case, dtype, sms", _grid(BN_CASES))
def test_batch_norm(emu, case, dtype, sms):
    emu.emu_set_sm_count(sms)
    x, w, b, rm, rv, dy = make_inputs(case, dtype, "emu")
    cl, C = case.channels_last, case.channels
    sdt = _stats_dtype(dtype)
    before = (x, w, b, rm.copy(), rv.copy(), dy)  # the reference updates rm, rv in place
    want = ft.batch_norm_forward(x, w, b, rm, rv, training=True, momentum=case.momentum,
                                 channels_last=cl)
    got = _bn_emulated(emu, case, dtype, before, save=want[1:])
    _close(got["y"], want[0], dtype, "y")
    _close(got["save_mean"], want[1], "float32" if dtype != "float64" else dtype, "save_mean")
    _close(got["save_invstd"], want[2], "float32" if dtype != "float64" else dtype, "save_invstd")
    _close(got["running_mean"], rm, str(np.dtype(sdt)), "running_mean")
    _close(got["running_var"], rv, str(np.dtype(sdt)), "running_var")
    dx_w, dw_w, db_w = ft.batch_norm_backward(dy, x, w, want[1], want[2], channels_last=cl)
    _close(got["dx"], dx_w, dtype, "dx")
    if w is not None:
        _close(got["dweight"], dw_w, str(np.dtype(sdt)), "dweight", np.sqrt(x.size / C) * 4)
        _close(got["dbias"], db_w, str(np.dtype(sdt)), "dbias", np.sqrt(x.size / C) * 4)


# ---- layer and RMS norm

# A wide row launches ~10,000 blocks in its weight-gradient pass (13 s emulated): one run of it.
# Half inputs also with weight and bias in the input's dtype (as torch's modules hold them), which
# the rows kernels read as vectors; otherwise the parameters are float32 (float64 for float64).
ROW_PARAMS = [pytest.param(case, rms, dtype, sms, same,
                           id=f"{case}-{'rms' if rms else 'layer'}-{dtype}{'-wx' if same else ''}-{sms}")
              for case in ROW_CASES for rms in (False, True) for dtype in DTYPES for sms in SM_COUNTS
              for same in ((False, True) if dtype in ("float16", "bfloat16") and sms == SM_COUNTS[1]
                           and not case.id.startswith("wide") else (False,))
              if not case.id.startswith("wide") or (not rms and dtype == "float32" and sms == SM_COUNTS[0])]


@pytest.mark.parametrize("case, rms, dtype, sms, same", ROW_PARAMS)
def test_layer_and_rms_norm(emu, case, rms, dtype, sms, same):
    emu.emu_set_sm_count(sms)
    x, w, b, dy = row_inputs(case, dtype, "emu")
    if same and w is not None:
        w, b = w.astype(x.dtype), b.astype(x.dtype)
    cols = int(np.prod(case.normalized))
    rows = x.size // cols
    sdt = _stats_dtype(dtype)
    eps = case.eps
    if rms:
        b = None
        want = ft.rms_norm_forward(x, case.normalized, w, eps=eps)
        want = (want[0], None, want[1])
    else:
        want = ft.layer_norm_forward(x, case.normalized, w, b, eps=eps)
    y, mean, rstd = _like(x), (None if rms else _like((rows,), sdt)), _like((rows,), sdt)
    _call(emu, "emu_ln_forward", x, y, CODES[dtype], rows, cols, int(rms), w, b, _code(w), mean,
          rstd, CODES[str(np.dtype(sdt))], eps)
    stat = str(np.dtype(sdt))
    _close(y, want[0], dtype, "y")
    if not rms:
        _close(mean, want[1].ravel(), stat, "mean")
    _close(rstd, want[2].ravel(), stat, "rstd")
    dx = _like(x)
    dw = db = None
    if w is not None:
        dw, db = _like(w), (None if rms else _like(b))
    if rms:
        dx_w, dw_w = ft.rms_norm_backward(dy, x, case.normalized, want[2], w)
        db_w = None
    else:
        dx_w, dw_w, db_w = ft.layer_norm_backward(dy, x, case.normalized, want[1], want[2], w)
    _call(emu, "emu_ln_backward", dy, x, dx, CODES[dtype], rows, cols, int(rms), w, _code(w),
          None if rms else want[1], want[2], CODES[stat], dw, db)
    _close(dx, dx_w, dtype, "dx")
    if w is not None:
        _close(dw, dw_w, str(dw.dtype), "dweight", np.sqrt(rows) * 4)
        if not rms:
            _close(db, db_w, str(db.dtype), "dbias", np.sqrt(rows) * 4)
        # weight_grads=False: no dweight / dbias arrays, no column sums, the same dx.
        frozen = _like(x)
        _call(emu, "emu_ln_backward", dy, x, frozen, CODES[dtype], rows, cols, int(rms), w, _code(w),
              None if rms else want[1], want[2], CODES[stat], None, None)
        assert frozen.tobytes() == dx.tobytes()


# Note [row kernel switches]: the L2 prefetch and the staged rows (Note [staged row]) change no bit;
# the column sums in registers instead of shared memory change only the order dweight / dbias are
# summed in (their own grid), so those agree to rounding. 64x1024, 5x4096 and 40x8192 take the rows
# kernels, with column sums in shared memory for fp32 4096-8192, fp64 4096 and every 16-bit dtype
# (fp64 of 8192 takes the general path); rows of up to 4 vectors a thread are staged, with and
# without column sums (the frozen backward). Without dbias the kernels keep one sum a column (Note
# [one column sum]) and give the same dx and dweight bits.
ROW_SWITCH_CASES = [c for c in ROW_CASES if c.id in ("64x1024", "5x4096", "40x8192")]


def _ln_emulated(emu, case, dtype, rms=False):
    """Emulated layer (RMS) norm forward and backward of row_inputs(case, dtype): y, mean, rstd,
    dx, dweight, dbias, and dx with weight_grads=False; a layer norm's backward without dbias is
    checked to give the same dx and dweight bits (Note [one column sum])."""
    x, w, b, dy = row_inputs(case, dtype, "emu")
    b = None if rms else b
    cols = int(np.prod(case.normalized))
    rows, sdt = x.size // cols, _stats_dtype(dtype)
    stat = CODES[str(np.dtype(sdt))]
    y, mean, rstd = _like(x), None if rms else _like((rows,), sdt), _like((rows,), sdt)
    _call(emu, "emu_ln_forward", x, y, CODES[dtype], rows, cols, int(rms), w, b, _code(w), mean,
          rstd, stat, case.eps)

    def backward(weight_grads=True, bias_grads=True):
        dx = _like(x)
        dw = _like(w) if weight_grads and w is not None else None
        db = _like(b) if weight_grads and bias_grads and b is not None else None
        _call(emu, "emu_ln_backward", dy, x, dx, CODES[dtype], rows, cols, int(rms), w, _code(w),
              mean, rstd, stat, dw, db)
        return dx, dw, db

    dx, dw, db = backward()
    frozen, _, _ = backward(weight_grads=False)
    if b is not None:
        alone_dx, alone, _ = backward(bias_grads=False)
        assert alone_dx.tobytes() == dx.tobytes() and alone.tobytes() == dw.tobytes()
    return {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": db,
            "frozen dx": frozen}


@pytest.mark.parametrize("case", ROW_SWITCH_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_kernel_switches(emu, case, dtype):
    emu.emu_set_sm_count(SM_COUNTS[0])
    rows = row_inputs(case, dtype, "emu")[0].size // int(np.prod(case.normalized))
    want = _ln_emulated(emu, case, dtype)
    try:
        for prefetch, shared, staged in ((0, 1, 1), (1, 0, 1), (0, 0, 1), (1, 1, 0), (1, 0, 0)):
            emu.emu_set_row_kernel_options(prefetch, shared, 1, 1, staged, 1)
            for name, got in _ln_emulated(emu, case, dtype).items():
                if shared or name not in ("dweight", "dbias"):
                    assert got.tobytes() == want[name].tobytes(), (name, prefetch, shared, staged)
                else:
                    _close(got, want[name], str(got.dtype), name, np.sqrt(rows) * 4)
    finally:
        emu.emu_set_row_kernel_options(1, 1, 1, 1, 1, 1)


# ---- group and instance norm

def _group_shape(case, x):
    C = case.channels
    return x.shape[0], C, int(np.prod(case.shape[2:] if not case.channels_last else case.shape[1:-1]))


def _gn_emulated(emu, case, dtype, x, w, b, dy, stats=None):
    """Emulated group norm forward and backward: y, mean, rstd, dx, dweight, dbias.  The
    backward takes `stats` (mean, rstd) where given, else the forward's."""
    n, C, hw = _group_shape(case, x)
    G, cl = case.groups, case.channels_last
    stat = str(np.dtype(_stats_dtype(dtype)))
    y, mean, rstd = _like(x), _like((n, G), stat), _like((n, G), stat)
    _call(emu, "emu_gn_forward", x, y, CODES[dtype], n, C, hw, G, int(cl), w, b, _code(w), mean,
          rstd, CODES[stat], None, None, 1, 0.1, case.eps)
    stats = stats or (mean, rstd)
    dx = _like(x)
    dw = db = None
    if w is not None:
        dw, db = _like(w), _like(b)
    _call(emu, "emu_gn_backward", dy, x, dx, CODES[dtype], n, C, hw, G, int(cl), w, _code(w),
          stats[0], stats[1], CODES[stat], dw, db)
    return {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": db}


@pytest.mark.parametrize("case, dtype, sms", _grid(GROUP_CASES))
def test_group_norm(emu, case, dtype, sms):
    emu.emu_set_sm_count(sms)
    x, w, b, _, _, dy = group_inputs(case, dtype, "emu")
    n, C, hw = _group_shape(case, x)
    G, cl = case.groups, case.channels_last
    stat = str(np.dtype(_stats_dtype(dtype)))
    want = ft.group_norm_forward(x, G, w, b, eps=case.eps, channels_last=cl)
    got = _gn_emulated(emu, case, dtype, x, w, b, dy, stats=want[1:])
    _close(got["y"], want[0], dtype, "y")
    _close(got["mean"], want[1], stat, "mean")
    _close(got["rstd"], want[2], stat, "rstd")
    dx_w, dw_w, db_w = ft.group_norm_backward(dy, x, G, want[1], want[2], w, channels_last=cl)
    _close(got["dx"], dx_w, dtype, "dx")
    if w is not None:
        _close(got["dweight"], dw_w, stat, "dweight", np.sqrt(x.size / C) * 4)
        _close(got["dbias"], db_w, stat, "dbias", np.sqrt(x.size / C) * 4)
        frozen = _like(x)  # weight_grads=False: the same dx
        _call(emu, "emu_gn_backward", dy, x, frozen, CODES[dtype], n, C, hw, G, int(cl), w, _code(w),
              want[1], want[2], CODES[stat], None, None)
        assert frozen.tobytes() == got["dx"].tobytes()


# Note [second pass in reverse]: batch and group norm's elementwise passes give the same bits
# walking their grid from its last block as in index order: planar (split and masked 7x7) and
# rows (2-d, channels-last) batch norm, channels-last group norm, on 2 SMs (several blocks per
# channel) and 132.
SECOND_PASS_CASES = (
    [pytest.param("bn", c, id=f"bn-{c}") for c in BN_CASES
     if c.id in ("4d-split-2x3x260x260", "4d-6x5x7x7", "2d-64x33-noaffine", "4d-cl-4x40x40x24")]
    + [pytest.param("gn", c, id=f"gn-{c}") for c in GROUP_CASES
       if c.id in ("cl-rows-2x128x128x36-g6", "cl-2x5x7x6-g3")])


def _kernel_run(emu, kind, case, dtype):
    """A call that runs batch norm ("bn"), group norm ("gn"), layer norm ("ln") or RMS norm
    ("rms") of `case` forward and backward, returning its arrays."""
    if kind == "bn":
        inputs = make_inputs(case, dtype, "emu")
        return lambda: _bn_emulated(emu, case, dtype, inputs)
    if kind in ("ln", "rms"):
        return lambda: _ln_emulated(emu, case, dtype, rms=kind == "rms")
    x, w, b, _, _, dy = group_inputs(case, dtype, "emu")
    return lambda: _gn_emulated(emu, case, dtype, x, w, b, dy)


def _with_options(emu, run, *options):
    """run() under emu_set_row_kernel_options(*options), every switch on again after."""
    try:
        emu.emu_set_row_kernel_options(*options)
        return run()
    finally:
        emu.emu_set_row_kernel_options(1, 1, 1, 1, 1, 1)


def _assert_same_bits(got, want):
    for name, a in got.items():
        if a is not None:
            assert a.tobytes() == want[name].tobytes(), name


@pytest.mark.parametrize("sms", SM_COUNTS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind, case", SECOND_PASS_CASES)
def test_second_pass_order_changes_no_bit(emu, kind, case, dtype, sms):
    emu.emu_set_sm_count(sms)
    run = _kernel_run(emu, kind, case, dtype)
    _assert_same_bits(run(), _with_options(emu, run, 1, 1, 1, 0, 1, 1))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind, case", SECOND_PASS_CASES)
def test_dependent_launch_changes_no_bit(emu, kind, case, dtype):
    """Note [dependent launch]: every kernel of a batch or group norm goes through the dependent
    launch where the switch allows it (the emulated device is sm_90), and none where it is off;
    the same bits either way."""
    emu.emu_set_sm_count(SM_COUNTS[0])
    run = _kernel_run(emu, kind, case, dtype)
    before = emu.emu_dependent_launches()
    dependent = run()
    assert emu.emu_dependent_launches() > before
    before = emu.emu_dependent_launches()
    plain = _with_options(emu, run, 1, 1, 1, 1, 1, 0)
    assert emu.emu_dependent_launches() == before
    _assert_same_bits(dependent, plain)


@pytest.mark.parametrize("use_input_stats", [True, False], ids=["input-stats", "running-stats"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in GROUP_CASES if instance_norm_applies(c)],
                         ids=str)
def test_instance_norm_running_statistics(emu, case, dtype, use_input_stats):
    emu.emu_set_sm_count(2)
    x, w, b, rm, rv, _ = group_inputs(case, dtype, "emu-instance")
    n, C, hw = _group_shape(case, x)
    cl = case.channels_last
    sdt = _stats_dtype(dtype)
    stat = str(np.dtype(sdt))
    y, mean, rstd = _like(x), _like((n, C), sdt), _like((n, C), sdt)
    rm_e, rv_e = rm.copy(), rv.copy()
    _call(emu, "emu_gn_forward", x, y, CODES[dtype], n, C, hw, C, int(cl), w, b, _code(w), mean,
          rstd, CODES[stat], rm_e, rv_e, int(use_input_stats), 0.3, case.eps)
    want = ft.instance_norm(x, rm, rv, w, b, use_input_stats=use_input_stats, momentum=0.3,
                            eps=case.eps, channels_last=cl)
    _close(y, want[0], dtype, "y")
    _close(rm_e, rm, stat, "running_mean")
    _close(rv_e, rv, stat, "running_var")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BN_CASES, ids=str)
def test_batch_norm_eval_and_backward_halves(emu, case, dtype):
    """Evaluation mode (no reduction), the sums-only backward, and dx from given sums (Note
    [given sums]): the paths synchronized batch norm takes."""
    emu.emu_set_sm_count(8)
    x, w, b, rm, rv, dy = make_inputs(case, dtype, "emu-halves")
    cl, C = case.channels_last, case.channels
    outer, inner = (x.size // C, 1) if cl else (x.shape[0], x.size // (x.shape[0] * C))
    sdt = _stats_dtype(dtype)
    stat, scode = str(np.dtype(sdt)), CODES[str(np.dtype(sdt))]
    y, sm, si = _like(x), _like((C,), sdt), _like((C,), sdt)
    _call(emu, "emu_bn_forward", x, y, CODES[dtype], outer, C, inner, w, b, _code(w), rm, rv,
          _code(rm), sm, si, scode, 0, 0.1, 1e-5)
    want = ft.batch_norm_forward(x, w, b, rm, rv, training=False, channels_last=cl)
    _close(y, want[0], dtype, "eval y")
    _close(sm, want[1], stat, "eval save_mean")
    _close(si, want[2], stat, "eval save_invstd")
    _, mean, invstd = ft.batch_norm_forward(x, w, b, training=True, channels_last=cl)
    # Sums only: dweight / dbias (in the statistics dtype without a weight).
    gd = w.dtype if w is not None else sdt
    dw, db = _like((C,), gd), _like((C,), gd)
    _call(emu, "emu_bn_backward", dy, x, None, CODES[dtype], outer, C, inner, w, _code(w), mean,
          invstd, scode, dw, db, CODES[str(np.dtype(gd))], None, None, 0, 0.0)
    _, dw_w, db_w = ft.batch_norm_backward(dy, x, w, mean, invstd, channels_last=cl, input_grad=False)
    spread = np.sqrt(x.size / C) * 4
    _close(dw, dw_w, str(np.dtype(gd)), "sums-only dweight", spread)
    _close(db, db_w, str(np.dtype(gd)), "sums-only dbias", spread)
    # dx from the sums of a batch three times this one's values per channel.
    count = 3.0 * (x.size // C)
    s_dy, s_dyx = (3 * db_w).astype(np.float64), (3 * dw_w).astype(np.float64)
    dx = _like(x)
    _call(emu, "emu_bn_backward", dy, x, dx, CODES[dtype], outer, C, inner, w, _code(w), mean,
          invstd, scode, None, None, 0, s_dy, s_dyx, 1, count)
    dx_w, _, _ = ft.batch_norm_backward(dy, x, w, mean, invstd, channels_last=cl,
                                        sums=(s_dy, s_dyx, count))
    _close(dx, dx_w, dtype, "dx from given sums")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C, affine", [(1, False), (5, True), (300, True)], ids=str)
def test_batch_norm_empty_training_batch(emu, C, affine, dtype):
    """Note [empty training batch]: a training batch without values (as the binding hands it
    over: (0, C, 1), no running statistics) writes the statistics of none, as the CPU does, and
    its backward zero dweight / dbias; nothing is written to y or dx, which hold no value."""
    emu.emu_set_sm_count(8)
    x = np.zeros((0, C), dtype_named(dtype))
    rng = np.random.default_rng(C)
    w = (rng.random(C) + 0.5).astype(np.float32) if affine else None
    b = rng.standard_normal(C).astype(np.float32) if affine else None
    sdt = _stats_dtype(dtype)
    scode = CODES[str(np.dtype(sdt))]
    y, sm, si = _like(x), _like((C,), sdt), _like((C,), sdt)
    _call(emu, "emu_bn_forward", x, y, CODES[dtype], 0, C, 1, w, b, _code(w), None, None, 0,
          sm, si, scode, 1, 0.1, 1e-3)
    want = ft.batch_norm_forward(x, w, b, training=True, eps=1e-3)
    assert sm.tobytes() == want[1].tobytes() and si.tobytes() == want[2].tobytes()
    gd = w.dtype if w is not None else sdt
    dw, db = _like((C,), gd), _like((C,), gd)
    _call(emu, "emu_bn_backward", x, x, _like(x), CODES[dtype], 0, C, 1, w, _code(w), sm, si,
          scode, dw, db, CODES[str(np.dtype(gd))], None, None, 0, 0.0)
    assert np.all(dw == 0) and np.all(db == 0)


# ---- full-batch passes (csrc/math/fullbatch.h) over the multi-tensor table

from fusedtrain import _C  # noqa: E402

K_SLOTS = 5
FB_SHAPES = [(1,), (7,), (4097,), (0,), (3, 5), (70001,)]   # 70001: two chunks of 65536
FB_TOL = {"float32": 1e-5, "float64": 1e-12}


def _fb_rand(dtype, seed, shapes=FB_SHAPES, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(np.float32).astype(dtype_named(dtype))
            for s in shapes]


def _copies(arrays):
    return None if arrays is None else [a.copy() for a in arrays]


def _fb(emu, pass_id, dtype, slots, *, row_stride=0, count=0, flags=0, a=0.0, c=0.0, h=1.0,
        two_loop=None):
    """Runs pass `pass_id` on the lists of `slots` (slot s: a list of arrays, raw pointers or
    None); returns (sum[0..2], max) and the al of a two-loop."""
    ref = next(x for x in slots if x is not None and not isinstance(x[0], int))
    n = len(ref)
    numel = np.array([x.size for x in ref], np.int64)
    ptrs = np.zeros((n, K_SLOTS), np.uintp)
    for s, arrays in enumerate(slots):
        if arrays is not None:
            ptrs[:, s] = [x if isinstance(x, int) else x.ctypes.data for x in arrays]
    result = np.zeros(4)
    sl, ro = two_loop or ([], [])
    sl, ro = np.array(sl, np.int32), np.array(ro, np.float64)
    al = np.zeros(max(len(sl), 1))
    rc = emu.emu_fb(pass_id, CODES[dtype], n, numel.ctypes.data, ptrs.ctypes.data, row_stride,
                    count, flags, a, c, h, sl.ctypes.data, ro.ctypes.data, al.ctypes.data,
                    result.ctypes.data)
    if rc != 0:
        raise RuntimeError(emu.emu_error().decode())
    return result, al[:len(sl)]


def _fb_close(got, want, dtype, what):
    for i, (g, w) in enumerate(zip(got, want)):
        _close(g, w, dtype if dtype in FB_TOL else "float32", f"{what}[{i}]")


def _scalar_close(got, want, dtype, scale, what):
    assert abs(got - want) <= FB_TOL[dtype] * max(scale, 1.0), f"{what}: {got} vs {want}"


def _scale(*lists):
    return sum(float(np.sum(np.abs(x.astype(np.float64)))) for xs in lists for x in xs) ** 2


@pytest.mark.parametrize("n_others", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fullbatch_dots(emu, dtype, n_others):
    x = _fb_rand(dtype, 1)
    others = [_fb_rand(dtype, 2 + j) for j in range(n_others)]
    got, _ = _fb(emu, 2, dtype, [x, *others], count=n_others)
    want = _C.fullbatch_dots(x, others)
    for j in range(n_others):
        _scalar_close(got[j], want[j], dtype, _scale(x, others[j]), f"dot {j}")


@pytest.mark.parametrize("with_dot", [False, True], ids=["copy", "copy+dot"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fullbatch_grad_copy(emu, dtype, with_dot):
    compute = "float64" if dtype == "float64" else "float32"
    g = _fb_rand(dtype, 3)
    d = _fb_rand(compute, 4) if with_dot else None
    out = [np.full(x.shape, np.nan, dtype_named(compute)) for x in g]
    got, _ = _fb(emu, 3, dtype, [g, out, d])
    out_w = [np.full(x.shape, np.nan, dtype_named(compute)) for x in g]
    want = _C.fullbatch_grad_copy_(g, out_w, _copies(d))
    _fb_close(out, out_w, compute, "out")
    if with_dot:
        _scalar_close(got[0], want, compute, _scale(out_w, d), "g . d")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fullbatch_history_pair(emu, dtype):
    g, prev, d = _fb_rand(dtype, 5), _fb_rand(dtype, 6), _fb_rand(dtype, 7)
    total = sum(x.size for x in g)
    hist = np.random.default_rng(8).standard_normal((6, total)).astype(dtype_named(dtype))
    slot, t = 1, 0.37
    hist_w, prev_w, d_w = hist.copy(), _copies(prev), _copies(d)
    elem, offsets = hist.itemsize, np.cumsum([0] + [x.size for x in g])[:-1]
    s_rows = [hist.ctypes.data + (2 * slot * total + int(o)) * elem for o in offsets]
    y_rows = [hist.ctypes.data + ((2 * slot + 1) * total + int(o)) * elem for o in offsets]
    scale = _scale(g, prev, d)
    got, _ = _fb(emu, 0, dtype, [g, prev, d, s_rows, y_rows], a=t)
    want = _C.fullbatch_history_(g, prev_w, d_w, hist_w, slot, t)
    _close(hist, hist_w, dtype, "history")
    _fb_close(prev, prev_w, dtype, "prev_grads")
    _fb_close(d, d_w, dtype, "directions (-g)")   # Note [first pass folded]
    for j in range(3):
        _scalar_close(got[j], want[j], dtype, scale, f"sum {j}")


@pytest.mark.parametrize("keep, copy, h", [(False, False, 1.0), (True, True, 0.5), (True, False, 2.0)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fullbatch_combine(emu, dtype, keep, copy, h):
    out, x, w = _fb_rand(dtype, 9), _fb_rand(dtype, 10), _fb_rand(dtype, 11)
    to = [np.full(v.shape, np.nan, v.dtype) for v in out] if copy else None
    out_w, to_w = _copies(out), _copies(to)
    got, _ = _fb(emu, 1, dtype, [out, x, w, to], flags=int(keep) | 2 * int(copy), a=0.3, c=-1.7, h=h)
    want = _C.fullbatch_combine_(out_w, x, w, to_w, keep, 0.3, -1.7, h)
    _fb_close(out, out_w, dtype, "out")
    if copy:
        _fb_close(to, to_w, dtype, "copy_to")
    _scalar_close(got[0], want[0], dtype, _scale(out_w, x, w), "sum")
    assert got[3] == pytest.approx(want[1], rel=FB_TOL[dtype]), "max"


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fullbatch_param_step(emu, dtype, mode):
    compute = "float64" if dtype == "float64" else "float32"
    p = _fb_rand(dtype, 12)
    d = None if mode == 3 else _fb_rand(compute, 13)
    base = None if mode == 0 else _fb_rand(compute, 14)
    p_w, base_w = _copies(p), _copies(base)
    _fb(emu, 4, dtype, [p, d, base], count=mode, a=0.25)
    _C.fullbatch_param_step_(p_w, d, base_w, mode, 0.25)
    _fb_close(p, p_w, dtype, "params")
    if base is not None:
        _fb_close(base, base_w, compute, "base")


def _two_loop_problem(dtype, slots, shapes=FB_SHAPES):
    """(g, history (14 rows of curvature pairs), each tensor's row pointers, the slots' inverse
    curvatures) of a two-loop recursion over tensors of `shapes`."""
    g = _fb_rand(dtype, 15, shapes)
    total = sum(x.size for x in g)
    rng = np.random.default_rng(16)
    hist = rng.standard_normal((14, total)).astype(dtype_named(dtype))
    curvature_pairs(hist, rng)
    offsets = np.cumsum([0] + [x.size for x in g])[:-1]
    rows = [hist.ctypes.data + int(o) * hist.itemsize for o in offsets]
    return g, hist, rows, inverse_curvatures(hist, slots)


@pytest.mark.parametrize("folded", [False, True], ids=["first-pass", "first-dot-given"])
@pytest.mark.parametrize("slots", [[2], [1, 0], [3, 0, 5, 2, 4, 1, 6]], ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fullbatch_two_loop(emu, dtype, slots, folded):
    g, hist, rows, ro = _two_loop_problem(dtype, slots)
    total = hist.shape[1]
    d = [np.full(x.shape, np.nan, x.dtype) for x in g]
    first = None
    if folded:   # Note [first pass folded]: d = -g and the first pass's dot come given
        d = [-x for x in g]
        newest = hist[2 * slots[-1]]
        # 1.5x the dot: a backend that ran the first pass anyway would not match one that did not
        first = 1.5 * float(-(np.concatenate([x.ravel() for x in g]).astype(np.float64) @ newest))
    d_w = _copies(d)
    got, al = _fb(emu, 5, dtype, [d, g, rows], row_stride=total, count=len(slots), a=0.7,
                  flags=int(folded), c=first or 0.0, two_loop=(slots, ro))
    gtd, dmax, al_w = _C.fullbatch_direction_(g, d_w, hist, slots, ro, 0.7, None, first)
    _fb_close(d, d_w, dtype, "direction")
    _scalar_close(got[0], gtd, dtype, _scale(g, d_w), "g . d")
    assert got[3] == pytest.approx(dmax, rel=1e-5 if dtype == "float32" else 1e-12), "max |d|"
    np.testing.assert_allclose(al, al_w, rtol=1e-4 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fullbatch_folded_first_pass_same_bits(emu, dtype):
    """Note [first pass folded] on the CUDA code: the history pass's q = -g and dot, given to the
    two-loop, make the same direction, g'd, max |d| and al as the recursion's own first pass."""
    g, prev, d = _fb_rand(dtype, 17), _fb_rand(dtype, 18), _fb_rand(dtype, 19)
    total = sum(x.size for x in g)
    rng = np.random.default_rng(20)
    hist = rng.standard_normal((6, total)).astype(dtype_named(dtype))
    curvature_pairs(hist, rng)
    elem, offsets = hist.itemsize, np.cumsum([0] + [x.size for x in g])[:-1]
    rows = [hist.ctypes.data + int(o) * elem for o in offsets]
    s_rows = [r + 4 * total * elem for r in rows]            # slot 2 takes the new pair
    sums, _ = _fb(emu, 0, dtype, [g, prev, d, s_rows, [r + total * elem for r in s_rows]], a=0.37)
    slots = [0, 1, 2]
    ro = inverse_curvatures(hist, slots)
    full = [np.full(x.shape, np.nan, x.dtype) for x in g]
    want, want_al = _fb(emu, 5, dtype, [full, g, rows], row_stride=total, count=3, a=0.7,
                        two_loop=(slots, ro))
    got, got_al = _fb(emu, 5, dtype, [d, g, rows], row_stride=total, count=3, a=0.7, flags=1,
                      c=sums[2], two_loop=(slots, ro))
    assert got.tolist() == want.tolist()
    assert got_al.tolist() == want_al.tolist()
    for a, b in zip(d, full):
        np.testing.assert_array_equal(a, b)


# ---- optimizer steps: every rule x option set x precision, over the multi-tensor table

from optim_cases import CASES as OPTIM_CASES  # noqa: E402
from precisions import PRECISIONS  # noqa: E402
from stepping import SideBySide, seed_for  # noqa: E402
import fusedtrain.reference as ref  # noqa: E402
from fusedtrain._optim_rules import FUNCTIONS  # noqa: E402

OPTIM_SHAPES = [(1,), (7,), (4097,), (3, 5), (0,), (70001,)]


def _device_scalar(x):
    """(pointer, dtype code) of a 1-element array argument, (None, 0) otherwise."""
    if isinstance(x, np.ndarray):
        return x.ctypes.data, CODES[str(x.dtype)]
    return None, 0


def _emulated_step(emu, call):
    """One captured _C rule call (the arguments fusedtrain's functional layer built) on the
    emulated CUDA kernels: its arrays as device memory, 1-element arrays (grad_scale, found_inf,
    lr, step) as device scalars."""
    lists = [call[k] for k in ("params", "grads", "state0", "state1", "state2", "master_params")]
    n = len(lists[0])
    numel = np.array([a.size for a in lists[0]], np.int64)
    ptrs = np.zeros((n, 6), np.uintp)
    for s, arrays in enumerate(lists):
        if arrays is not None:
            ptrs[:, s] = [a.ctypes.data for a in arrays]
    o = call["options"]
    names = [f[0] for f in type(o).fields]
    values = np.array([float(getattr(o, name)) for name in names])
    c_names = (ctypes.c_char_p * len(names))(*[name.encode() for name in names])
    host_scale = call["grad_scale"] if isinstance(call["grad_scale"], float) else None
    if n == 0:
        return
    rc = emu.emu_rule(call["kernel"].rstrip("_").encode(), CODES[str(lists[0][0].dtype)],
                      CODES[str(lists[1][0].dtype)], n, numel.ctypes.data, ptrs.ctypes.data,
                      len(names), ctypes.cast(c_names, ctypes.c_void_p), values.ctypes.data,
                      int(host_scale is not None), host_scale or 1.0,
                      *_device_scalar(call["grad_scale"]), *_device_scalar(call["found_inf"]),
                      *_device_scalar(call["lr"]), *_device_scalar(call["step"]))
    if rc != 0:
        raise RuntimeError(emu.emu_error().decode())


class _Capture:
    """Stands in for one _C rule kernel: records the call instead of running it."""

    def __init__(self, name):
        self.name, self.calls = name, []

    def __call__(self, params, grads, state0, state1, state2, master_params, grad_scale,
                 found_inf, options, lr=None, step=None, clip_max_norm=-1.0, stream=None):
        assert clip_max_norm < 0
        self.calls.append(dict(kernel=self.name, params=params, grads=grads, state0=state0,
                               state1=state1, state2=state2, master_params=master_params,
                               grad_scale=grad_scale, found_inf=found_inf, options=options,
                               lr=lr, step=step))


PRECISION_SET = [p for p in PRECISIONS if p.id in ("f32", "f64", "f16-g32", "bf16-master")]


@pytest.mark.parametrize("precision", PRECISION_SET, ids=str)
@pytest.mark.parametrize("case", OPTIM_CASES, ids=str)
def test_optimizer_steps(emu, monkeypatch, case, precision):
    """Three steps of the emulated CUDA rule and of the CPU kernels from the same state: params,
    master copies and every state list agree with each other and with the float64 reference."""
    ours = SideBySide(case, precision, OPTIM_SHAPES, seed_for("emu", case.id, precision.id))
    cpu = SideBySide(case, precision, OPTIM_SHAPES, seed_for("emu", case.id, precision.id))
    spec = FUNCTIONS[case.rule.name]
    kernel = spec.kernel or spec.fn
    for step in range(1, 4):
        # The references step too: the grads keep Lion's sign() away from its flip (stepping.py).
        grads, ref_grads = ours.new_grads()
        cpu_grads, cpu_ref_grads = cpu.new_grads()
        capture = _Capture(kernel)
        with monkeypatch.context() as m:
            m.setattr(_C, kernel, capture)
            ours.call_rule(ft, ours.ext_params, grads, ours.ext_state, ours.ext_master, step)
        assert len(capture.calls) == 1
        _emulated_step(emu, capture.calls[0])
        ours.call_rule(ref, ours.ref_params, ref_grads, ours.ref_state, ours.ref_master, step)
        cpu.call_rule(ft, cpu.ext_params, cpu_grads, cpu.ext_state, cpu.ext_master, step)
        cpu.call_rule(ref, cpu.ref_params, cpu_ref_grads, cpu.ref_state, cpu.ref_master, step)
    ours.check("emulated CUDA vs float64 reference: ")
    tol = {"float64": "float64"}.get(precision.param, "float32")
    for i in range(len(OPTIM_SHAPES)):
        _close(ours.ext_params[i], cpu.ext_params[i],
               precision.param if precision.half else tol, f"params[{i}]")
        if precision.master:
            _close(ours.ext_master[i], cpu.ext_master[i], "float32", f"master[{i}]")
        for name in case.state_names:
            _close(ours.ext_state[name][i], cpu.ext_state[name][i], tol, f"{name}[{i}]")


@pytest.mark.parametrize("found_inf", [0.0, 1.0], ids=["step", "skipped"])
@pytest.mark.parametrize("fn", list(FUNCTIONS), ids=str)
def test_optimizer_device_scalars(emu, monkeypatch, fn, found_inf):
    """lr, step, grad_scale and found_inf as 1-element arrays: read by the kernel on the device
    (the capturable path, Note [lr override]); found_inf nonzero writes nothing."""
    spec = FUNCTIONS[fn]
    kernel = spec.kernel or spec.fn
    rng = np.random.default_rng(seed_for("emu-scalars", fn))
    shapes = [(7,), (70001,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [4.0 * rng.standard_normal(s).astype(np.float32) for s in shapes]
    runs = []
    for emulated in (True, False):
        params = [p.copy() for p in start]
        states = [[np.full(s, 0.1, np.float32) for s in shapes] for _ in spec.states]
        kw = dict(lr=np.array([0.01], np.float32), grad_scale=np.array([4.0], np.float32),
                  found_inf=np.array([found_inf], np.float32))
        for step in (1, 2):
            if spec.takes_step:
                kw["step"] = step if spec.host_step else np.array([float(step)], np.float32)
            if emulated:
                capture = _Capture(kernel)
                with monkeypatch.context() as m:
                    m.setattr(_C, kernel, capture)
                    getattr(ft, fn)(params, [g.copy() for g in grads], *states, **kw)
                _emulated_step(emu, capture.calls[0])
            else:
                getattr(ft, fn)(params, [g.copy() for g in grads], *states, **kw)
        runs.append((params, states))
    (p_emu, s_emu), (p_cpu, s_cpu) = runs
    for i in range(len(shapes)):
        _close(p_emu[i], p_cpu[i], "float32", f"params[{i}]")
        if found_inf:
            np.testing.assert_array_equal(p_emu[i], start[i])
        for j, name in enumerate(spec.states):
            _close(s_emu[j][i], s_cpu[j][i], "float32", f"{name[0]}[{i}]")


# ---- global norm and the clip outputs (csrc/cuda/norm_kernels.cu): per-chunk partials of each
# dtype's arrays, then one block over them

def _emu_norm(emu, arrays, p, max_norm=-1.0, grad_scale=None, host_scale=1.0):
    """(norm, clip coefficient, divisor) of the emulated kernels; NaN where not written."""
    numel = np.array([a.size for a in arrays], np.int64)
    ptrs = np.array([a.ctypes.data for a in arrays], np.uintp)
    codes = np.array([CODES[str(a.dtype)] for a in arrays], np.int64)
    out, coef, divisor = np.full(1, np.nan), np.full(1, np.nan, np.float32), np.full(1, np.nan, np.float32)
    scale_ptr, scale_code = _device_scalar(grad_scale)
    if emu.emu_norm(len(arrays), numel.ctypes.data, ptrs.ctypes.data, codes.ctypes.data, p,
                    out.ctypes.data, max_norm, scale_ptr, scale_code, host_scale, coef.ctypes.data,
                    divisor.ctypes.data) != 0:
        raise RuntimeError(emu.emu_error().decode())
    return out[0], coef[0], divisor[0]


NORM_DTYPES = {"float32": ["float32"], "float64": ["float64"], "bfloat16": ["bfloat16"],
               "mixed": ["float16", "float32", "bfloat16", "float64"]}


def _norm_arrays(kind, seed=21):
    dtypes = NORM_DTYPES[kind]
    return [a.astype(dtype_named(dtypes[i % len(dtypes)]))
            for i, a in enumerate(_fb_rand("float32", seed, FB_SHAPES * 2, scale=3.0))]


@pytest.mark.parametrize("p", [2.0, 1.0, float("inf"), 3.0, 0.5])
@pytest.mark.parametrize("kind", list(NORM_DTYPES))
def test_global_norm(emu, kind, p):
    arrays = _norm_arrays(kind)
    got, coef, divisor = _emu_norm(emu, arrays, p)
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    want = np.max(np.abs(flat)) if p == float("inf") else np.sum(np.abs(flat) ** p) ** (1 / p)
    assert got == pytest.approx(want, rel=1e-12)
    # The CPU kernels sum float32 values in float32 lanes.
    assert got == pytest.approx(ft.global_norm(arrays, p), rel=1e-12 if kind == "float64" else 1e-6)
    assert np.isnan(coef) and np.isnan(divisor)  # no clipping asked for: not written


# The AMP scale: (device scalar, host scale, the scale in effect); a device scale wins.
CLIP_SCALES = {"unscaled": (None, 1.0, 1.0), "host": (None, 1024.0, 1024.0),
               "device": (np.array([2048.0], np.float32), 99.0, 2048.0)}


@pytest.mark.parametrize("scale", list(CLIP_SCALES))
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_outputs(emu, max_norm, scale):
    """coef = min(1, max_norm / (norm / scale + 1e-6)) on the norm of the AMP-scaled grads,
    divisor = scale / coef (the update divides the grads by it), both float32."""
    device, host, s = CLIP_SCALES[scale]
    norm, coef, divisor = _emu_norm(emu, _norm_arrays("mixed", seed=22), 2.0, max_norm, device, host)
    want = min(1.0, max_norm / (norm / s + 1e-6))
    assert coef == np.float32(want)
    assert divisor == np.float32(s / want)


# ---- schedules (Note [emulated schedules]): a kernel that reads what another thread of its block
# writes between the same two barriers, or what another block of its launch writes, gets other
# bits when the emulation runs threads and blocks in another order. Every batch, group, layer and
# RMS norm case of the tables (but the widest row, 13 s a run) in every dtype, forward and
# backward (with and without weight gradients, layer norm also without dbias), the full-batch
# dots and two-loop recursion, and the global norm: every kernel that shares memory between
# threads.
SCHEDULE_CASES = ([pytest.param("bn", c, id=f"bn-{c}") for c in BN_CASES]
                  + [pytest.param("gn", c, id=f"gn-{c}") for c in GROUP_CASES]
                  + [pytest.param(kind, c, id=f"{kind}-{c}") for c in ROW_CASES
                     if not c.id.startswith("wide") for kind in ("ln", "rms")]
                  + [pytest.param(kind, None, id=kind) for kind in ("dots", "two-loop", "norm")])


def _dots_run(emu, dtype):
    x, others = _fb_rand(dtype, 1), [_fb_rand(dtype, 2 + j) for j in range(3)]
    return lambda: {"dots": _fb(emu, 2, dtype, [x, *others], count=3)[0]}


def _two_loop_run(emu, dtype):
    slots = [3, 0, 5, 2, 4, 1, 6]
    # 48 chunks: each pass's dot merges partials from more than one warp of the next block.
    g, hist, rows, ro = _two_loop_problem(dtype, slots, FB_SHAPES * 8)

    def run():
        d = [np.full(x.shape, np.nan, x.dtype) for x in g]
        sums, al = _fb(emu, 5, dtype, [d, g, rows], row_stride=hist.shape[1], count=len(slots),
                       a=0.7, two_loop=(slots, ro))
        return {"d": np.concatenate([x.ravel() for x in d]), "sums": sums, "al": al}
    return run


def _norm_run(emu, dtype):
    arrays = _norm_arrays("float64" if dtype == "float64" else "mixed")
    return lambda: {"norm": np.array(_emu_norm(emu, arrays, 2.0, 1.0))}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, case", SCHEDULE_CASES)
def test_schedule_changes_no_bit(emu, kind, case, dtype):
    if case is None and dtype not in ("float32", "float64"):
        pytest.skip("the full-batch passes take float32 and float64; the norm mixes dtypes")
    emu.emu_set_sm_count(SM_COUNTS[0])
    runs = {"dots": _dots_run, "two-loop": _two_loop_run, "norm": _norm_run}
    run = runs[kind](emu, dtype) if case is None else _kernel_run(emu, kind, case, dtype)
    want = run()
    try:
        for schedule in (1, 7):  # reversed; shuffled
            emu.emu_set_schedule(schedule)
            _assert_same_bits(run(), want)
    finally:
        emu.emu_set_schedule(-1)  # back to FT_EMU_SCHEDULE's, 0 where unset
