// Host memory the engine allocates itself (ring slots, fusion buffer, result buffers).
//
// Note [Huge pages]
// Open MPI moves large messages between processes of a host with a single copy
// (process_vm_readv), whose cost is dominated by per-page work; on this kind of machine it runs
// about twice as fast from 2 MiB transparent huge pages as from 4 KiB pages. numpy already asks
// for huge pages for large arrays; our own buffers of 2 MiB and more do the same (aligned to
// 2 MiB and filling whole huge pages, madvise(MADV_HUGEPAGE)). Small buffers are 64-byte
// aligned for SIMD.
#pragma once

#include <cstddef>
#include <memory>

namespace dist_sync {

struct HostFree {
  void operator()(std::byte* pointer) const;
};
using HostBuffer = std::unique_ptr<std::byte[], HostFree>;

// Uninitialised memory of `bytes` bytes (at least 1).
HostBuffer allocate_host(size_t bytes);

}  // namespace dist_sync
