// Allgatherv: every rank's block, of any size, to every rank (the ring's second half).
#pragma once

#include <vector>

#include "collectives/config.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"

namespace dist_sync {

// Rank r contributes `in` (block_bytes[r] bytes); every rank receives all blocks, in rank order,
// into `out` (sum of block_bytes). A ring; blocks may differ in size and be empty.
void allgatherv(Communicator& comm, const void* in, void* out,
                const std::vector<size_t>& block_bytes, const CollectiveConfig& config,
                Workspace& workspace, int tag);

}  // namespace dist_sync
