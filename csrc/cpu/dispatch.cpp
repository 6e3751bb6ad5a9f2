// Runtime choice of the CPU ISA build: cpuid (via the compiler's cpu-supports builtins) on x86,
// NEON as the baseline of aarch64, overridable with FUSEDTRAIN_CPU_ISA or set_isa().
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "cpu/kernels.h"

namespace ft::cpu {
namespace {

struct IsaEntry {
  const char* name;
  const Kernels& (*get)();
  bool (*supported)();
};

// Best last.  Which entries exist is decided by CMakeLists.txt (FT_HAVE_ISA_*).
const std::vector<IsaEntry>& entries() {
  static const std::vector<IsaEntry> all = {
#if defined(FT_HAVE_ISA_baseline)
      {"baseline", &baseline::kernels, [] { return true; }},
#endif
#if defined(FT_HAVE_ISA_avx2)
      {"avx2", &avx2::kernels,
       [] {
         return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __builtin_cpu_supports("f16c");
       }},
#endif
#if defined(FT_HAVE_ISA_avx512)
      {"avx512", &avx512::kernels,
       [] {
         return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
       }},
#endif
#if defined(FT_HAVE_ISA_neon)
      {"neon", &neon::kernels, [] { return true; }},
#endif
  };
  return all;
}

const IsaEntry* find(const std::string& name) {
  for (const auto& e : entries())
    if (name == e.name && e.supported()) return &e;
  return nullptr;
}

const Kernels* pick_initial() {
  if (const char* env = std::getenv("FUSEDTRAIN_CPU_ISA")) {
    if (*env) {
      const IsaEntry* e = find(env);
      if (!e)
        throw std::invalid_argument(std::string("FUSEDTRAIN_CPU_ISA=") + env +
                                    " is not available on this machine");
      return &e->get();
    }
  }
  const Kernels* best = nullptr;
  for (const auto& e : entries())
    if (e.supported()) best = &e.get();
  return best;
}

std::atomic<const Kernels*> g_active{nullptr};

}  // namespace

const Kernels& active() {
  const Kernels* k = g_active.load(std::memory_order_acquire);
  if (!k) {
    k = pick_initial();
    g_active.store(k, std::memory_order_release);
  }
  return *k;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const auto& e : entries())
    if (e.supported()) out.push_back(e.name);
  return out;
}

void set_isa(const std::string& name) {
  const IsaEntry* e = find(name);
  if (!e) {
    std::string avail;
    for (const auto& n : available_isas()) avail += (avail.empty() ? "" : ", ") + n;
    throw std::invalid_argument("cpu isa '" + name + "' is not available here (available: " +
                                avail + ")");
  }
  g_active.store(&e->get(), std::memory_order_release);
}

std::string current_isa() { return active().isa; }

}  // namespace ft::cpu
