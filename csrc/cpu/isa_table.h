// Kernel families beyond the optimizer table register their per-ISA tables here themselves, so a
// new family adds a source file and a header, not a line in csrc/cpu/dispatch.cpp.
//
// Note [isa tables]: each ISA build of a family defines one `static const bool` initialized by
// IsaTables<Table>::add(&table); the objects of every ISA are linked into the module, so their
// initializers run at load. active() returns the table whose `isa` names the ISA in use
// (cpu::current_isa(), which dispatch.cpp picks by cpuid and set_isa changes).
#pragma once
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/kernels.h"

namespace ft::cpu {

template <class Table>
class IsaTables {
 public:
  static bool add(const Table& (*get)()) {
    list().push_back(get);
    return true;
  }
  // Looked up by name per call: a handful of string compares, next to a kernel over an array.
  static const Table& active() {
    const char* isa = cpu::active().isa;
    for (auto get : list())
      if (std::strcmp(get().isa, isa) == 0) return get();
    throw std::invalid_argument(std::string("no kernels of this family for cpu isa ") + isa);
  }

 private:
  static std::vector<const Table& (*)()>& list() {
    static std::vector<const Table& (*)()> tables;
    return tables;
  }
};

}  // namespace ft::cpu
