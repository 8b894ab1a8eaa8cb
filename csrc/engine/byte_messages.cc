#include "engine/byte_messages.h"

namespace dist_sync {

std::vector<std::vector<uint8_t>> gather_bytes(Communicator& comm, const std::vector<uint8_t>& mine,
                                               int root, int tag) {
  const int size = comm.size();
  std::vector<std::vector<uint8_t>> all;
  if (comm.rank() != root) {
    const uint64_t length = mine.size();
    std::vector<std::pair<TransferPtr, int>> transfers;
    transfers.emplace_back(comm.isend(&length, sizeof(length), root, tag), root);
    if (length > 0) transfers.emplace_back(comm.isend(mine.data(), mine.size(), root, tag), root);
    comm.wait_all(transfers, "negotiation (sending requests to the coordinator)");
    return all;
  }
  all.resize(static_cast<size_t>(size));
  std::vector<uint64_t> lengths(static_cast<size_t>(size), 0);
  std::vector<std::pair<TransferPtr, int>> transfers;
  for (int peer = 0; peer < size; ++peer) {
    if (peer == root) continue;
    transfers.emplace_back(comm.irecv(&lengths[static_cast<size_t>(peer)], sizeof(uint64_t), peer, tag), peer);
  }
  comm.wait_all(transfers, "negotiation (coordinator gathering requests)");
  transfers.clear();
  for (int peer = 0; peer < size; ++peer) {
    const size_t index = static_cast<size_t>(peer);
    if (peer == root) {
      all[index] = mine;
      continue;
    }
    all[index].resize(lengths[index]);
    if (lengths[index] > 0) {
      transfers.emplace_back(comm.irecv(all[index].data(), lengths[index], peer, tag), peer);
    }
  }
  comm.wait_all(transfers, "negotiation (coordinator gathering requests)");
  return all;
}

void broadcast_bytes(Communicator& comm, std::vector<uint8_t>& data, int root, int tag) {
  const int size = comm.size();
  if (size == 1) return;
  const int relative = (comm.rank() - root + size) % size;
  uint64_t length = data.size();
  // Binomial tree: receive from the parent, then send to children at decreasing distances.
  int mask = 1;
  while (mask < size) {
    if (relative & mask) {
      const int parent = (comm.rank() - mask + size) % size;
      TransferPtr receiving = comm.irecv(&length, sizeof(length), parent, tag);
      comm.wait(*receiving, "negotiation (receiving the coordinator's responses)", parent);
      data.resize(length);
      if (length > 0) {
        receiving = comm.irecv(data.data(), length, parent, tag);
        comm.wait(*receiving, "negotiation (receiving the coordinator's responses)", parent);
      }
      break;
    }
    mask <<= 1;
  }
  mask >>= 1;
  std::vector<std::pair<TransferPtr, int>> transfers;
  for (; mask > 0; mask >>= 1) {
    if (relative + mask < size) {
      const int child = (comm.rank() + mask) % size;
      transfers.emplace_back(comm.isend(&length, sizeof(length), child, tag), child);
      if (length > 0) transfers.emplace_back(comm.isend(data.data(), length, child, tag), child);
    }
  }
  comm.wait_all(transfers, "negotiation (forwarding the coordinator's responses)");
}

}  // namespace dist_sync
