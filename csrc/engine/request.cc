#include "engine/request.h"

namespace dist_sync {

std::string device_kind_name(DeviceKind device) {
  switch (device) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kCuda: return "cuda";
  }
  return "device(" + std::to_string(static_cast<int>(device)) + ")";
}

int64_t TensorMeta::elements() const {
  int64_t count = 1;
  for (const int64_t dim : shape) count *= dim;
  return count;
}

size_t TensorMeta::bytes() const {
  return static_cast<size_t>(elements()) * dtype_size(dtype);
}

int64_t TensorMeta::row_elements() const {
  int64_t count = 1;
  for (size_t i = 1; i < shape.size(); ++i) count *= shape[i];
  return count;
}

bool RequestMeta::same_signature(const RequestMeta& other) const {
  if (type != other.type || name != other.name || reduce_op != other.reduce_op ||
      prescale != other.prescale || postscale != other.postscale ||
      root != other.root || device != other.device || cacheable != other.cacheable ||
      splits != other.splits || tensors.size() != other.tensors.size()) {
    return false;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].name != other.tensors[i].name || tensors[i].dtype != other.tensors[i].dtype ||
        tensors[i].shape != other.tensors[i].shape) {
      return false;
    }
  }
  return true;
}

size_t RequestMeta::total_bytes() const {
  size_t total = 0;
  for (const TensorMeta& tensor : tensors) total += tensor.bytes();
  return total;
}

size_t Response::total_bytes() const {
  size_t total = 0;
  for (const RequestMeta& meta : requests) total += meta.total_bytes();
  return total;
}

}  // namespace dist_sync
