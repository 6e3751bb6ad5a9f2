// The parts of the DLPack 1.x C ABI that fusedtrain consumes: tensors, capsule payloads and the
// C exchange API table (`__dlpack_c_exchange_api__`).  Layouts only, no behaviour.
#pragma once
#include <cstdint>

namespace ft::bind::dl {

struct Device {
  int32_t type;  // DLDeviceType
  int32_t id;
};

struct DataType {
  uint8_t code;  // DLDataTypeCode
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; NULL means compact row-major
  uint64_t byte_offset;
};

// Payload of a legacy "dltensor" capsule.
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor*);
};

struct Version {
  uint32_t major;
  uint32_t minor;
};

// Payload of a "dltensor_versioned" capsule (DLPack >= 1.0).
struct ManagedTensorVersioned {
  Version version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned*);
  uint64_t flags;
  Tensor dl_tensor;
};

struct ExchangeHeader {
  Version version;
  ExchangeHeader* prev_api;  // an older table of the same producer, or NULL
};

// The table a producer's type exposes as a "dlpack_exchange_api" capsule.  Only the functions
// fusedtrain calls are typed; the others are kept as opaque slots for the layout.
struct ExchangeApi {
  ExchangeHeader header;
  void* managed_tensor_allocator;
  void* managed_tensor_from_py_object_no_sync;
  void* managed_tensor_to_py_object_no_sync;
  // Fills a non-owning view of a Python object of the producer's type; 0, or -1 with a Python
  // error set.  May be NULL.
  int (*dltensor_from_py_object_no_sync)(void* py_object, Tensor* out);
  // The producer's current stream of a device (CUDA: its cudaStream_t); 0, or -1 with an error.
  int (*current_work_stream)(int32_t device_type, int32_t device_id, void** out_stream);
};

constexpr uint32_t kMajorVersion = 1;     // the ABI major these structs describe
constexpr uint64_t kFlagReadOnly = 1;     // DLPACK_FLAG_BITMASK_READ_ONLY

constexpr int32_t kCPU = 1, kCUDA = 2, kCUDAManaged = 13;
constexpr uint8_t kFloat = 2, kBfloat = 4;

}  // namespace ft::bind::dl
