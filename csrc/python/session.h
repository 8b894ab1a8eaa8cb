// The process's dist_sync session: its engine, its topology, and the module functions that
// start, stop and query it (init, shutdown, rank, ..., the timeline, _engine_stats).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "comm/mpi_comm.h"
#include "engine/engine.h"

namespace dist_sync::python {

struct Session {
  // Shared: a thread waiting on a handle without the GIL holds a reference, so a shutdown() from
  // another thread cannot destroy the engine (its handle table, mutex and condition variable)
  // under that wait; the waiter wakes with the shutdown error and lets go.
  std::shared_ptr<Engine> engine;
  Topology topology;
  std::string last_stop_reason;  // why the previous engine stopped, for errors after shutdown()
};

Session& session();
// The running engine; DistSyncError before init(), after shutdown() and in a forked child.
Engine& engine();
// The same, kept alive for as long as the caller holds it (see Session::engine).
std::shared_ptr<Engine> shared_engine();

void bind_session(pybind11::module_& core);

}  // namespace dist_sync::python
