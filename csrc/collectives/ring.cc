#include "collectives/ring.h"

#include <algorithm>
#include <deque>

#include "collectives/segments.h"
#include "common/page_backing.h"

namespace dist_sync {
namespace {

struct SegmentOp {
  int step;
  size_t offset;  // in bytes, into the buffer
  size_t bytes;
  TransferPtr transfer;
  int slot = -1;  // scratch slot holding the data, if any
  bool done = false;
};

// The tensor memory segments may be sent straight from: spans long enough to get segments of
// their own (Note [Segments follow tensors]).
std::vector<MemoryRange> direct_send_candidates(const SpanList& buffer, size_t segment_bytes) {
  std::vector<MemoryRange> ranges;
  for (const Span& span : buffer.spans()) {
    if (span.bytes < segment_bytes) continue;
    ranges.push_back(MemoryRange{span.in, span.bytes});
    if (span.out != nullptr && span.out != span.in) ranges.push_back(MemoryRange{span.out, span.bytes});
  }
  return ranges;
}

class RingRun {
 public:
  RingRun(Communicator& comm, const SpanList& buffer, const std::vector<size_t>& bounds,
          RingPhases ring_phases, DataType dtype, ReduceOp op, const Scaling& scaling,
          const CollectiveConfig& config, Workspace& workspace, int tag, PhaseLog* phases)
      : comm_(comm), phases_(phases), buffer_(buffer), bounds_(bounds), dtype_(dtype), op_(op), scaling_(scaling),
        tag_(tag), rank_(comm.rank()), size_(comm.size()),
        element_bytes_(dtype_size(dtype)),
        window_(static_cast<size_t>(std::max(1, config.in_flight))),
        has_reduce_scatter_(ring_phases != RingPhases::kAllgather),
        first_step_(ring_phases == RingPhases::kAllgather ? size_ - 1 : 0),
        last_step_(ring_phases == RingPhases::kReduceScatter ? size_ - 2 : 2 * size_ - 3),
        segment_bytes_(std::max(element_bytes_,
                                segment_bytes_for(comm, config) / element_bytes_ * element_bytes_)),
        huge_pages_(direct_send_candidates(buffer, segment_bytes_)) {
    recv_slots_ = workspace.get(Workspace::kRingRecvSlots, window_ * segment_bytes_);
    send_slots_ = workspace.get(Workspace::kRingSendSlots, window_ * segment_bytes_);
    for (int slot = static_cast<int>(window_) - 1; slot >= 0; --slot) {
      free_recv_slots_.push_back(slot);
      free_send_slots_.push_back(slot);
    }
    build_schedule();
    for (const SegmentOp& op : recvs_) {
      if (has_reduce_scatter_ && reduces_at(op.step)) ++reduce_scatter_recvs_left_;
    }
  }

  void run() {
    if (!has_reduce_scatter_) copy_own_chunk();
    if (has_reduce_scatter_ && reduce_scatter_recvs_left_ == 0) end_phase(phases_, "RING_REDUCE_SCATTER");
    const int left = (rank_ - 1 + size_) % size_;
    const int right = (rank_ + 1) % size_;
    Waiter waiter(comm_, has_reduce_scatter_ ? "ring allreduce" : "ring allgather");
    size_t next_recv = 0, next_send = 0;
    std::deque<size_t> active_recvs, active_sends;
    while (!(next_recv == recvs_.size() && next_send == sends_.size() && active_recvs.empty() &&
             active_sends.empty())) {
      bool progressed = false;
      // Receives first, so an arriving segment finds its buffer posted.
      while (next_recv < recvs_.size() && active_recvs.size() < window_ && post_recv(next_recv, left)) {
        active_recvs.push_back(next_recv++);
        progressed = true;
      }
      while (next_send < sends_.size() && active_sends.size() < window_ && post_send(next_send, right)) {
        active_sends.push_back(next_send++);
        progressed = true;
      }
      for (auto it = active_recvs.begin(); it != active_recvs.end();) {
        if (recvs_[*it].transfer->test()) {
          finish_recv(*it);
          it = active_recvs.erase(it);
          progressed = true;
        } else {
          ++it;
        }
      }
      for (auto it = active_sends.begin(); it != active_sends.end();) {
        if (sends_[*it].transfer->test()) {
          finish_send(*it);
          it = active_sends.erase(it);
          progressed = true;
        } else {
          ++it;
        }
      }
      if (progressed) {
        waiter.progressed();
      } else {
        waiter.idle(active_recvs.empty() ? right : left);
      }
    }
    if (last_step_ >= size_ - 1) end_phase(phases_, "RING_ALLGATHER");
  }

 private:
  int chunk_sent_at(int step) const { return ((rank_ - step - 1) % size_ + size_) % size_; }
  int chunk_received_at(int step) const { return ((rank_ - step - 2) % size_ + size_) % size_; }
  bool reduces_at(int step) const { return step <= size_ - 2; }

  void add_segments(std::vector<SegmentOp>& ops, int step, int chunk) {
    for (const Extent& segment : chunk_segments_[static_cast<size_t>(chunk)]) {
      ops.push_back(SegmentOp{step, segment.offset, segment.bytes, nullptr});
    }
  }

  void build_schedule() {
    for (int chunk = 0; chunk < size_; ++chunk) {
      const size_t begin = bounds_[static_cast<size_t>(chunk)];
      chunk_segments_.push_back(plan_segments(buffer_, begin,
                                              bounds_[static_cast<size_t>(chunk) + 1] - begin,
                                              segment_bytes_, element_bytes_));
    }
    for (int step = first_step_; step <= last_step_; ++step) {
      send_begin_.push_back(sends_.size());
      recv_begin_.push_back(recvs_.size());
      add_segments(sends_, step, chunk_sent_at(step));
      add_segments(recvs_, step, chunk_received_at(step));
    }
    send_begin_.push_back(sends_.size());
    recv_begin_.push_back(recvs_.size());
  }

  // Index of segment `segment` of step `step` (steps share their chunk with the neighbour step).
  size_t send_index(int step, size_t segment) const {
    return send_begin_[static_cast<size_t>(step - first_step_)] + segment;
  }
  size_t recv_index(int step, size_t segment) const {
    return recv_begin_[static_cast<size_t>(step - first_step_)] + segment;
  }
  size_t segment_of(const std::vector<size_t>& begins, const SegmentOp& op, size_t index) const {
    return index - begins[static_cast<size_t>(op.step - first_step_)];
  }

  void copy_own_chunk() {
    const size_t begin = bounds_[static_cast<size_t>(rank_)];
    buffer_.for_each(begin, bounds_[static_cast<size_t>(rank_) + 1] - begin,
                     [](const std::byte* in, std::byte* out, size_t n) {
                       if (in != out) std::memcpy(out, in, n);
                     });
  }

  bool post_recv(size_t index, int left) {
    SegmentOp& op = recvs_[index];
    Span piece{};
    const bool reduce = has_reduce_scatter_ && reduces_at(op.step);
    if (!reduce && has_reduce_scatter_) {
      // The allgather overwrites this region of out; the reduce-scatter send that read it
      // (N-1 steps earlier) must be finished (Note [Ring schedule]).
      const size_t segment = segment_of(recv_begin_, op, index);
      if (!sends_[send_index(op.step + 1 - size_, segment)].done) return false;
    }
    std::byte* target = nullptr;
    if (!reduce && buffer_.contiguous(op.offset, op.bytes, &piece)) {
      target = piece.out;
    } else {
      if (free_recv_slots_.empty()) return false;
      op.slot = free_recv_slots_.back();
      free_recv_slots_.pop_back();
      target = recv_slots_ + static_cast<size_t>(op.slot) * segment_bytes_;
    }
    op.transfer = comm_.irecv(target, op.bytes, left, tag_);
    return true;
  }

  void finish_recv(size_t index) {
    SegmentOp& op = recvs_[index];
    op.done = true;
    op.transfer.reset();
    if (op.slot < 0) return;
    const std::byte* data = recv_slots_ + static_cast<size_t>(op.slot) * segment_bytes_;
    if (has_reduce_scatter_ && reduces_at(op.step)) {
      const bool finalize = op.step == size_ - 2;
      buffer_.for_each(op.offset, op.bytes, [&](const std::byte* in, std::byte* out, size_t n) {
        DS_ASSERT(out != nullptr, "ring needs an output for every chunk");
        reduce(out, in, data, n / element_bytes_, dtype_, op_, scaling_, finalize);
        data += n;
      });
      if (--reduce_scatter_recvs_left_ == 0) end_phase(phases_, "RING_REDUCE_SCATTER");
    } else {
      buffer_.scatter_out(op.offset, op.bytes, data);
    }
    free_recv_slots_.push_back(op.slot);
    op.slot = -1;
  }

  bool post_send(size_t index, int right) {
    SegmentOp& op = sends_[index];
    if (op.step != first_step_) {
      const size_t segment = segment_of(send_begin_, op, index);
      if (!recvs_[recv_index(op.step - 1, segment)].done) return false;
    }
    // The first step sends this rank's own input; later steps forward what arrived into out.
    const bool from_input = op.step == first_step_;
    const bool needs_prescale = from_input && has_reduce_scatter_ && scaling_.has_prescale();
    Span piece{};
    const std::byte* source = nullptr;
    if (!needs_prescale && buffer_.contiguous(op.offset, op.bytes, &piece) &&
        huge_pages_.covers(from_input ? piece.in : piece.out, op.bytes)) {
      source = from_input ? piece.in : piece.out;
    } else {
      if (free_send_slots_.empty()) return false;
      op.slot = free_send_slots_.back();
      free_send_slots_.pop_back();
      std::byte* staging = send_slots_ + static_cast<size_t>(op.slot) * segment_bytes_;
      if (!from_input) {
        buffer_.gather_out(op.offset, op.bytes, staging);
      } else if (!needs_prescale) {
        buffer_.gather_in(op.offset, op.bytes, staging);
      } else {
        std::byte* cursor = staging;
        buffer_.for_each(op.offset, op.bytes, [&](const std::byte* in, std::byte*, size_t n) {
          scale_copy(cursor, in, n / element_bytes_, dtype_, scaling_.prescale, 1);
          cursor += n;
        });
      }
      source = staging;
    }
    op.transfer = comm_.isend(source, op.bytes, right, tag_);
    return true;
  }

  void finish_send(size_t index) {
    SegmentOp& op = sends_[index];
    op.done = true;
    op.transfer.reset();
    if (op.slot >= 0) {
      free_send_slots_.push_back(op.slot);
      op.slot = -1;
    }
  }

  Communicator& comm_;
  PhaseLog* const phases_;
  size_t reduce_scatter_recvs_left_ = 0;
  const SpanList& buffer_;
  const std::vector<size_t>& bounds_;
  const DataType dtype_;
  const ReduceOp op_;
  const Scaling scaling_;
  const int tag_;
  const int rank_;
  const int size_;
  const size_t element_bytes_;
  const size_t window_;
  const bool has_reduce_scatter_;
  const int first_step_;
  const int last_step_;
  const size_t segment_bytes_;
  std::byte* recv_slots_ = nullptr;
  std::byte* send_slots_ = nullptr;
  std::vector<int> free_recv_slots_;
  std::vector<int> free_send_slots_;
  const HugePageMap huge_pages_;
  std::vector<std::vector<Extent>> chunk_segments_;
  std::vector<SegmentOp> sends_;
  std::vector<SegmentOp> recvs_;
  std::vector<size_t> send_begin_;
  std::vector<size_t> recv_begin_;
};

// One rank: the result is this rank's input, scaled.
void single_rank(const SpanList& buffer, RingPhases phases, DataType dtype, const Scaling& scaling) {
  const size_t element_bytes = dtype_size(dtype);
  const bool reduces = phases != RingPhases::kAllgather;
  for (const Span& span : buffer.spans()) {
    if (span.out == nullptr) continue;
    const size_t count = span.bytes / element_bytes;
    if (!reduces) {
      if (span.out != span.in) std::memcpy(span.out, span.in, span.bytes);
      continue;
    }
    scale_copy(span.out, span.in, count, dtype, scaling.prescale, 1);
    scale_copy(span.out, span.out, count, dtype, scaling.postscale, scaling.divisor);
  }
}

}  // namespace

std::vector<size_t> even_chunk_bounds(size_t count, int size, size_t element_bytes) {
  const size_t ranks = static_cast<size_t>(size);
  std::vector<size_t> bounds(ranks + 1, 0);
  const size_t base = count / ranks;
  const size_t extra = count % ranks;
  for (size_t c = 0; c < ranks; ++c) {
    bounds[c + 1] = bounds[c] + (base + (c < extra ? 1 : 0)) * element_bytes;
  }
  return bounds;
}

void ring_collective(Communicator& comm, const SpanList& buffer,
                     const std::vector<size_t>& chunk_bounds, RingPhases ring_phases, DataType dtype,
                     ReduceOp op, const Scaling& scaling, const CollectiveConfig& config,
                     Workspace& workspace, int tag, PhaseLog* phases) {
  DS_ASSERT(chunk_bounds.size() == static_cast<size_t>(comm.size()) + 1, "need N+1 chunk bounds");
  DS_ASSERT(chunk_bounds.back() == buffer.bytes(), "chunks must cover the buffer");
  if (comm.size() == 1) {
    single_rank(buffer, ring_phases, dtype, scaling);
    end_phase(phases, "SINGLE_RANK_COPY");
    return;
  }
  RingRun(comm, buffer, chunk_bounds, ring_phases, dtype, op, scaling, config, workspace, tag, phases).run();
}

}  // namespace dist_sync
