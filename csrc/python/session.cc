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
    store_engine(s, nullptr);
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
    store_engine(s, nullptr);
    uninstall_termination_report();
  }
  {
    std::lock_guard<std::mutex> lock(s.sets_mutex);
    s.control.reset();
  }
  // After a fatal error the peers may never reach MPI_Finalize; waiting for them would hang.
  if (finalize_mpi && !failed && !s.ranks_lost) mpi_finalize_if_owned();
  if (finalize_mpi && s.joined) mpi_spawned_process_ends();
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

}  // namespace

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
  store_engine(s, std::make_shared<Engine>(s.engine_config, s.engine_shared, std::move(comm),
                                           [raw] { end_job_after_failure(*raw); },
                                           std::move(local), std::move(cross)));
  install_termination_report(rank, peers);  // Note [Saying why mpirun ended a rank]
}

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

std::shared_ptr<Engine> load_engine(const Session& s) { return std::atomic_load(&s.engine); }

void store_engine(Session& s, std::shared_ptr<Engine> engine) {
  std::atomic_store(&s.engine, std::move(engine));
}

std::shared_ptr<Engine> shared_engine() {
  if (g_forked_child.load(std::memory_order_relaxed)) {
    throw Error("dist_sync cannot be used in a process forked after init() (for example a "
                "DataLoader worker); use it from the process that called init()");
  }
  std::shared_ptr<Engine> running = load_engine(session());
  if (!running) {
    throw Error("dist_sync is not initialized: call dist_sync.init() (or hvd.init()) first");
  }
  return running;
}

// The session keeps the engine alive until shutdown(), which the front end's lock keeps from
// overlapping the GIL-holding callers of this reference.
Engine& engine() { return *shared_engine(); }

void bind_session(py::module_& m) {
  bind_elastic(m);
  m.def("init", &init, py::arg("config"), py::arg("shared"), py::arg("comm_f2c") = -1,
        "Starts this rank's engine (collective). config: the complete dict "
        "dist_sync.config.load() returns; shared: key -> DIST_SYNC_ variable of the settings "
        "every rank must share; comm_f2c: Fortran handle of the communicator to duplicate "
        "(-1: MPI_COMM_WORLD).");
  m.def("shutdown", &shutdown, py::arg("finalize_mpi") = true, py::arg("reason") = "");
  m.def("is_initialized", [] {
    Session& s = session();
    const std::shared_ptr<Engine> running = load_engine(s);
    return running != nullptr && running->running();
  });
  m.def("stop_reason", [] {
    Session& s = session();
    const std::shared_ptr<Engine> current = load_engine(s);
    return current ? current->stop_reason() : s.last_stop_reason;
  });
  m.def("_add_process_set", &add_process_set, py::arg("ranks"),
        "Collective over every rank: registers the process set of `ranks` (ascending) and "
        "starts its engine on its members; returns its id.");
  m.def("_remove_process_set", &remove_process_set, py::arg("id"), py::arg("reason"),
        "Stops this rank's engine of the set (collective within the set) and forgets it.");
  m.def("_control_allgather", &control_allgather, py::arg("mine"),
        "Collective over every rank: every rank's bytes, in rank order.");
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
