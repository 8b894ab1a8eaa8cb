// Collectives that move data without reducing it (plus reducescatter, the ring's first half),
// and the small byte-message helpers the engine's negotiation is built from.
#pragma once

#include <cstdint>
#include <vector>

#include "collectives/config.h"
#include "collectives/span_list.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "reduce/reduce.h"

namespace dist_sync {

// Pipelined chain root -> root+1 -> ... : each link carries the buffer once, segments overlap.
// The root reads the in side; every other rank writes the out side.
void broadcast(Communicator& comm, const SpanList& buffer, int root,
               const CollectiveConfig& config, Workspace& workspace);

// Rank r contributes `in` (block_bytes[r] bytes); every rank receives all blocks, in rank order,
// into `out` (sum of block_bytes). A ring; blocks may differ in size and be empty.
void allgatherv(Communicator& comm, const void* in, void* out,
                const std::vector<size_t>& block_bytes, const CollectiveConfig& config,
                Workspace& workspace);

// send_bytes[p] bytes from `in` (consecutive, in rank order) go to rank p; recv_bytes[p] bytes
// from rank p land in `out` (consecutive, in rank order).
void alltoallv(Communicator& comm, const void* in, const std::vector<size_t>& send_bytes,
               void* out, const std::vector<size_t>& recv_bytes);

// Reduces `count` elements of `in` across ranks; rank r receives elements
// [element_bounds[r], element_bounds[r+1]) of the result in `out`. `scratch` holds
// count elements (partial results of other ranks' chunks pass through it).
void reducescatter(Communicator& comm, const void* in, void* out, void* scratch,
                   const std::vector<size_t>& element_bounds, DataType dtype, ReduceOp op,
                   const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace);

// Negotiation helpers: variable-length byte messages, small and latency-bound.
std::vector<std::vector<uint8_t>> gather_bytes(Communicator& comm, const std::vector<uint8_t>& mine,
                                               int root, int tag);
void broadcast_bytes(Communicator& comm, std::vector<uint8_t>& data, int root, int tag);

}  // namespace dist_sync
