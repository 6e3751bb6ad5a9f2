"""The walks of the CUDA normalization kernels (Note [batched walk], csrc/cuda/norm_walk.cuh),
compiled on the host with stand-ins for the CUDA built-ins: over every block split and thread of
a launch, each vector of a channel (planar view) or each row under a column vector (rows layout)
is read exactly once, the masked planar walk's lanes cover each value of a channel exactly once,
only a walk's last batch holds vectors past its split's end, a batch known full gives the same
offsets unchecked, and a rows walk's prefetch peeks at exactly its next batch. Runs
without a GPU, so the index arithmetic of every planar and rows kernel is checked on any
machine with a C++ compiler."""
import pathlib
import subprocess

from source_tree import host_compiler, source_path

PROGRAM = r"""
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_runtime.h"  // tests/cuda_emu: the CUDA built-ins as host globals
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
#include "cuda/norm_walk.cuh"

using namespace ft::cuda;

static int failures = 0;
static void fail(const char* what, long a, long b) {
  if (failures++ < 10) std::printf("FAIL %s (%ld, %ld)\n", what, a, b);
}

// Runs one thread's walk; calls visit(off) for each offset >= 0; checks that past-the-end
// offsets appear in the last batch only, never first in a batch, that full() says whether the
// next batch has all kUnroll vectors, and that a full batch, taken unchecked, gives the same
// offsets (Note [full batches]).
template <class Walk, class Visit>
void walk_thread(Walk w, Visit visit) {
  bool ended = false;
  while (w.more()) {
    if (ended) fail("a batch after one past the split's end", 0, 0);
    const bool full = w.full();
    Walk unchecked = w;
    Batch<false> b;
    w.next(b);
    if (b.off[0] < 0) fail("a batch that opens past the split's end", 0, b.off[0]);
    if (full != (b.off[kUnroll - 1] >= 0)) fail("full() is not whether the batch is", full, b.off[kUnroll - 1]);
    if (full) {
      Batch<true> f;
      unchecked.next(f);
      for (int u = 0; u < kUnroll; ++u)
        if (f.off[u] != b.off[u]) fail("a full batch's offsets differ", f.off[u], b.off[u]);
    }
    for (int u = 0; u < kUnroll; ++u) {
      if (!b.has(u)) ended = true;
      else if (ended) fail("a vector after one past the split's end", u, b.off[u]);
      else visit(b.off[u]);
    }
  }
}

// A random planar shape with runs of unit * (1..max_units) values, and a launch over it: a block
// row per channel, 1-7 splits, 1-256 threads.
ft::BnShape random_planar(std::mt19937_64& g, int max_units, int unit) {
  ft::BnShape s;
  s.outer = g() % 4 == 0 ? 0 : int64_t(g() % 9 + 1);
  s.channels = int64_t(g() % 5 + 1);
  s.inner = int64_t(g() % max_units + 1) * unit;
  gridDim = {unsigned(s.channels), unsigned(g() % 7 + 1), 1};
  blockDim = {1u << (g() % 9), 1, 1};
  return s;
}

template <int V>
void planar(std::mt19937_64& g, int cases) {
  for (int t = 0; t < cases; ++t) {
    const ft::BnShape s = random_planar(g, 70, V);
    const int64_t iv = s.inner / V;
    for (blockIdx.x = 0; blockIdx.x < gridDim.x; ++blockIdx.x) {
      std::vector<int> seen(size_t(s.outer * iv), 0);
      for (blockIdx.y = 0; blockIdx.y < gridDim.y; ++blockIdx.y)
        for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x)
          walk_thread(PlanarSplit<V>(s), [&](int64_t off) {
            const int64_t plane = s.channels * s.inner, o = off / plane, rest = off % plane;
            if (rest / s.inner != int64_t(blockIdx.x) || rest % s.inner % V != 0 || o >= s.outer)
              return fail("planar offset outside the block's channel", V, off);
            ++seen[size_t(o * iv + rest % s.inner / V)];
          });
      for (size_t j = 0; j < seen.size(); ++j)
        if (seen[j] != 1) fail("planar vector not read exactly once", V, seen[j]);
    }
  }
}

// Note [masked planar walk]: over all threads and splits, the lanes [lo, hi) of the vectors
// cover every value of the block's channel exactly once, every vector is aligned to V and holds
// a value of the channel, and the walk reads nothing past the array's end but lane by lane.
template <int V>
void planar_span(std::mt19937_64& g, int cases) {
  for (int t = 0; t < cases; ++t) {
    const ft::BnShape s = random_planar(g, 300, 1);
    const int64_t total = s.outer * s.channels * s.inner;
    for (blockIdx.x = 0; blockIdx.x < gridDim.x; ++blockIdx.x) {
      std::vector<int> seen(size_t(s.outer * s.inner), 0);
      for (blockIdx.y = 0; blockIdx.y < gridDim.y; ++blockIdx.y)
        for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x) {
          PlanarSpanSplit<V> w(s);
          while (w.more()) {
            int64_t off[kUnroll];
            Lanes ln[kUnroll];
            w.next(off, ln);
            for (int u = 0; u < kUnroll; ++u) {
              if (off[u] < 0) continue;
              if (off[u] % V != 0 || ln[u].lo < 0 || ln[u].hi > V || ln[u].lo >= ln[u].hi)
                fail("span vector misaligned or empty", V, off[u]);
              for (int e = ln[u].lo; e < ln[u].hi; ++e) {
                const int64_t i = off[u] + e, plane = s.channels * s.inner;
                if (i >= total || (i % plane) / s.inner != int64_t(blockIdx.x))
                  fail("span lane outside the block's channel", V, i);
                else
                  ++seen[size_t(i / plane * s.inner + i % s.inner)];
              }
            }
          }
        }
      for (size_t j = 0; j < seen.size(); ++j)
        if (seen[j] != 1) fail("planar value not covered exactly once", V, seen[j]);
    }
  }
}

void rows(std::mt19937_64& g, int cases) {
  for (int t = 0; t < cases; ++t) {
    const int64_t R = int64_t(g() % 300), C = int64_t(g() % 50 + 1), col0 = int64_t(g() % C);
    gridDim = {1, unsigned(g() % 9 + 1), 1};
    blockDim = {1, 1u << (g() % 8), 1};
    std::vector<int> seen(size_t(R), 0);
    for (blockIdx.y = 0; blockIdx.y < gridDim.y; ++blockIdx.y)
      for (threadIdx.y = 0; threadIdx.y < blockDim.y; ++threadIdx.y) {
        walk_thread(RowsSplit(R, C, col0), [&](int64_t off) {
          if ((off - col0) % C != 0 || off / C >= R) return fail("rows offset off the column", C, off);
          ++seen[size_t(off / C)];
        });
        // Note [rows walk prefetch]: peek gives the batch that next() gives next, and nothing
        // once the split is done.
        RowsSplit w(R, C, col0, true);
        int64_t ahead[kUnroll];
        Batch<false> b;
        w.peek(ahead);
        while (w.more()) {
          w.next(b);
          for (int u = 0; u < kUnroll; ++u)
            if (b.off[u] != ahead[u]) fail("peek is not the next batch", ahead[u], b.off[u]);
          w.peek(ahead);
        }
        for (int u = 0; u < kUnroll; ++u)
          if (ahead[u] >= 0) fail("peek past the split's end", u, ahead[u]);
      }
    for (size_t r = 0; r < seen.size(); ++r)
      if (seen[r] != 1) fail("row not read exactly once", long(r), seen[r]);
  }
}

int main() {
  std::mt19937_64 g(20261127);
  planar<1>(g, 200);
  planar<2>(g, 200);
  planar<4>(g, 200);
  planar<8>(g, 200);
  planar_span<2>(g, 200);
  planar_span<4>(g, 200);
  planar_span<8>(g, 200);
  rows(g, 1500);
  std::printf(failures ? "%d failures\n" : "ok\n", failures);
  return failures != 0;
}
"""


def test_every_vector_read_once_by_one_thread(tmp_path):
    csrc, cxx = source_path("csrc/cuda/norm_walk.cuh").parents[1], host_compiler()
    src = tmp_path / "walks.cpp"
    src.write_text(PROGRAM)
    exe = tmp_path / "walks"
    emu = pathlib.Path(__file__).resolve().parent / "cuda_emu"
    base = [cxx, "-std=c++17", "-O1", f"-I{emu}", f"-I{csrc}", str(src), "-o", str(exe)]
    # Sanitized where the toolchain has the runtimes, plain otherwise.
    built = subprocess.run(base + ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        built = subprocess.run(base, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
