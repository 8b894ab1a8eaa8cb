#include "collectives/broadcast.h"

#include <algorithm>
#include <deque>

namespace dist_sync {

void broadcast(Communicator& comm, const SpanList& buffer, int root,
               const CollectiveConfig& config, Workspace& workspace, int tag) {
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
      op.transfer = comm.irecv(target, seg_bytes(next_recv), prev, tag);
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
      op.transfer = comm.isend(source, seg_bytes(next_send), next, tag);
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

}  // namespace dist_sync
