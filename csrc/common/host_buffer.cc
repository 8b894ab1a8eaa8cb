#include "common/host_buffer.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <new>

namespace dist_sync {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kSmallAlignment = 64;
}  // namespace

void HostFree::operator()(std::byte* pointer) const { std::free(pointer); }

HostBuffer allocate_host(size_t bytes) {
  if (bytes == 0) bytes = 1;
  // Large buffers start on a huge-page boundary and fill whole huge pages, so every byte of them
  // can lie on huge pages (Note [Small pages and single-copy transfers]).
  const size_t alignment = bytes >= kHugePage ? kHugePage : kSmallAlignment;
  const size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  auto* pointer = static_cast<std::byte*>(std::aligned_alloc(alignment, rounded));
  if (pointer == nullptr) throw std::bad_alloc();
  if (alignment == kHugePage) madvise(pointer, rounded, MADV_HUGEPAGE);
  return HostBuffer(pointer);
}

}  // namespace dist_sync
