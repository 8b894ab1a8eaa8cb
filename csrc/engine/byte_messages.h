// Variable-length byte messages to and from one rank: what negotiation is built from (requests
// to the coordinator, its responses back, rank 0's shared settings). Small and latency-bound.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace dist_sync {

// Every rank's `mine`, at `root` (indexed by rank; empty elsewhere).
std::vector<std::vector<uint8_t>> gather_bytes(Communicator& comm, const std::vector<uint8_t>& mine,
                                               int root, int tag);
// `root`'s `data` on every rank (a binomial tree).
void broadcast_bytes(Communicator& comm, std::vector<uint8_t>& data, int root, int tag);

}  // namespace dist_sync
