#include "collectives/alltoallv.h"

#include <cstring>

namespace dist_sync {

void alltoallv(Communicator& comm, const void* in, const std::vector<size_t>& send_bytes,
               void* out, const std::vector<size_t>& recv_bytes, int tag) {
  const int size = comm.size();
  const int rank = comm.rank();
  std::vector<size_t> send_offsets(static_cast<size_t>(size) + 1, 0);
  std::vector<size_t> recv_offsets(static_cast<size_t>(size) + 1, 0);
  for (size_t p = 0; p < static_cast<size_t>(size); ++p) {
    send_offsets[p + 1] = send_offsets[p] + send_bytes[p];
    recv_offsets[p + 1] = recv_offsets[p] + recv_bytes[p];
  }
  const auto* in_bytes = static_cast<const std::byte*>(in);
  auto* out_bytes = static_cast<std::byte*>(out);
  const size_t self = static_cast<size_t>(rank);
  if (send_bytes[self] > 0) {
    std::memcpy(out_bytes + recv_offsets[self], in_bytes + send_offsets[self], send_bytes[self]);
  }
  std::vector<std::pair<TransferPtr, int>> transfers;
  // Pairwise schedule: at distance i everyone sends to r+i and receives from r-i, so no rank
  // is flooded by all others at once.
  for (int distance = 1; distance < size; ++distance) {
    const int from = (rank - distance + size) % size;
    const size_t index = static_cast<size_t>(from);
    if (recv_bytes[index] > 0) {
      transfers.emplace_back(
          comm.irecv(out_bytes + recv_offsets[index], recv_bytes[index], from, tag), from);
    }
  }
  for (int distance = 1; distance < size; ++distance) {
    const int to = (rank + distance) % size;
    const size_t index = static_cast<size_t>(to);
    if (send_bytes[index] > 0) {
      transfers.emplace_back(
          comm.isend(in_bytes + send_offsets[index], send_bytes[index], to, tag), to);
    }
  }
  comm.wait_all(transfers, "alltoall");
}

}  // namespace dist_sync
