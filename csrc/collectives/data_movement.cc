#include "collectives/data_movement.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <numeric>

#include "collectives/ring.h"

namespace dist_sync {
namespace {

// Waits for all transfers; reports the first unfinished one's peer when idle.
void wait_all(Communicator& comm, std::vector<std::pair<TransferPtr, int>>& transfers,
              const char* what) {
  Waiter waiter(comm, what);
  size_t remaining = transfers.size();
  std::vector<bool> done(transfers.size(), false);
  while (remaining > 0) {
    bool progressed = false;
    int waiting_for = -1;
    for (size_t i = 0; i < transfers.size(); ++i) {
      if (done[i]) continue;
      if (transfers[i].first->test()) {
        done[i] = true;
        --remaining;
        progressed = true;
      } else if (waiting_for < 0) {
        waiting_for = transfers[i].second;
      }
    }
    if (progressed) {
      waiter.progressed();
    } else if (remaining > 0) {
      waiter.idle(waiting_for);
    }
  }
}

}  // namespace

void broadcast(Communicator& comm, const SpanList& buffer, int root,
               const CollectiveConfig& config, Workspace& workspace) {
  const int size = comm.size();
  const int rank = comm.rank();
  const size_t total = buffer.bytes();
  if (size == 1 || total == 0) return;
  const int position = (rank - root + size) % size;
  const int prev = (rank - 1 + size) % size;
  const int next = (rank + 1) % size;
  const bool receives = position > 0;
  const bool sends = position < size - 1;
  const size_t segment = std::max<size_t>(1, segment_bytes_for(comm, config));
  const size_t segments = (total + segment - 1) / segment;
  const size_t window = static_cast<size_t>(std::max(1, config.in_flight));
  std::byte* recv_slots = workspace.get(Workspace::kRingRecvSlots, window * segment);
  std::byte* send_slots = workspace.get(Workspace::kRingSendSlots, window * segment);

  struct Op {
    TransferPtr transfer;
    int slot = -1;
    bool done = false;
  };
  std::vector<Op> recvs(receives ? segments : 0), sends_ops(sends ? segments : 0);
  std::vector<int> free_recv, free_send;
  for (int s = static_cast<int>(window) - 1; s >= 0; --s) {
    free_recv.push_back(s);
    free_send.push_back(s);
  }
  auto seg_offset = [&](size_t s) { return s * segment; };
  auto seg_bytes = [&](size_t s) { return std::min(segment, total - s * segment); };

  size_t next_recv = 0, next_send = 0;
  std::deque<size_t> active_recvs, active_sends;
  Waiter waiter(comm, "broadcast");
  while (next_recv < recvs.size() || next_send < sends_ops.size() || !active_recvs.empty() ||
         !active_sends.empty()) {
    bool progressed = false;
    while (next_recv < recvs.size() && active_recvs.size() < window) {
      Op& op = recvs[next_recv];
      Span piece{};
      std::byte* target;
      if (buffer.contiguous(seg_offset(next_recv), seg_bytes(next_recv), &piece)) {
        target = piece.out;
      } else {
        if (free_recv.empty()) break;
        op.slot = free_recv.back();
        free_recv.pop_back();
        target = recv_slots + static_cast<size_t>(op.slot) * segment;
      }
      op.transfer = comm.irecv(target, seg_bytes(next_recv), prev, kTagBroadcast);
      active_recvs.push_back(next_recv++);
      progressed = true;
    }
    while (next_send < sends_ops.size() && active_sends.size() < window &&
           (!receives || recvs[next_send].done)) {
      Op& op = sends_ops[next_send];
      Span piece{};
      const std::byte* source;
      if (buffer.contiguous(seg_offset(next_send), seg_bytes(next_send), &piece)) {
        source = receives ? piece.out : piece.in;
      } else {
        if (free_send.empty()) break;
        op.slot = free_send.back();
        free_send.pop_back();
        std::byte* staging = send_slots + static_cast<size_t>(op.slot) * segment;
        if (receives) {
          buffer.gather_out(seg_offset(next_send), seg_bytes(next_send), staging);
        } else {
          buffer.gather_in(seg_offset(next_send), seg_bytes(next_send), staging);
        }
        source = staging;
      }
      op.transfer = comm.isend(source, seg_bytes(next_send), next, kTagBroadcast);
      active_sends.push_back(next_send++);
      progressed = true;
    }
    for (auto it = active_recvs.begin(); it != active_recvs.end();) {
      Op& op = recvs[*it];
      if (!op.transfer->test()) {
        ++it;
        continue;
      }
      if (op.slot >= 0) {
        buffer.scatter_out(seg_offset(*it), seg_bytes(*it),
                           recv_slots + static_cast<size_t>(op.slot) * segment);
        free_recv.push_back(op.slot);
      }
      op.done = true;
      op.transfer.reset();
      it = active_recvs.erase(it);
      progressed = true;
    }
    for (auto it = active_sends.begin(); it != active_sends.end();) {
      Op& op = sends_ops[*it];
      if (!op.transfer->test()) {
        ++it;
        continue;
      }
      if (op.slot >= 0) free_send.push_back(op.slot);
      op.done = true;
      op.transfer.reset();
      it = active_sends.erase(it);
      progressed = true;
    }
    if (progressed) {
      waiter.progressed();
    } else {
      waiter.idle(active_recvs.empty() ? next : prev);
    }
  }
}

void allgatherv(Communicator& comm, const void* in, void* out,
                const std::vector<size_t>& block_bytes, const CollectiveConfig& config,
                Workspace& workspace) {
  const size_t size = static_cast<size_t>(comm.size());
  DS_ASSERT(block_bytes.size() == size, "one block size per rank");
  std::vector<size_t> bounds(size + 1, 0);
  for (size_t r = 0; r < size; ++r) bounds[r + 1] = bounds[r] + block_bytes[r];
  // Only this rank's block of the in side is ever read; the rest of the span's in pointer is
  // never dereferenced, so the span is laid over `out` and its own block points at `in`.
  const size_t rank = static_cast<size_t>(comm.rank());
  auto* out_bytes = static_cast<std::byte*>(out);
  SpanList buffer;
  buffer.add(out_bytes, out_bytes, bounds[rank]);
  buffer.add(in, out_bytes + bounds[rank], block_bytes[rank]);
  buffer.add(out_bytes + bounds[rank + 1], out_bytes + bounds[rank + 1], bounds[size] - bounds[rank + 1]);
  ring_collective(comm, buffer, bounds, RingPhases::kAllgather, DataType::kUInt8, ReduceOp::kSum,
                  Scaling{}, config, workspace, kTagAllgather);
}

void alltoallv(Communicator& comm, const void* in, const std::vector<size_t>& send_bytes,
               void* out, const std::vector<size_t>& recv_bytes) {
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
          comm.irecv(out_bytes + recv_offsets[index], recv_bytes[index], from, kTagAlltoall), from);
    }
  }
  for (int distance = 1; distance < size; ++distance) {
    const int to = (rank + distance) % size;
    const size_t index = static_cast<size_t>(to);
    if (send_bytes[index] > 0) {
      transfers.emplace_back(
          comm.isend(in_bytes + send_offsets[index], send_bytes[index], to, kTagAlltoall), to);
    }
  }
  wait_all(comm, transfers, "alltoall");
}

void reducescatter(Communicator& comm, const void* in, void* out, void* scratch,
                   const std::vector<size_t>& element_bounds, DataType dtype, ReduceOp op,
                   const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace) {
  const size_t element_bytes = dtype_size(dtype);
  const size_t rank = static_cast<size_t>(comm.rank());
  std::vector<size_t> bounds(element_bounds.size());
  for (size_t i = 0; i < bounds.size(); ++i) bounds[i] = element_bounds[i] * element_bytes;
  const auto* in_bytes = static_cast<const std::byte*>(in);
  auto* scratch_bytes = static_cast<std::byte*>(scratch);
  SpanList buffer;
  buffer.add(in_bytes, scratch_bytes, bounds[rank]);
  buffer.add(in_bytes + bounds[rank], out, bounds[rank + 1] - bounds[rank]);
  buffer.add(in_bytes + bounds[rank + 1], scratch_bytes + bounds[rank + 1],
             bounds.back() - bounds[rank + 1]);
  ring_collective(comm, buffer, bounds, RingPhases::kReduceScatter, dtype, op, scaling, config,
                  workspace, kTagReduceScatter);
}

std::vector<std::vector<uint8_t>> gather_bytes(Communicator& comm, const std::vector<uint8_t>& mine,
                                               int root, int tag) {
  const int size = comm.size();
  std::vector<std::vector<uint8_t>> all;
  if (comm.rank() != root) {
    const uint64_t length = mine.size();
    std::vector<std::pair<TransferPtr, int>> transfers;
    transfers.emplace_back(comm.isend(&length, sizeof(length), root, tag), root);
    if (length > 0) transfers.emplace_back(comm.isend(mine.data(), mine.size(), root, tag), root);
    wait_all(comm, transfers, "negotiation (sending requests to the coordinator)");
    return all;
  }
  all.resize(static_cast<size_t>(size));
  std::vector<uint64_t> lengths(static_cast<size_t>(size), 0);
  std::vector<std::pair<TransferPtr, int>> transfers;
  for (int peer = 0; peer < size; ++peer) {
    if (peer == root) continue;
    transfers.emplace_back(comm.irecv(&lengths[static_cast<size_t>(peer)], sizeof(uint64_t), peer, tag), peer);
  }
  wait_all(comm, transfers, "negotiation (coordinator gathering requests)");
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
  wait_all(comm, transfers, "negotiation (coordinator gathering requests)");
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
  wait_all(comm, transfers, "negotiation (forwarding the coordinator's responses)");
}

}  // namespace dist_sync
