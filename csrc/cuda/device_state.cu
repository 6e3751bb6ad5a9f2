// Per-device memory pool, upload stream, capture/event queries (see device_state.h), and the
// pointer and read-back queries of kernels.h.
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/device_state.h"
#include "cuda/kernels.h"

namespace ft::cuda {
namespace {

// Note [memory pool]: our scratch (per-step pointer tables, norm partials, batch-norm partials and
// coefficients) comes from a pool of our own rather than the device's default pool, so neither
// our release threshold nor our allocations disturb other users of the default pool.  The
// threshold keeps freed memory cached across host syncs instead of trimming it at each one.
constexpr uint64_t kPoolKeepBytes = uint64_t(1) << 30;

// Lets this thread call APIs a global-mode capture elsewhere would forbid, for one scope.
class RelaxedCapture {
 public:
  RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCapture(const RelaxedCapture&) = delete;
  RelaxedCapture& operator=(const RelaxedCapture&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

std::unique_ptr<DeviceState> make_state(int device) {
  RelaxedCapture relaxed;
  auto d = std::make_unique<DeviceState>();
  d->device = device;
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&d->sm_count, cudaDevAttrMultiProcessorCount, device));
  int shared = 0;
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  d->shared_per_sm = size_t(shared);
  int major = 0;
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  d->dependent_launch = major >= 9;
  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  FT_CUDA_CHECK(cudaMemPoolCreate(&d->pool, &props));
  uint64_t keep = kPoolKeepBytes;
  FT_CUDA_CHECK(cudaMemPoolSetAttribute(d->pool, cudaMemPoolAttrReleaseThreshold, &keep));
  FT_CUDA_CHECK(cudaStreamCreateWithFlags(&d->upload, cudaStreamNonBlocking));
  return d;
}

}  // namespace

DeviceState& device_state() {
  static std::mutex mu;
  static std::vector<std::unique_ptr<DeviceState>> states;
  int device = 0;
  FT_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lk(mu);
  if (size_t(device) >= states.size()) states.resize(size_t(device) + 1);
  if (!states[size_t(device)]) states[size_t(device)] = make_state(device);
  return *states[size_t(device)];
}

void* DeviceState::stream_alloc(size_t bytes, cudaStream_t st) {
  void* p = nullptr;
  if (is_capturing(st)) FT_CUDA_CHECK(cudaMallocAsync(&p, bytes, st));
  else FT_CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, pool, st));
  return p;
}

void DeviceState::stream_free(void* p, cudaStream_t st) noexcept {
  if (p) cudaFreeAsync(p, st);
}

void* DeviceState::upload_now(const void* host, size_t bytes) {
  RelaxedCapture relaxed;
  void* p = nullptr;
  FT_CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, pool, upload));
  FT_CUDA_CHECK(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, upload));
  FT_CUDA_CHECK(cudaStreamSynchronize(upload));
  return p;
}

bool is_capturing(cudaStream_t st) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t err = cudaStreamIsCapturing(st, &status);
  if (err == cudaErrorStreamCaptureImplicit) {
    cudaGetLastError();
    return true;  // the legacy stream while another stream captures: treat as capturing
  }
  FT_CUDA_CHECK(err);
  return status == cudaStreamCaptureStatusActive;
}

bool event_done(cudaEvent_t ev) {
  const cudaError_t err = cudaEventQuery(ev);
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  FT_CUDA_CHECK(err);
  return true;
}

// ---- kernels.h: scratch memory for the bindings and kernel families

void* stream_alloc(size_t bytes, Stream st) {
  return device_state().stream_alloc(bytes, static_cast<cudaStream_t>(st));
}

void stream_free(void* p, Stream st) {
  if (p) cudaFreeAsync(p, static_cast<cudaStream_t>(st));
}

double read_back(const double* device_value, Stream st) {
  double v = 0;
  FT_CUDA_CHECK(cudaMemcpyAsync(&v, device_value, sizeof v, cudaMemcpyDeviceToHost,
                                static_cast<cudaStream_t>(st)));
  FT_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(st)));
  return v;
}

int pointer_device(const void* p) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

}  // namespace ft::cuda
