// Ranks as threads of one process: the same Communicator interface over shared memory, so the
// algorithms can be tested for many ranks and sizes in milliseconds, and faults injected.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "comm/communicator.h"

namespace dist_sync {

// The shared state of one group of thread ranks: a mailbox per rank.
class ThreadFabric {
 public:
  explicit ThreadFabric(int size);
  int size() const { return static_cast<int>(mailboxes_.size()); }
  // Fault injection: every transfer to or from `rank`, pending or future, fails.
  void kill_rank(int rank);
  bool is_dead(int rank) const { return dead_[static_cast<size_t>(rank)].load(); }

  // Matching state, shared with the transfers (implementation detail of thread_comm.cc).
  struct Completion;
  struct Posted {
    int peer;
    int tag;
    std::byte* recv_data;        // receives
    const std::byte* send_data;  // sends
    size_t bytes;
    std::shared_ptr<Completion> completion;
  };

 private:
  friend class ThreadCommunicator;
  struct Mailbox {
    std::mutex mutex;
    std::deque<Posted> sends;  // sends addressed to this rank, not yet matched
    std::deque<Posted> recvs;  // receives posted by this rank, not yet matched
  };
  std::vector<std::unique_ptr<Mailbox>> mailboxes_;
  std::unique_ptr<std::atomic<bool>[]> dead_;
};

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadFabric> fabric, int rank)
      : fabric_(std::move(fabric)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return fabric_->size(); }
  TransferPtr isend(const void* data, size_t bytes, int peer, int tag) override;
  TransferPtr irecv(void* data, size_t bytes, int peer, int tag) override;
  void check_peer(int peer) const override;

 private:
  std::shared_ptr<ThreadFabric> fabric_;
  int rank_;
};

}  // namespace dist_sync
