"""ptxas' resource report of every CUDA kernel (registers, spills, stack, static shared memory),
read from nvcc --resource-usage on the sources as the build compiles them, per architecture.

No GPU is needed: what a kernel spills, and how many registers it takes, is fixed when ptxas
compiles it. Reports are cached on disk per (sources, nvcc, architecture), so the suite's runs
(once per CPU ISA in CI) compile once."""
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import pytest

from source_tree import kernel_sources

# What CMakeLists.txt passes nvcc for the kernels (Release: CMAKE_CUDA_FLAGS_RELEASE).
FLAGS = ["-O3", "-DNDEBUG", "-std=c++17"]


@dataclasses.dataclass(frozen=True)
class Resources:
    registers: int
    spill_stores: int  # bytes
    spill_loads: int   # bytes
    stack: int         # bytes of stack frame (spills and local arrays)
    static_shared: int  # bytes


def nvcc():
    """$CUDACXX, else nvcc on PATH, else the toolkit's default place; skips the test without one."""
    for cand in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    pytest.skip("no nvcc")


def default_archs(cmakelists):
    """The architectures the build compiles when none is asked for: `set(CMAKE_CUDA_ARCHITECTURES ...)`."""
    m = re.search(r"set\(CMAKE_CUDA_ARCHITECTURES ([\d ]+)\)", cmakelists.read_text())
    assert m, "CMakeLists.txt sets no default CUDA architectures"
    return [f"sm_{a}" for a in m.group(1).split()]


def parse(text):
    """{mangled entry function: Resources} from ptxas' verbose report of one unit."""
    out, entry, props, found = {}, None, None, {}
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '([^']+)'", line):
            entry, found = m.group(1), {}
        elif m := re.search(r"Function properties for (\S+)", line):
            props = m.group(1)  # an entry's, or a device function's it calls
        elif (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                             line)) and entry and props == entry:
            found.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif (m := re.search(r"Used (\d+) registers", line)) and entry:
            smem = re.search(r"(\d+) bytes smem", line)
            found.update(registers=int(m[1]), static_shared=int(smem[1]) if smem else 0)
            out[entry] = Resources(**{"stack": 0, "spill_stores": 0, "spill_loads": 0, **found})
            entry = None
    return out


def demangle(names):
    """Mangled -> readable names (c++filt), the anonymous namespaces left out."""
    tool = shutil.which("c++filt")
    if not tool:
        pytest.skip("no c++filt")
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True)
    return [re.sub(r"ft::cuda::\(anonymous namespace\)::", "", d) for d in res.stdout.splitlines()]


def kernel_resources(csrc, arch):
    """{"unit.cu: readable kernel name": Resources} over every .cu under csrc/cuda, compiled for
    `arch` (the unit in the key: kernels of anonymous namespaces may share a name)."""
    compiler = nvcc()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    units = sorted((csrc / "cuda").glob("*.cu"))
    key = hashlib.sha256((version + arch + " ".join(FLAGS)).encode())
    for p in kernel_sources(csrc):
        key.update(p.name.encode() + p.read_bytes())
    cache = pathlib.Path(tempfile.gettempdir()) / f"fusedtrain-ptxas-{key.hexdigest()[:16]}.json"
    if cache.exists():
        return {k: Resources(**v) for k, v in json.loads(cache.read_text()).items()}
    with tempfile.TemporaryDirectory(prefix="fusedtrain-ptxas-") as work:
        def compile_unit(src):
            res = subprocess.run([compiler, *FLAGS, f"-I{csrc}", f"-arch={arch}", "--resource-usage",
                                  "-cubin", "-o", os.path.join(work, src.stem + ".cubin"), str(src)],
                                 capture_output=True, text=True)
            assert res.returncode == 0, f"nvcc {src.name} for {arch}:\n{res.stderr[-4000:]}"
            return {(src.name, name): r for name, r in parse(res.stdout + res.stderr).items()}
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            found = {}
            for part in pool.map(compile_unit, units):
                found.update(part)
    keys = list(found)
    readable = demangle([name for _, name in keys])
    report = {f"{unit}: {name}": found[k] for k, (unit, _), name in zip(keys, keys, readable)}
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({k: dataclasses.asdict(v) for k, v in report.items()}))
    os.replace(tmp, cache)
    return report
