#include "python/bench.h"

#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "collectives/allreduce.h"
#include "collectives/broadcast.h"
#include "collectives/recursive_doubling.h"
#include "collectives/ring.h"
#include "comm/mpi_comm.h"
#include "common/errors.h"
#include "common/host_buffer.h"
#include "engine/op_traits.h"
#include "python/session.h"
#include "python/settings.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// Times one collective algorithm directly over a fresh duplicate of MPI_COMM_WORLD, bypassing
// the engine (whose negotiation is measured separately). Only allowed while no engine runs, so
// the calling thread is the only one using MPI. Returns, per timed iteration, the slowest rank's
// seconds; iterations start together (a small allreduce aligns the ranks first).
std::vector<double> bench_collective(const std::string& kind, size_t bytes, DataType dtype,
                                     int iterations, int warmup, const py::dict& settings) {
  Session& s = session();
  if (s.engine && s.engine->running()) {
    throw UsageError("_bench_collective needs the engine stopped: call dist_sync.shutdown() first");
  }
  const EngineConfig config = engine_config(settings);
  const size_t element_bytes = dtype_size(dtype);
  const size_t count = bytes / element_bytes;
  const int allreduce_tag = op_traits(OpType::kAllreduce).tag;
  py::gil_scoped_release release;
  mpi_initialize();
  std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(
      -1, std::chrono::duration<double>(config.init_timeout_seconds), {});
  Workspace workspace;
  // Buffers allocated the way the engine's own are (Note [Huge pages]), filled like np.ones.
  const size_t buffer_bytes = count * element_bytes;
  HostBuffer input = allocate_host(buffer_bytes), output = allocate_host(buffer_bytes),
             scratch = allocate_host(buffer_bytes);
  std::memset(input.get(), 0, buffer_bytes);
  std::memset(output.get(), 0, buffer_bytes);
  std::vector<double> times;
  double token = 0;
  double token_scratch = 0;
  for (int i = 0; i < warmup + iterations; ++i) {
    recursive_doubling_allreduce(*comm, &token, 1, DataType::kFloat64, ReduceOp::kSum,
                                 reinterpret_cast<std::byte*>(&token_scratch), kNegotiationTag);
    const auto start = std::chrono::steady_clock::now();
    if (kind == "allreduce" || kind == "allreduce_inplace") {
      SpanList spans(kind == "allreduce" ? input.get() : output.get(), output.get(), buffer_bytes);
      allreduce(*comm, spans, dtype, ReduceOp::kSum, Scaling{}, config.collectives, workspace,
                allreduce_tag);
    } else if (kind == "ring") {
      SpanList spans(input.get(), output.get(), buffer_bytes);
      ring_collective(*comm, spans, even_chunk_bounds(count, comm->size(), element_bytes),
                      RingPhases::kBoth, dtype, ReduceOp::kSum, Scaling{}, config.collectives,
                      workspace, allreduce_tag);
    } else if (kind == "recursive_doubling") {
      std::memcpy(output.get(), input.get(), buffer_bytes);
      recursive_doubling_allreduce(*comm, output.get(), count, dtype, ReduceOp::kSum,
                                   scratch.get(), allreduce_tag);
    } else if (kind == "broadcast") {
      SpanList spans(output.get(), output.get(), buffer_bytes);
      broadcast(*comm, spans, 0, config.collectives, workspace, op_traits(OpType::kBroadcast).tag);
    } else {
      throw UsageError("unknown benchmark kind " + kind);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i >= warmup) times.push_back(seconds);
  }
  // The slowest rank defines each iteration's time.
  std::vector<double> slowest_scratch(times.size());
  recursive_doubling_allreduce(*comm, times.data(), times.size(), DataType::kFloat64, ReduceOp::kMax,
                               reinterpret_cast<std::byte*>(slowest_scratch.data()), kNegotiationTag);
  return times;
}

}  // namespace

void bind_bench(py::module_& m) {
  m.def("_bench_collective", &bench_collective, py::arg("kind"), py::arg("bytes"),
        py::arg("dtype") = DataType::kFloat32, py::arg("iterations") = 10, py::arg("warmup") = 2,
        py::arg("settings"),
        "Seconds per iteration (slowest rank) of one algorithm without the engine: kind is "
        "allreduce, allreduce_inplace, ring, recursive_doubling or broadcast; settings the "
        "complete dict dist_sync.config.load() returns.");
}

}  // namespace dist_sync::python
