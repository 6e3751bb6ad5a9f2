// Python bindings of the runtime: CPU ISA choice, thread count, CUDA build and devices.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>

#include "bindings/gil.h"
#include "core/huge_pages.h"
#include "core/parallel.h"
#include "cpu/kernels.h"
#include "cuda/device_info.h"
#include "cuda/kernels.h"
#include "cuda/row_kernel_options.h"

namespace py = pybind11;

namespace ft::bind {

void init_runtime(py::module_& m) {
  m.def("cpu_isa", [] {
    try {
      return cpu::current_isa();
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  });
  m.def("available_cpu_isas", &cpu::available_isas);
  m.def("set_cpu_isa", [](const std::string& name) {
    try {
      cpu::set_isa(name);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  });
  m.def("get_num_threads", &get_num_threads);
  m.def("threads_backend", &threads_backend);
  m.def("set_num_threads", [](int n) {
    if (n < 1 || n > kMaxThreads)
      throw py::value_error("set_num_threads: n must be in [1, " + std::to_string(kMaxThreads) +
                            "], got " + std::to_string(n));
    set_num_threads(n);
  });
  m.def("cuda_compiled", &cuda::compiled);
  m.def("cuda_devices", [] {
    ReleaseGil nogil;
    return cuda::device_names();
  });
  m.def("cuda_runtime_version", &cuda::runtime_version);
  m.def(
      "_cuda_row_kernel_options",
      [](std::optional<bool> l2_prefetch, std::optional<bool> shared_column_sums,
         std::optional<bool> rows_walk_prefetch, std::optional<bool> reverse_second_pass,
         std::optional<bool> staged_rows, std::optional<bool> dependent_launch) {
        cuda::RowKernelOptions& o = cuda::row_kernel_options();
        py::dict before;
        before["l2_prefetch"] = o.l2_prefetch;
        before["shared_column_sums"] = o.shared_column_sums;
        before["rows_walk_prefetch"] = o.rows_walk_prefetch;
        before["reverse_second_pass"] = o.reverse_second_pass;
        before["staged_rows"] = o.staged_rows;
        before["dependent_launch"] = o.dependent_launch;
        if (l2_prefetch) o.l2_prefetch = *l2_prefetch;
        if (shared_column_sums) o.shared_column_sums = *shared_column_sums;
        if (rows_walk_prefetch) o.rows_walk_prefetch = *rows_walk_prefetch;
        if (reverse_second_pass) o.reverse_second_pass = *reverse_second_pass;
        if (staged_rows) o.staged_rows = *staged_rows;
        if (dependent_launch) o.dependent_launch = *dependent_launch;
        return before;
      },
      py::arg("l2_prefetch") = py::none(), py::arg("shared_column_sums") = py::none(),
      py::arg("rows_walk_prefetch") = py::none(), py::arg("reverse_second_pass") = py::none(),
      py::arg("staged_rows") = py::none(), py::arg("dependent_launch") = py::none(),
      "Turns the layer/RMS norm CUDA row kernels' next-row L2 prefetch, shared-memory column "
      "sums or staged backward rows, the batch/group norm rows passes' next-batch prefetch, or "
      "the batch/group norm elementwise passes' walk from the grid's last block, or the "
      "normalization kernels' dependent launch (sm_90), on or off (None: "
      "unchanged) and returns the settings before the call (Note [row kernel switches]: without "
      "shared column sums dweight / dbias are summed in another order). For benchmarks.");
  // Note [huge pages]: for the outputs the Python layer allocates through torch on the CPU.
  m.def(
      "_advise_huge_pages",
      [](uintptr_t data, size_t nbytes) { return advise_huge_pages(reinterpret_cast<void*>(data), nbytes); },
      py::arg("data"), py::arg("nbytes"),
      "Asks for transparent huge pages on the 2 MB-aligned interior of [data, data + nbytes) "
      "(Note [huge pages]); returns whether the kernel took the hint.");
  m.def("cuda_device_error", [] {
    py::gil_scoped_release nogil;
    return cuda::device_error();
  });
  // Kernels launched so far: the tests' check that a step is exactly one launch.
  m.def("cuda_launch_count", [] {
#if defined(FT_WITH_CUDA)
    return cuda::launch_count();
#else
    return uint64_t(0);
#endif
  });
  // Chunk lists built so far (Note [one launch per step]): constant while only pointers change.
  m.def("cuda_chunk_list_builds", [] {
#if defined(FT_WITH_CUDA)
    return cuda::chunk_list_builds();
#else
    return uint64_t(0);
#endif
  });
}

}  // namespace ft::bind
