// The MPI Communicator, and the process-wide MPI lifecycle. The only header that knows MPI
// exists; mpi.h itself stays inside mpi_comm.cc.
#pragma once

#include <cstdint>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"

namespace dist_sync {

struct Topology {
  int local_rank = 0;  // rank among the processes on this host
  int local_size = 1;
  int cross_rank = 0;  // index of this host among the hosts
  int cross_size = 1;
  bool homogeneous = true;  // every host runs the same number of ranks
};

// Initialises MPI if nobody has (asking for MPI_THREAD_MULTIPLE so user code may use mpi4py
// alongside), and checks the thread level allows our background thread to call MPI.
void mpi_initialize();
// Finalises MPI if mpi_initialize() was the one that initialised it.
void mpi_finalize_if_owned();
bool mpi_is_finalized();
// The thread level MPI was initialised with (MPI_THREAD_SINGLE=0 .. MPI_THREAD_MULTIPLE=3), or
// -1 before initialisation.
int mpi_thread_level();
// Library name and version, for logs and the benchmark header.
std::string mpi_library_version();

// Note [Surviving a lost rank]
// Under Open MPI's User-Level Failure Mitigation (built with the ftmpi extension and launched
// with `mpirun --with-ft ulfm`), a call involving a dead rank returns MPI_ERR_PROC_FAILED instead
// of the job being killed. The communicator whose call failed is then revoked at once, so every
// survivor's pending call on it fails too (MPI_ERR_REVOKED) instead of waiting for a neighbour
// that has stopped, and the process remembers that a peer was lost (mpi_peer_lost) for the
// elastic front end, which shrinks the communicator and builds a new engine over the survivors.
// True when the MPI library has ULFM and the job was launched with it enabled.
bool mpi_fault_tolerant();
// A communication failure since the last mpi_clear_peer_lost() was a lost (or revoked) peer.
bool mpi_peer_lost();
void mpi_clear_peer_lost();

class MpiCommunicator : public Communicator {
 public:
  // Duplicates the communicator whose Fortran handle is `parent_f2c` (MPI_COMM_WORLD if -1),
  // so our traffic never matches user messages.
  // Collective over the parent communicator (-1: MPI_COMM_WORLD). Waits at most `timeout`
  // (0: forever) for every rank of the parent to arrive, calling `between_polls` while it
  // waits (it may throw to give up, e.g. on Ctrl-C); Error naming this rank past the timeout.
  static std::unique_ptr<MpiCommunicator> create(int64_t parent_f2c,
                                                 std::chrono::duration<double> timeout,
                                                 const std::function<void()>& between_polls);
  // The same over `parent` (a communicator shrunk to the survivors).
  static std::unique_ptr<MpiCommunicator> create(const MpiCommunicator& parent,
                                                 std::chrono::duration<double> timeout,
                                                 const std::function<void()>& between_polls);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  TransferPtr isend(const void* data, size_t bytes, int peer, int tag) override;
  TransferPtr irecv(void* data, size_t bytes, int peer, int tag) override;
  void shift(const void* send, int to, void* recv, int from, size_t bytes, int tag,
             const char* what) override;
  void check_peer(int peer) const override;
  std::string describe_rank(int peer) const override;
  bool single_host() const override;

  const Topology& topology() const { return topology_; }
  // (rank, pid) of every other rank on this host, for the SIGTERM report
  // (Note [Saying why mpirun ended a rank]).
  std::vector<std::pair<int, int32_t>> same_host_peers() const;
  // The ranks on this host, and the ranks with this rank's local rank (one per host), for the
  // hierarchical allreduce. Collective over this communicator.
  std::unique_ptr<MpiCommunicator> split_local() const;
  std::unique_ptr<MpiCommunicator> split_cross() const;
  // Process sets (Note [One engine per process set]). Each is collective over this communicator
  // and meant for the thread that created it, never the engine thread (give the engine another
  // duplicate). Every rank must arrive within `timeout` (0: forever); `between_polls` as in
  // create().
  std::unique_ptr<MpiCommunicator> duplicate() const;
  // The communicator of `members` (ranks of this communicator, ascending, no duplicates), or
  // null on a rank that is not one of them.
  std::unique_ptr<MpiCommunicator> split_members(const std::vector<int>& members) const;
  // Every rank's bytes, in rank order.
  std::vector<std::vector<uint8_t>> allgather_bytes(const std::vector<uint8_t>& mine,
                                                    std::chrono::duration<double> timeout,
                                                    const std::function<void()>& between_polls) const;
  // Note [Surviving a lost rank]. revoke(): every pending and future call on this communicator
  // fails on every rank (not collective; a no-op without ULFM). shrink(): the survivors' new
  // communicator, ranks renumbered in the old order (collective over the survivors; needs
  // mpi_fault_tolerant()).
  void revoke() override;
  // MPI's text for a failed call's `code`; for a lost peer, which ranks this communicator has
  // lost (or that it was revoked because a rank was lost elsewhere).
  std::string explain_failure(int code) const;
  std::unique_ptr<MpiCommunicator> shrink() const;
  // Ends the job: MPI_Abort on this communicator.
  [[noreturn]] void abort_job(int exit_code) const;

 private:
  struct Handle;
  friend class SpawnedRanks;  // adopts the communicators MPI_Intercomm_merge makes
  friend std::unique_ptr<MpiCommunicator> mpi_merge_with_parents();
  explicit MpiCommunicator(std::unique_ptr<Handle> handle);
  // Takes ownership of an MPI communicator: error handler, rank, size, pids and hosts.
  static std::unique_ptr<MpiCommunicator> adopt(std::unique_ptr<Handle> handle);
  static std::unique_ptr<MpiCommunicator> create_over(const Handle& parent,
                                                      std::chrono::duration<double> timeout,
                                                      const std::function<void()>& between_polls);

  std::unique_ptr<Handle> handle_;
  int rank_ = 0;
  int size_ = 1;
  Topology topology_;
  std::vector<int32_t> pids_;
  std::vector<std::string> hosts_;
};

}  // namespace dist_sync
