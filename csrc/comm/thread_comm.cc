#include "comm/thread_comm.h"

#include <cstring>

#include "common/errors.h"

namespace dist_sync {

// Shared by the sender's and the receiver's Transfer; whoever matches second does the copy.
struct ThreadFabric::Completion {
  std::atomic<bool> done{false};
  std::atomic<bool> truncated{false};
};

namespace {

class ThreadTransfer final : public Transfer {
 public:
  ThreadTransfer(std::shared_ptr<ThreadFabric::Completion> completion, const ThreadFabric& fabric,
                 int self, int peer, bool is_send)
      : completion_(std::move(completion)), fabric_(fabric), self_(self), peer_(peer),
        is_send_(is_send) {}

  bool test() override {
    if (completion_->done.load(std::memory_order_acquire)) {
      if (completion_->truncated.load()) {
        throw CommError(detail::concat("message from rank ", is_send_ ? self_ : peer_, " to rank ",
                                       is_send_ ? peer_ : self_,
                                       " is larger than the posted receive"),
                        peer_);
      }
      return true;
    }
    if (fabric_.is_dead(peer_) || fabric_.is_dead(self_)) {
      throw CommError(detail::concat(is_send_ ? "sending to" : "receiving from", " rank ", peer_,
                                     " failed: rank ", fabric_.is_dead(peer_) ? peer_ : self_,
                                     " is dead"),
                      peer_);
    }
    return false;
  }

 private:
  std::shared_ptr<ThreadFabric::Completion> completion_;
  const ThreadFabric& fabric_;
  int self_;
  int peer_;
  bool is_send_;
};

void deliver(const ThreadFabric::Posted& send, const ThreadFabric::Posted& recv) {
  const bool truncated = send.bytes > recv.bytes;
  if (!truncated && send.bytes > 0) std::memcpy(recv.recv_data, send.send_data, send.bytes);
  for (const auto* posted : {&send, &recv}) {
    posted->completion->truncated.store(truncated);
    posted->completion->done.store(true, std::memory_order_release);
  }
}

}  // namespace

ThreadFabric::ThreadFabric(int size) : dead_(new std::atomic<bool>[static_cast<size_t>(size)]) {
  DS_ASSERT(size >= 1);
  for (int r = 0; r < size; ++r) {
    mailboxes_.push_back(std::make_unique<Mailbox>());
    dead_[static_cast<size_t>(r)].store(false);
  }
}

void ThreadFabric::kill_rank(int rank) { dead_[static_cast<size_t>(rank)].store(true); }

TransferPtr ThreadCommunicator::isend(const void* data, size_t bytes, int peer, int tag) {
  DS_ASSERT(peer >= 0 && peer < size(), "bad peer ", peer);
  auto completion = std::make_shared<ThreadFabric::Completion>();
  ThreadFabric::Posted send{rank_, tag, nullptr, static_cast<const std::byte*>(data), bytes,
                            completion};
  ThreadFabric::Mailbox& box = *fabric_->mailboxes_[static_cast<size_t>(peer)];
  {
    std::lock_guard<std::mutex> lock(box.mutex);
    auto match = box.recvs.begin();
    while (match != box.recvs.end() && !(match->peer == rank_ && match->tag == tag)) ++match;
    if (match != box.recvs.end()) {
      deliver(send, *match);
      box.recvs.erase(match);
    } else {
      box.sends.push_back(send);
    }
  }
  return std::make_unique<ThreadTransfer>(completion, *fabric_, rank_, peer, true);
}

TransferPtr ThreadCommunicator::irecv(void* data, size_t bytes, int peer, int tag) {
  DS_ASSERT(peer >= 0 && peer < size(), "bad peer ", peer);
  auto completion = std::make_shared<ThreadFabric::Completion>();
  ThreadFabric::Posted recv{peer, tag, static_cast<std::byte*>(data), nullptr, bytes, completion};
  ThreadFabric::Mailbox& box = *fabric_->mailboxes_[static_cast<size_t>(rank_)];
  {
    std::lock_guard<std::mutex> lock(box.mutex);
    auto match = box.sends.begin();
    while (match != box.sends.end() && !(match->peer == peer && match->tag == tag)) ++match;
    if (match != box.sends.end()) {
      deliver(*match, recv);
      box.sends.erase(match);
    } else {
      box.recvs.push_back(recv);
    }
  }
  return std::make_unique<ThreadTransfer>(completion, *fabric_, rank_, peer, false);
}

void ThreadCommunicator::check_peer(int peer) const {
  if (peer >= 0 && fabric_->is_dead(peer)) {
    throw CommError(detail::concat("rank ", peer, " is dead"), peer);
  }
}

}  // namespace dist_sync
