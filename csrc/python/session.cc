#include "python/session.h"

#include <pybind11/stl.h>
#include <unistd.h>

#include <vector>

#include "common/errors.h"
#include "common/termination_report.h"
#include "python/settings.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// Held through a pointer that is deliberately not destroyed in a fork()ed child: the child has
// no engine thread, and its copy must not try to stop one.
struct SessionHolder {
  std::unique_ptr<Session> session = std::make_unique<Session>();
  pid_t owner = getpid();
  ~SessionHolder() {
    if (getpid() != owner) static_cast<void>(session.release());
  }
};

SessionHolder& holder() {
  static SessionHolder instance;
  return instance;
}

void init(const py::dict& config, const py::dict& shared, int64_t comm_f2c) {
  Session& s = session();
  if (s.engine && s.engine->running()) return;  // idempotent
  if (s.engine) {
    py::gil_scoped_release release;
    s.engine.reset();
  }
  const EngineConfig engine_settings = engine_config(config);
  std::vector<SharedSetting> agreed = shared_settings(shared);
  py::gil_scoped_release release;
  mpi_initialize();
  // Ctrl-C while waiting for the other ranks raises KeyboardInterrupt here.
  const auto check_signals = [] {
    py::gil_scoped_acquire acquire;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  };
  std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(
      comm_f2c, std::chrono::duration<double>(engine_settings.init_timeout_seconds), check_signals);
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
  s.engine = std::make_shared<Engine>(engine_settings, std::move(agreed), std::move(comm),
                                      [raw] { raw->abort_job(1); }, std::move(local), std::move(cross));
  install_termination_report(rank, peers);  // Note [Saying why mpirun ended a rank]
}

void shutdown(bool finalize_mpi, const std::string& reason) {
  Session& s = session();
  if (getpid() != holder().owner) return;
  bool failed = false;
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
  // After a fatal error the peers may never reach MPI_Finalize; waiting for them would hang.
  if (finalize_mpi && !failed) mpi_finalize_if_owned();
}

}  // namespace

Session& session() { return *holder().session; }

Engine& engine() {
  Session& s = session();
  if (getpid() != holder().owner) {
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
  m.def("_engine_stats", [] {
    const Engine::Stats& stats = engine().stats();
    py::dict out;
    out["cycles"] = stats.cycles.load();
    out["full_rounds"] = stats.full_rounds.load();
    out["executions"] = stats.executions.load();
    out["requests"] = stats.requests.load();
    out["cache_hits"] = stats.cache_hits.load();
    return out;
  });
}

}  // namespace dist_sync::python
