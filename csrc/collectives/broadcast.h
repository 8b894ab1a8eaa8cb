// Broadcast: a pipelined chain from the root.
#pragma once

#include "collectives/config.h"
#include "collectives/span_list.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"

namespace dist_sync {

// Pipelined chain root -> root+1 -> ... : each link carries the buffer once, segments overlap.
// The root reads the in side; every other rank writes the out side.
void broadcast(Communicator& comm, const SpanList& buffer, int root,
               const CollectiveConfig& config, Workspace& workspace, int tag);

}  // namespace dist_sync
