// The process's dist_sync session: its engine, its topology, and the module functions that
// start, stop and query it (init, shutdown, rank, ..., the timeline, _engine_stats).
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/mpi_comm.h"
#include "comm/mpi_spawn.h"
#include "engine/engine.h"

namespace dist_sync::python {

// A process set other than the global one (Note [One engine per process set]).
struct ProcessSetEntry {
  std::vector<int> ranks;         // ranks of the global set, ascending
  std::shared_ptr<Engine> engine;  // null on ranks that are not in the set
};

// Replacements being spawned on a thread of their own (Note [Growing back to the launched size]).
// Shared with that thread, which may outlive the session's interest in it (a spawned process
// that dies before MPI_Init leaves MPI_Comm_spawn waiting for ever).
struct PendingSpawn {
  enum State : int { kNone = 0, kRunning = 1, kReady = 2, kFailed = 3 };
  std::unique_ptr<MpiCommunicator> parents;  // a duplicate of the control communicator
  std::unique_ptr<SpawnedRanks> spawned;     // set before state becomes kReady
  std::string error;                         // set before state becomes kFailed
  std::atomic<int> state{kRunning};
  // Given up on (abandon_spawn): a spawn that completes after this revokes what it made, so the
  // processes it started fail in init() instead of waiting for a merge that will not come.
  std::atomic<bool> abandoned{false};
};

struct Session {
  // Shared: a thread waiting on a handle without the GIL holds a reference, so a shutdown() from
  // another thread cannot destroy the engine (its handle table, mutex and condition variable)
  // under that wait; the waiter wakes with the shutdown error and lets go.
  // Note [The engine pointer across threads]: init(), shutdown() and an elastic reset replace
  // it with the GIL released, and the C table's callers (TensorFlow kernels) read it on threads
  // that never hold the GIL, so every read and write goes through load_engine/store_engine
  // (std::atomic_load/store on the shared_ptr): a reader gets the old engine, kept alive by its
  // copy, or the new one, or none, never a torn pointer.
  std::shared_ptr<Engine> engine;
  Topology topology;
  // For the collectives of add/remove_process_set, which run on the calling thread while the
  // engines use their own communicators. Guarded by sets_mutex, as are `sets` and the ids.
  std::unique_ptr<MpiCommunicator> control;
  std::mutex sets_mutex;
  std::map<int32_t, ProcessSetEntry> sets;
  int32_t next_set_id = 1;
  EngineConfig set_config;             // what each set's engine runs with
  std::vector<SharedSetting> set_shared;
  std::string last_stop_reason;  // why the previous engine stopped, for errors after shutdown()
  // What the global engine runs with, kept for the engine an elastic reset builds.
  EngineConfig engine_config;
  std::vector<SharedSetting> engine_shared;
  // An elastic run has started (Note [Rebuilding the engine over the survivors]).
  std::atomic<bool> elastic{false};
  // An elastic reset has happened: MPI_Finalize could wait for ever on a transfer to a dead
  // rank, so the process ends without it (mpirun --with-ft ulfm accepts that).
  bool ranks_lost = false;
  std::shared_ptr<PendingSpawn> spawn;  // null when no replacements are being spawned
  // This process was spawned to replace lost ranks and init() merged it with the job.
  bool joined = false;
};

Session& session();
// Session::engine read and replaced atomically (Note [The engine pointer across threads]).
std::shared_ptr<Engine> load_engine(const Session& s);
void store_engine(Session& s, std::shared_ptr<Engine> engine);
// The running engine; DistSyncError before init(), after shutdown() and in a forked child.
Engine& engine();
// The same, kept alive for as long as the caller holds it (see Session::engine).
std::shared_ptr<Engine> shared_engine();
// The engine of process set `id` (0: the global one); DistSyncError for a removed or unknown
// set, ValueError on a rank that is not in it.
std::shared_ptr<Engine> process_set_engine(int32_t id);

// Handles of every set's engine share one number space: the set id in the top bits.
constexpr int kHandleSetShift = 48;
inline uint64_t make_handle(int32_t set_id, uint64_t handle) {
  return (static_cast<uint64_t>(set_id) << kHandleSetShift) | handle;
}
inline int32_t handle_set(uint64_t handle) { return static_cast<int32_t>(handle >> kHandleSetShift); }
inline uint64_t handle_local(uint64_t handle) {
  return handle & ((uint64_t{1} << kHandleSetShift) - 1);
}

// For the session's functions in other files (elastic.cc):
// Ctrl-C while waiting for the other ranks in a collective setup call raises KeyboardInterrupt.
void check_signals();
// Stops every process set's engine on this rank (collective within each set). With the GIL.
void stop_process_sets(Session& s, const std::string& reason);
// The global engine over `comm` (made by MpiCommunicator::create), with `control` as the
// communicator of the process-set calls and of an elastic reset's shrink. Without the GIL.
void start_engine(Session& s, std::unique_ptr<MpiCommunicator> comm,
                  std::unique_ptr<MpiCommunicator> control);

void bind_session(pybind11::module_& core);
// The _elastic_ functions (elastic.cc); bind_session calls it.
void bind_elastic(pybind11::module_& core);

}  // namespace dist_sync::python
