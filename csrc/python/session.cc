#include "python/session.h"

#include <pybind11/stl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <sstream>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "common/termination_report.h"
#include "python/settings.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// Set in a child forked after the session was created. Every entry point checks it, so it is a
// flag (set once, by the fork) rather than a getpid() system call per operation.
std::atomic<bool> g_forked_child{false};

// Held through a pointer that is deliberately not destroyed in a fork()ed child: the child has
// no engine thread, and its copy must not try to stop one.
struct SessionHolder {
  std::unique_ptr<Session> session = std::make_unique<Session>();
  pid_t owner = getpid();
  SessionHolder() {
    pthread_atfork(nullptr, nullptr, [] { g_forked_child.store(true, std::memory_order_relaxed); });
  }
  ~SessionHolder() {
    if (getpid() != owner) static_cast<void>(session.release());
  }
};

SessionHolder& holder() {
  static SessionHolder instance;
  return instance;
}

// Ctrl-C while waiting for the other ranks in a collective setup call raises KeyboardInterrupt.
void check_signals() {
  py::gil_scoped_acquire acquire;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

// Stops every process set's engine on this rank (collective within each set: the first member
// to stop one stops it on every member).
void stop_process_sets(Session& s, const std::string& reason) {
  std::map<int32_t, ProcessSetEntry> sets;
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    sets.swap(s.sets);
  }
  py::gil_scoped_release release;
  for (auto& [id, entry] : sets) {
    if (entry.engine) entry.engine->shutdown(reason);
  }
}

void start_engine(Session& s, std::unique_ptr<MpiCommunicator> comm,
                  std::unique_ptr<MpiCommunicator> control);

// Gives up on replacements being spawned: the spawning thread's call fails (its communicator is
// revoked) or, if it never returns, is left to itself; spawned processes waiting to merge fail.
void abandon_spawn(Session& s) {
  std::shared_ptr<PendingSpawn> pending = std::move(s.spawn);
  if (!pending) return;
  pending->abandoned = true;
  pending->parents->revoke();
  if (pending->state == PendingSpawn::kReady) pending->spawned->revoke();
}

// What an engine does when Python has not exited within the grace period after a fatal error:
// end the job, unless a peer was lost under ULFM. Then every survivor's operations fail at once
// (the communicator is revoked: Note [Surviving a lost rank]), so none hangs, and an elastic run
// about to start must find the survivors still there.
void end_job_after_failure(const MpiCommunicator& comm) {
  if (mpi_peer_lost() && mpi_fault_tolerant()) return;
  comm.abort_job(1);
}

void init(const py::dict& config, const py::dict& shared, int64_t comm_f2c) {
  Session& s = session();
  if (s.engine && s.engine->running()) return;  // idempotent
  if (s.engine) {
    py::gil_scoped_release release;
    s.engine.reset();
  }
  s.engine_config = engine_config(config);
  s.engine_shared = shared_settings(shared);
  s.elastic = false;
  py::gil_scoped_release release;
  mpi_initialize();
  if (comm_f2c < 0) {
    // Note [Growing back to the launched size]: a replacement joins the running job. Its
    // parents never call MPI_Finalize (they lost a rank), so neither does it.
    if (std::unique_ptr<MpiCommunicator> merged = mpi_merge_with_parents()) {
      s.joined = true;
      s.ranks_lost = true;
      std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(
          *merged, std::chrono::duration<double>(s.engine_config.init_timeout_seconds),
          check_signals);
      start_engine(s, std::move(comm), std::move(merged));
      return;
    }
  }
  std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(
      comm_f2c, std::chrono::duration<double>(s.engine_config.init_timeout_seconds), check_signals);
  std::unique_ptr<MpiCommunicator> control = comm->duplicate();
  start_engine(s, std::move(comm), std::move(control));
}

// The global engine over `comm` (made by MpiCommunicator::create), with `control` as the
// communicator of the process-set calls and of an elastic reset's shrink. Without the GIL.
void start_engine(Session& s, std::unique_ptr<MpiCommunicator> comm,
                  std::unique_ptr<MpiCommunicator> control) {
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    s.control = std::move(control);
    s.sets.clear();
    s.next_set_id = 1;
    s.set_config = s.engine_config;
    s.set_config.timeline_path.clear();  // rank 0's global engine writes the timeline
    s.set_config.hierarchical_allreduce = false;  // a set has no host communicators of its own
    s.set_shared = s.engine_shared;
  }
  s.topology = comm->topology();
  // Host-level communicators for the hierarchical allreduce; created on every rank whatever its
  // settings, since creating them is collective (Note [Settings every rank must share]).
  std::unique_ptr<Communicator> local = comm->split_local();
  std::unique_ptr<Communicator> cross = comm->split_cross();
  const MpiCommunicator* raw = comm.get();
  std::vector<PeerProcess> peers;
  for (const auto& [peer_rank, pid] : comm->same_host_peers()) {
    peers.push_back(PeerProcess{pid, comm->describe_rank(peer_rank)});
  }
  const int rank = comm->rank();
  s.engine = std::make_shared<Engine>(s.engine_config, s.engine_shared, std::move(comm),
                                      [raw] { end_job_after_failure(*raw); }, std::move(local),
                                      std::move(cross));
  install_termination_report(rank, peers);  // Note [Saying why mpirun ended a rank]
}

void shutdown(bool finalize_mpi, const std::string& reason) {
  Session& s = session();
  if (getpid() != holder().owner) return;
  bool failed = false;
  stop_process_sets(s, reason.empty() ? "dist_sync.shutdown() was called" : reason);
  if (s.engine) {
    failed = s.engine->failed();
    {
      py::gil_scoped_release release;
      s.engine->shutdown(reason);
    }
    s.last_stop_reason = s.engine->stop_reason();
    if (s.last_stop_reason.empty()) s.last_stop_reason = "dist_sync.shutdown() was called";
    py::gil_scoped_release release;
    s.engine.reset();
    uninstall_termination_report();
  }
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    s.control.reset();
  }
  // After a fatal error the peers may never reach MPI_Finalize; waiting for them would hang.
  if (finalize_mpi && !failed && !s.ranks_lost) mpi_finalize_if_owned();
}

// "process set 2 (ranks 0, 2)"
std::string describe_set(int32_t id, const std::vector<int>& ranks) {
  std::ostringstream out;
  out << "process set " << id << " (ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) out << (i ? ", " : "") << ranks[i];
  out << ")";
  return out.str();
}

// Note [Locks of the process sets]
// sets_mutex guards the table of sets and is held only briefly (submit looks an engine up under
// it, with the GIL held), so it is never held while the GIL is taken back: a thread holding
// the GIL and waiting for the mutex would otherwise deadlock with one holding the mutex and
// waiting for the GIL. The collectives on `control` run without the GIL and without
// sets_mutex; the front end's lock keeps them to one thread at a time.

// Collective over every rank: all must pass the same ranks (the Python front end checks that
// first, with _control_allgather, so it can say which rank differs).
int32_t add_process_set(const std::vector<int>& ranks) {
  Session& s = session();
  Engine& global = engine();
  DS_CHECK(mpi_thread_level() == 3,
           "process sets need MPI initialised with MPI_THREAD_MULTIPLE (each set's engine "
           "talks to its own communicator from its own thread); MPI provides level ",
           mpi_thread_level());
  DS_CHECK(!ranks.empty(), "a process set needs at least one rank");
  for (size_t i = 0; i < ranks.size(); ++i) {
    DS_CHECK(ranks[i] >= 0 && ranks[i] < global.size(), "rank ", ranks[i],
             " of the process set is out of range (", global.size(), " ranks)");
    DS_CHECK(i == 0 || ranks[i] > ranks[i - 1], "process set ranks must be ascending and distinct");
  }
  py::gil_scoped_release release;
  MpiCommunicator* control;
  int32_t id;
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    DS_CHECK(s.control != nullptr, "dist_sync is not initialized");
    control = s.control.get();  // lives until shutdown(), which the front end's lock excludes
    id = s.next_set_id++;
  }
  std::unique_ptr<MpiCommunicator> comm = control->split_members(ranks);
  ProcessSetEntry entry;
  entry.ranks = ranks;
  if (comm) {
    const MpiCommunicator* raw = comm.get();
    entry.engine = std::make_shared<Engine>(s.set_config, s.set_shared, std::move(comm),
                                            [raw] { end_job_after_failure(*raw); }, nullptr, nullptr,
                                            describe_set(id, ranks) +
                                                "; ranks in this message are positions in the set");
  }
  std::lock_guard<std::mutex> lock(s.sets_mutex);
  s.sets.emplace(id, std::move(entry));
  return id;
}

void remove_process_set(int32_t id, const std::string& reason) {
  Session& s = session();
  engine();
  std::shared_ptr<Engine> removed;
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    const auto it = s.sets.find(id);
    DS_CHECK(it != s.sets.end(), "process set ", id, " is not registered (already removed?)");
    removed = std::move(it->second.engine);
    s.sets.erase(it);
  }
  if (removed) {
    py::gil_scoped_release release;
    removed->shutdown(reason);
  }
}

std::vector<py::bytes> control_allgather(const std::string& mine) {
  Session& s = session();
  engine();  // the usual checks
  const std::vector<uint8_t> bytes(mine.begin(), mine.end());
  std::vector<std::vector<uint8_t>> gathered;
  {
    py::gil_scoped_release release;
    MpiCommunicator* control;
    double timeout;
    {
      std::lock_guard<std::mutex> lock(s.sets_mutex);  // Note [Locks of the process sets]
      DS_CHECK(s.control != nullptr, "dist_sync is not initialized");
      control = s.control.get();
      timeout = s.set_config.init_timeout_seconds;
    }
    gathered = control->allgather_bytes(bytes, std::chrono::duration<double>(timeout),
                                        check_signals);
  }
  std::vector<py::bytes> out;
  for (const auto& piece : gathered) {
    out.emplace_back(reinterpret_cast<const char*>(piece.data()), piece.size());
  }
  return out;
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
  s.engine.reset();  // a waiter still holding the old engine keeps it alive until it lets go
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
  std::shared_ptr<Engine> old_engine = std::move(s.engine);
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

Session& session() { return *holder().session; }

std::shared_ptr<Engine> process_set_engine(int32_t id) {
  if (id == 0) return shared_engine();
  engine();  // the same checks as the global set
  Session& s = session();
  std::lock_guard<std::mutex> lock(s.sets_mutex);
  const auto it = s.sets.find(id);
  if (it == s.sets.end()) {
    throw Error(detail::concat("process set ", id, " has been removed (remove_process_set) or "
                               "was never added on this rank"));
  }
  DS_CHECK(it->second.engine != nullptr, "rank ", engine().rank(), " is not in ",
           describe_set(id, it->second.ranks), ", so it cannot take part in its operations");
  return it->second.engine;
}

Engine& engine() {
  Session& s = session();
  if (g_forked_child.load(std::memory_order_relaxed)) {
    throw Error("dist_sync cannot be used in a process forked after init() (for example a "
                "DataLoader worker); use it from the process that called init()");
  }
  if (!s.engine) {
    throw Error("dist_sync is not initialized: call dist_sync.init() (or hvd.init()) first");
  }
  return *s.engine;
}

std::shared_ptr<Engine> shared_engine() {
  engine();  // the same checks
  return session().engine;
}

void bind_session(py::module_& m) {
  m.def("init", &init, py::arg("config"), py::arg("shared"), py::arg("comm_f2c") = -1,
        "Starts this rank's engine (collective). config: the complete dict "
        "dist_sync.config.load() returns; shared: key -> DIST_SYNC_ variable of the settings "
        "every rank must share; comm_f2c: Fortran handle of the communicator to duplicate "
        "(-1: MPI_COMM_WORLD).");
  m.def("shutdown", &shutdown, py::arg("finalize_mpi") = true, py::arg("reason") = "");
  m.def("is_initialized", [] {
    Session& s = session();
    return s.engine != nullptr && s.engine->running();
  });
  m.def("stop_reason", [] {
    Session& s = session();
    return s.engine ? s.engine->stop_reason() : s.last_stop_reason;
  });
  m.def("_add_process_set", &add_process_set, py::arg("ranks"),
        "Collective over every rank: registers the process set of `ranks` (ascending) and "
        "starts its engine on its members; returns its id.");
  m.def("_remove_process_set", &remove_process_set, py::arg("id"), py::arg("reason"),
        "Stops this rank's engine of the set (collective within the set) and forgets it.");
  m.def("_control_allgather", &control_allgather, py::arg("mine"),
        "Collective over every rank: every rank's bytes, in rank order.");
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
  m.def("rank", [] { return engine().rank(); });
  m.def("size", [] { return engine().size(); });
  m.def("local_rank", [] { return (engine(), session().topology.local_rank); });
  m.def("local_size", [] { return (engine(), session().topology.local_size); });
  m.def("cross_rank", [] { return (engine(), session().topology.cross_rank); });
  m.def("cross_size", [] { return (engine(), session().topology.cross_size); });
  m.def("is_homogeneous", [] { return (engine(), session().topology.homogeneous); });
  m.def("mpi_library_version", &mpi_library_version);
  m.def("mpi_thread_level", &mpi_thread_level);

  m.def("start_timeline", [](const std::string& path) {
    Engine& e = engine();
    if (e.rank() == 0) e.timeline().start(path);
  });
  m.def("stop_timeline", [] { engine().timeline().stop(); });

  // Counters of the running engine, for diagnostics and tests (underscore: not API).
  m.def("_engine_stats", [](int32_t process_set) {
    const std::shared_ptr<Engine> e = process_set_engine(process_set);
    const Engine::Stats& stats = e->stats();
    py::dict out;
    out["cycles"] = stats.cycles.load();
    out["full_rounds"] = stats.full_rounds.load();
    out["executions"] = stats.executions.load();
    out["requests"] = stats.requests.load();
    out["cache_hits"] = stats.cache_hits.load();
    return out;
  }, py::arg("process_set") = 0);
}

}  // namespace dist_sync::python
