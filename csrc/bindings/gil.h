// Releasing the GIL while kernels run, in a way that survives interpreter exit.
#pragma once
#include <pybind11/pybind11.h>

namespace ft::bind {

// Note [daemon threads at exit]: once the interpreter is finalizing, a daemon thread that comes
// back from a kernel and asks for the GIL is ended by CPython with pthread_exit, which unwinds
// the thread's stack. pybind11's gil_scoped_release asks from a noexcept destructor, where that
// unwind is std::terminate: the process aborted at exit with "terminate called without an
// active exception". This guard lets the unwind through (noexcept(false)), up through pybind11's
// dispatcher (which rethrows it) into CPython's frames, so the thread ends the way a daemon
// thread running Python code does and the process exits cleanly. The kernel has finished by
// then; nothing of ours runs on that thread again.
class ReleaseGil {
 public:
  ReleaseGil() : state_(PyEval_SaveThread()) {}
  ~ReleaseGil() noexcept(false) { PyEval_RestoreThread(state_); }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace ft::bind
