// Reducescatter: the ring's first half, with chunk boundaries at each rank's rows.
#pragma once

#include <vector>

#include "collectives/config.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "reduce/reduce.h"

namespace dist_sync {

// Reduces `count` elements of `in` across ranks; rank r receives elements
// [element_bounds[r], element_bounds[r+1]) of the result in `out`. `scratch` holds
// count elements (partial results of other ranks' chunks pass through it).
void reducescatter(Communicator& comm, const void* in, void* out, void* scratch,
                   const std::vector<size_t>& element_bounds, DataType dtype, ReduceOp op,
                   const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace,
                   int tag);

}  // namespace dist_sync
