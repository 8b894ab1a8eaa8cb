#include "common/host_buffer.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace dist_sync {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kSmallAlignment = 64;
}  // namespace

void HostFree::operator()(std::byte* pointer) const {
  // Every buffer is released with the largest alignment any of them may have used.
  ::operator delete[](pointer, std::align_val_t{kSmallAlignment});
}

HostBuffer allocate_host(size_t bytes) {
  if (bytes == 0) bytes = 1;
  // Large buffers: round the start to a huge-page boundary inside an over-allocation would need
  // a separate deleter; instead allocate with 64-byte alignment and advise the huge-page-aligned
  // interior, which is where all but the first and last partial huge page of the data lie.
  auto* pointer = static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{kSmallAlignment}));
  if (bytes >= kHugePage) {
    const auto start = reinterpret_cast<uintptr_t>(pointer);
    const uintptr_t first = (start + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t last = (start + bytes) & ~(kHugePage - 1);
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
  return HostBuffer(pointer);
}

}  // namespace dist_sync
