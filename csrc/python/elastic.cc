// Elastic training's side of the session: rebuilding the engine over the survivors of a lost
// rank, and over the survivors and the replacements spawned for them.
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "common/termination_report.h"
#include "python/session.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// Gives up on replacements being spawned: the spawning thread's call fails (its communicator is
// revoked) or, if it never returns, is left to itself; spawned processes waiting to merge fail.
void abandon_spawn(Session& s) {
  std::shared_ptr<PendingSpawn> pending = std::move(s.spawn);
  if (!pending) return;
  pending->abandoned = true;
  pending->parents->revoke();
  if (pending->state == PendingSpawn::kReady) pending->spawned->revoke();
}

// Note [Rebuilding the engine over the survivors]
// Collective over the surviving ranks. Every communicator this rank's engines use is revoked
// first, so an engine still waiting on a peer (or on a survivor that has already stopped) fails
// at once; the engines then stop without another word to their peers, and nothing collective
// touches the old communicators again. The control communicator, revoked too, is shrunk to the
// survivors (MPIX_Comm_shrink agrees on who is left even if more ranks die meanwhile); it becomes
// the new control communicator, so a failure while the new engine is being built is handled by
// the next reset shrinking it in turn, and the new global engine runs over a duplicate of it,
// ranks renumbered in the old order (the lowest surviving rank is the new rank 0 and coordinator).
// Process sets other than the global one are gone; they are added again by the caller.
int elastic_reset(const std::string& reason) {
  Session& s = session();
  DS_CHECK(s.elastic, "dist_sync's elastic reset runs inside an elastic run only");
  std::shared_ptr<Engine> old_engine = s.engine;
  std::map<int32_t, ProcessSetEntry> sets;
  std::unique_ptr<MpiCommunicator> old_control;
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    sets.swap(s.sets);
    old_control = std::move(s.control);
  }
  DS_CHECK(old_control != nullptr, "dist_sync is not initialized");
  s.ranks_lost = true;
  py::gil_scoped_release release;
  abandon_spawn(s);
  old_control->revoke();
  if (old_engine) old_engine->revoke_communicators();
  for (auto& [id, entry] : sets) {
    if (entry.engine) entry.engine->revoke_communicators();
  }
  for (auto& [id, entry] : sets) {
    if (entry.engine) entry.engine->shutdown(reason);
  }
  sets.clear();
  if (old_engine) {
    old_engine->shutdown(reason);
    s.last_stop_reason = reason;
    old_engine.reset();
  }
  store_engine(s, nullptr);  // a waiter still holding the old engine keeps it alive until it lets go
  uninstall_termination_report();
  std::unique_ptr<MpiCommunicator> survivors = old_control->shrink();
  old_control.reset();
  mpi_clear_peer_lost();
  MpiCommunicator* parent = survivors.get();
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    s.control = std::move(survivors);
  }
  std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(
      *parent, std::chrono::duration<double>(s.engine_config.init_timeout_seconds), check_signals);
  std::unique_ptr<MpiCommunicator> control;
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    control = std::move(s.control);
  }
  const int size = comm->size();
  start_engine(s, std::move(comm), std::move(control));
  return size;
}

// Collective over the control communicator's ranks: starts `count` processes running `command`
// `args` on a thread of its own (Note [Growing back to the launched size]).
void elastic_spawn(const std::string& command, const std::vector<std::string>& args, int count) {
  Session& s = session();
  DS_CHECK(s.elastic, "dist_sync spawns replacements inside an elastic run only");
  DS_CHECK(s.spawn == nullptr, "replacements are already being spawned");
  DS_CHECK(count > 0, "spawn at least one process, not ", count);
  auto pending = std::make_shared<PendingSpawn>();
  {
    py::gil_scoped_release release;
    MpiCommunicator* control;
    {
      std::lock_guard<std::mutex> lock(s.sets_mutex);
      DS_CHECK(s.control != nullptr, "dist_sync is not initialized");
      control = s.control.get();
    }
    pending->parents = control->duplicate();
  }
  std::thread([pending, command, args, count] {
    try {
      pending->spawned = SpawnedRanks::spawn(*pending->parents, command, args, count);
      pending->state = PendingSpawn::kReady;
      if (pending->abandoned) pending->spawned->revoke();
    } catch (const std::exception& error) {
      pending->error = error.what();
      pending->state = PendingSpawn::kFailed;
    }
  }).detach();
  s.spawn = std::move(pending);
}

// Collective over the parents, once every one has seen the spawn ready: stops the engines and
// rebuilds them over the parents and the spawned processes together (which are waiting in
// init()'s merge). Returns the new size.
int elastic_grow(const std::string& reason) {
  Session& s = session();
  DS_CHECK(s.spawn != nullptr && s.spawn->state == PendingSpawn::kReady,
           "no spawned replacements are ready to join");
  std::shared_ptr<PendingSpawn> pending = std::move(s.spawn);
  stop_process_sets(s, reason);
  std::shared_ptr<Engine> old_engine = std::atomic_exchange(&s.engine, std::shared_ptr<Engine>{});
  std::unique_ptr<MpiCommunicator> old_control;
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    old_control = std::move(s.control);
  }
  py::gil_scoped_release release;
  if (old_engine) {
    old_engine->shutdown(reason);
    s.last_stop_reason = reason;
    old_engine.reset();
  }
  uninstall_termination_report();
  old_control.reset();
  std::unique_ptr<MpiCommunicator> merged = pending->spawned->merge();
  pending.reset();
  std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(
      *merged, std::chrono::duration<double>(s.engine_config.init_timeout_seconds), check_signals);
  const int size = comm->size();
  start_engine(s, std::move(comm), std::move(merged));
  return size;
}

void elastic_enable() {
  Session& s = session();
  engine();  // the usual checks
  if (!mpi_fault_tolerant()) {
    const std::string version = mpi_library_version();
    throw Error(detail::concat(
        "elastic training needs MPI's User-Level Failure Mitigation, so that the survivors of a "
        "lost rank keep running: launch with Open MPI 5's `mpirun --with-ft ulfm ...` (this is ",
        version.substr(0, version.find(',')),
        version.find("Open MPI") == std::string::npos
            ? ", which has no ULFM: build dist_sync against Open MPI 5)"
            : ", launched without --with-ft ulfm)"));
  }
  DS_CHECK(mpi_thread_level() == 3,
           "elastic training needs MPI initialised with MPI_THREAD_MULTIPLE (a reset revokes "
           "the engine's communicators while its thread uses them); MPI provides level ",
           mpi_thread_level());
  s.elastic = true;
}

}  // namespace

void bind_elastic(py::module_& m) {
  m.def("_elastic_enable", &elastic_enable,
        "Checks that ULFM is on (DistSyncError saying how to launch otherwise) and marks the "
        "session elastic: a lost peer then leaves the job to the survivors.");
  m.def("_elastic_reset", &elastic_reset, py::arg("reason"),
        "Collective over the survivors: stops every engine, shrinks the communicator to the "
        "survivors and starts the global engine over it; returns the new size.");
  m.def("_elastic_spawn", &elastic_spawn, py::arg("command"), py::arg("args"), py::arg("count"),
        "Collective over every rank: starts spawning `count` processes running `command` "
        "`args` in the background (Note [Growing back to the launched size]).");
  m.def("_elastic_spawn_state", [] {
    const std::shared_ptr<PendingSpawn>& pending = session().spawn;
    return pending ? pending->state.load() : static_cast<int>(PendingSpawn::kNone);
  }, "0: no spawn; 1: running; 2: ready to merge; 3: failed (_elastic_spawn_error says why).");
  m.def("_elastic_spawn_error", [] {
    const std::shared_ptr<PendingSpawn>& pending = session().spawn;
    return pending && pending->state == PendingSpawn::kFailed ? pending->error : std::string();
  });
  m.def("_elastic_spawn_abandon", [] { abandon_spawn(session()); }, "Gives up on the replacements being spawned (not collective).");
  m.def("_elastic_grow", &elastic_grow, py::arg("reason"),
        "Collective over every rank and the spawned processes: rebuilds the engine over them "
        "all; returns the new size.");
  m.def("_elastic_joined", [] { return session().joined; },
        "This process was spawned to replace lost ranks and joined the job in init().");
  m.def("_elastic_peer_lost", &mpi_peer_lost,
        "Whether a communication failure was a lost (or revoked) peer.");
}

}  // namespace dist_sync::python
