// The extension module fusedtrain._C: one init function per area.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace ft::bind {
void init_runtime(py::module_& m);
void init_optim(py::module_& m);
void init_norm(py::module_& m);
void init_layer_norm(py::module_& m);
void init_interop(py::module_& m);
void init_fullbatch(py::module_& m);
}  // namespace ft::bind

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedtrain kernels (use the fusedtrain package, not this module)";
  ft::bind::init_runtime(m);
  ft::bind::init_optim(m);
  ft::bind::init_norm(m);
  ft::bind::init_layer_norm(m);
  ft::bind::init_interop(m);
  ft::bind::init_fullbatch(m);
}
