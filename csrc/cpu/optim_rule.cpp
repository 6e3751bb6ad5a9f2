// One elementwise rule's CPU kernel in one ISA build.  Compiled once per (ISA, rule): FT_RULE
// names the rule's struct in math/optim_rules.h and FT_RULE_FN its entry in the kernel table
// (CMakeLists.txt reads both from the rule table, Note [rule table]).
#include "cpu/optim_driver.h"

namespace ft::cpu::FT_ISA {

void FT_RULE_FN(const MultiTensor& mt, const math::FT_RULE::Options& o) {
  driver::run<math::FT_RULE>(mt, o);
}

}  // namespace ft::cpu::FT_ISA
