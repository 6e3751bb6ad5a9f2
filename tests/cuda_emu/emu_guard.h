// The C entry points' convention for tests/test_cuda_emulated.py: 0, or -1 with the exception's
// message in emu_error().
#pragma once
#include <exception>
#include <string>

void emu_set_error(const std::string& e);

template <class F>
int emu_guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    emu_set_error(e.what());
    return -1;
  }
}
