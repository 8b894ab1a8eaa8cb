// The point-to-point interface every collective algorithm is written against.
//
// Two implementations: MpiCommunicator (the real thing, over a duplicated MPI communicator) and
// ThreadCommunicator (ranks are threads of one process, for fast exhaustive tests and fault
// injection). Algorithms never see which one they run on.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/waiter.h"

namespace dist_sync {

// One posted send or receive. The buffer must stay valid until test() has returned true.
class Transfer {
 public:
  virtual ~Transfer() = default;
  // True once complete. Throws CommError naming the peer if the transfer failed.
  virtual bool test() = 0;
};
using TransferPtr = std::unique_ptr<Transfer>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Non-blocking. Messages between one pair of ranks with one tag are matched in posting order.
  // Any byte count is allowed (split internally where the transport limits message size).
  virtual TransferPtr isend(const void* data, size_t bytes, int peer, int tag) = 0;
  virtual TransferPtr irecv(void* data, size_t bytes, int peer, int tag) = 0;

  // Sends `send` to `to` while receiving as many bytes from `from` into `recv`, and waits for
  // both. The latency-bound building block of recursive doubling and Bruck's allgather;
  // implementations may test both halves in one call (each MPI test runs the library's whole
  // progress engine).
  virtual void shift(const void* send, int to, void* recv, int from, size_t bytes, int tag,
                     const char* what) {
    TransferPtr receiving = irecv(recv, bytes, from, tag);
    TransferPtr sending = isend(send, bytes, to, tag);
    Waiter waiter(*this, what);
    bool received = false, sent = false;
    while (!(received && sent)) {
      bool progressed = false;
      if (!received && receiving->test()) received = progressed = true;
      if (!sent && sending->test()) sent = progressed = true;
      if (progressed) {
        waiter.progressed();
      } else {
        waiter.idle(received ? to : from);
      }
    }
  }
  // shift() with one peer on both sides: a pairwise exchange.
  void sendrecv(const void* send, void* recv, size_t bytes, int peer, int tag, const char* what) {
    shift(send, peer, recv, peer, bytes, tag, what);
  }

  // Throws CommError if `peer` is known to be gone. Called by Waiter during long waits, so a
  // dead rank is reported by name instead of waiting forever.
  virtual void check_peer(int peer) const = 0;

  // Makes every rank's pending and future calls on this communicator fail (Note [Surviving a
  // lost rank] in comm/mpi_comm.h); communicators without that notion do nothing.
  virtual void revoke() {}

  // True when every rank runs on this host (every rank agrees on the answer).
  virtual bool single_host() const { return true; }

  // A human-readable name for a rank in error messages ("rank 3 (pid 4242 on node-a)").
  virtual std::string describe_rank(int peer) const { return "rank " + std::to_string(peer); }

  const WaitConfig& wait_config() const { return wait_config_; }
  void set_wait_config(const WaitConfig& config) { wait_config_ = config; }

  // Blocks (politely, see Waiter) until the transfer completes.
  void wait(Transfer& transfer, const char* what, int peer) {
    Waiter waiter(*this, what);
    while (!transfer.test()) waiter.idle(peer);
  }

  // Blocks until every transfer completes; each is paired with its peer, and the first
  // unfinished one's peer is the one a long wait checks on.
  void wait_all(std::vector<std::pair<TransferPtr, int>>& transfers, const char* what);

 private:
  WaitConfig wait_config_;
};

}  // namespace dist_sync
