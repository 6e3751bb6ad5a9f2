"""Compiler launcher of the kernel object files: reuses an object when the same command compiles
the same tree (Note [object cache] in CMakeLists.txt).

    python object_cache.py CACHE_DIR TREE_DIR COMPILER ARGS...

The key is the command line (compiler, flags, defines, include directories, source and output
paths), the size and modification time of the compiler executable and of the host compilers a
CUDA compiler finds on PATH, the environment variables compilers read for more include paths or
flags, and the content of every file under TREE_DIR (the sources and headers the kernels
include).  A hit copies the object and its
dependency file (-MF) into place; a miss runs the compiler and stores both.  Each output keeps
one entry, the last one stored, so the cache stays the size of one build.
"""
import hashlib
import os
import shutil
import subprocess
import sys


def _after(args, flag):
    for i, a in enumerate(args[:-1]):
        if a == flag:
            return args[i + 1]
    return None


# Read by the compilers themselves: a change in any of them changes what a command compiles.
ENVIRONMENT = ("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH", "NVCC_PREPEND_FLAGS",
               "NVCC_APPEND_FLAGS", "NVCC_CCBIN", "CUDAHOSTCXX", "CUDA_PATH", "CUDA_HOME")
# What nvcc runs as the host compiler when the command names none (-ccbin).
HOST_COMPILERS = ("gcc", "g++", "c++", "cc", "clang", "clang++")


def _identity(program):
    """Path, size and modification time of an executable ("" when it is not found)."""
    path = shutil.which(program) or (program if os.path.exists(program) else "")
    if not path:
        return ""
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _tree_digest(tree):
    h = hashlib.sha256()
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, tree).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _store(src, dst):
    tmp = f"{dst}.{os.getpid()}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def main(argv):
    cache, tree, cmd = argv[0], argv[1], argv[2:]
    out, depfile = _after(cmd, "-o"), _after(cmd, "-MF")
    if out is None:                      # not a compile to an object: nothing to reuse
        return subprocess.call(cmd)
    parts = [*cmd, _identity(cmd[0])]
    if "nvcc" in os.path.basename(cmd[0]):
        parts += [_identity(c) for c in HOST_COMPILERS]
    parts += [f"{k}={os.environ.get(k, '')}" for k in ENVIRONMENT]
    parts.append(_tree_digest(tree))
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() + b"\0")
    slot = os.path.join(cache, hashlib.sha256(os.path.abspath(out).encode()).hexdigest()[:24])
    entry = f"{slot}-{h.hexdigest()[:32]}"
    if os.path.exists(entry + ".o") and (depfile is None or os.path.exists(entry + ".d")):
        shutil.copyfile(entry + ".o", out)
        if depfile is not None:
            shutil.copyfile(entry + ".d", depfile)
        return 0
    rc = subprocess.call(cmd)
    if rc != 0:
        return rc
    os.makedirs(cache, exist_ok=True)
    for old in os.listdir(cache):       # this output's older entry
        path = os.path.join(cache, old)
        if path.startswith(slot + "-") and not path.startswith(entry):
            try:
                os.remove(path)
            except OSError:
                pass
    if depfile is not None:
        _store(depfile, entry + ".d")
    _store(out, entry + ".o")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
