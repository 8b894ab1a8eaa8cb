// Which parts of a buffer lie on transparent huge pages.
//
// Note [Small pages and single-copy transfers]
// Between processes of one host Open MPI moves a large message with one kernel-assisted copy
// (process_vm_readv by the receiver), which pins the sender's pages one by one. From 4 KiB
// pages that costs more than copying the data once more: here a 97.5 MiB allreduce on 2 ranks
// took 22 ms sent straight from 4 KiB pages and 12.6 ms staged through the ring's huge-page
// slots, against 9.3–11.4 ms straight from huge pages (docs/benchmarks.md). numpy puts arrays of 4 MiB and more on huge
// pages, torch's CPU allocator never does (with THP in its default "madvise" mode), so both
// cases are common. The ring therefore sends a segment straight from a tensor only where the
// kernel reports huge pages under it (PAGEMAP_SCAN, Linux 6.7+), and stages it otherwise,
// including when the kernel cannot tell.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace dist_sync {

struct MemoryRange {
  const void* data;
  size_t bytes;
};

class HugePageMap {
 public:
  // Asks the kernel which parts of each range are backed by huge pages now.
  explicit HugePageMap(const std::vector<MemoryRange>& ranges);

  // True if all of [data, data + bytes) was found on huge pages.
  bool covers(const void* data, size_t bytes) const;

 private:
  std::vector<std::pair<uintptr_t, uintptr_t>> huge_;  // [begin, end), sorted, disjoint
};

}  // namespace dist_sync
