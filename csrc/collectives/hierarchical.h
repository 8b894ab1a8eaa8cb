// Hierarchical allreduce for several ranks per host (DIST_SYNC_HIERARCHICAL_ALLREDUCE=1).
//
// Note [Hierarchical allreduce]
// With L ranks on each of H hosts, a flat ring sends 2(N-1)/N of the buffer over every link,
// including the slow links between hosts. Here: (1) a reduce-scatter among the L ranks of a host
// leaves local rank l with chunk l of the host's sum; (2) the ranks with the same local rank (one
// per host) allreduce their chunk across hosts; (3) an allgather among the host's ranks gives
// everyone the whole result. Each rank sends only 2(H-1)/H of a 1/L chunk across hosts, so the
// inter-host traffic per host equals one flat ring over H ranks, while every rank still works.
// (This is "reduce within each host, ring across hosts, broadcast within each host" with the
// reduction and the broadcast spread over all of a host's ranks instead of funnelled through one.)
#pragma once

#include "collectives/config.h"
#include "collectives/phase_log.h"
#include "collectives/span_list.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "reduce/reduce.h"

namespace dist_sync {

// `local`: the ranks on this host; `cross`: the ranks with this rank's local rank, one per host.
// Every host must have the same number of ranks.
void hierarchical_allreduce(Communicator& local, Communicator& cross, const SpanList& buffer,
                            DataType dtype, ReduceOp op, const Scaling& scaling,
                            const CollectiveConfig& config, Workspace& workspace, int tag,
                            PhaseLog* phases = nullptr);

}  // namespace dist_sync
