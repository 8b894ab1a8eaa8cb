// Scratch memory owned by whoever runs collectives (the engine keeps one for its lifetime), so
// the data path does not allocate per call. Grows to the largest request, never shrinks.
#pragma once

#include <array>
#include <cstddef>

#include "common/host_buffer.h"

namespace dist_sync {

class Workspace {
 public:
  enum Purpose { kRingRecvSlots, kRingSendSlots, kFusion, kFusionPeer, kCount };

  std::byte* get(Purpose purpose, size_t bytes) {
    Buffer& buffer = buffers_[purpose];
    if (buffer.capacity < bytes) {
      buffer.data = allocate_host(bytes);
      buffer.capacity = bytes;
    }
    return buffer.data.get();
  }

  size_t capacity_bytes() const {
    size_t total = 0;
    for (const Buffer& buffer : buffers_) total += buffer.capacity;
    return total;
  }

 private:
  struct Buffer {
    HostBuffer data;
    size_t capacity = 0;
  };
  std::array<Buffer, kCount> buffers_;
};

}  // namespace dist_sync
