// Alltoallv: a block of any size from every rank to every rank, in a pairwise schedule.
#pragma once

#include <vector>

#include "comm/communicator.h"

namespace dist_sync {

// send_bytes[p] bytes from `in` (consecutive, in rank order) go to rank p; recv_bytes[p] bytes
// from rank p land in `out` (consecutive, in rank order).
void alltoallv(Communicator& comm, const void* in, const std::vector<size_t>& send_bytes,
               void* out, const std::vector<size_t>& recv_bytes, int tag);

}  // namespace dist_sync
