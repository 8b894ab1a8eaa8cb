// Growing an MPI job: processes started with MPI_Comm_spawn and merged with their parents into
// one communicator (Note [Growing back to the launched size]).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/mpi_comm.h"

namespace dist_sync {

// Note [Growing back to the launched size]
// Spawning is collective over the parents and blocks until every spawned process has called
// MPI_Init, which for a Python process means seconds of imports (or for ever, if it dies
// before). So the parents spawn on a thread of their own, over a duplicate of their control
// communicator, and keep training meanwhile; the spawned processes wait in MPI_Intercomm_merge
// (inside dist_sync.init()) until the parents, at a commit where every one of them has seen the
// spawn complete, merge too. The merged communicator numbers the parents first, in their order,
// then the spawned processes, and the engine is rebuilt over it exactly as after a shrink.

// The processes one spawn started: the intercommunicator to them, until it is merged.
class SpawnedRanks {
 public:
  // Collective over `parents` (MPI_Comm_spawn, root 0): `count` processes running `command`
  // with `args`. Error with MPI's text if the launcher cannot start them.
  static std::unique_ptr<SpawnedRanks> spawn(const MpiCommunicator& parents,
                                             const std::string& command,
                                             const std::vector<std::string>& args, int count);
  ~SpawnedRanks();
  SpawnedRanks(const SpawnedRanks&) = delete;
  SpawnedRanks& operator=(const SpawnedRanks&) = delete;

  // Collective over the parents and the spawned processes: one communicator of them all,
  // parents first. Consumes the intercommunicator.
  std::unique_ptr<MpiCommunicator> merge();
  // The spawned processes waiting in their merge fail instead (not collective).
  void revoke();

 private:
  SpawnedRanks();
  std::unique_ptr<MpiCommunicator::Handle> intercomm_;
};

// On a process MPI_Comm_spawn started: the communicator of its parents and the processes
// spawned with it (collective over them, with the parents' SpawnedRanks::merge()); null on a
// process that was launched, not spawned.
std::unique_ptr<MpiCommunicator> mpi_merge_with_parents();

// On a spawned process that ends without MPI_Finalize (see the Note below): tells the launcher
// it ended properly. Does nothing where the MPI has no PMIx (only Open MPI spawns here).
void mpi_spawned_process_ends();

// Note [A spawned process ends without MPI_Finalize]
// MPI_Finalize in a spawned process crashes in Open MPI's dynamic-process teardown (its parents
// lost ranks and never finalize), so it skips it, as the survivors do. mpirun --with-ft ulfm
// forgives that in the job it launched but not in a job spawned later: without a word to the
// launcher, the whole run would end with exit status 1 after training went well. Finalizing the
// process's PMIx client (Open MPI's link to its launcher, already loaded with libmpi) is that
// word.

}  // namespace dist_sync
