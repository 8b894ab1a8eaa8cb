// pybind11 module dist_sync._core: raw pointers, byte counts and dtype codes in, handles out.
// Knows no torch, and of numpy only where a submitted array's data pointer is (Note [Submission
// cost]); dist_sync/ (Python) does the array handling. Every call that can wait releases the GIL.
#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <functional>
#include <memory>

#include "collectives/allgatherv.h"
#include "collectives/allreduce.h"
#include "collectives/alltoallv.h"
#include "collectives/broadcast.h"
#include "collectives/hierarchical.h"
#include "collectives/recursive_doubling.h"
#include "collectives/reducescatter.h"
#include "collectives/ring.h"
#include "collectives/segments.h"
#include "comm/mpi_comm.h"
#include "comm/thread_comm.h"
#include "common/errors.h"
#include "common/page_backing.h"
#include "common/termination_report.h"
#include "engine/engine.h"
#include "reduce/half.h"
#include "reduce/reduce.h"

namespace py = pybind11;
using namespace dist_sync;

namespace {

// The process's dist_sync session. Held through a pointer that is deliberately not destroyed in
// a fork()ed child: the child has no engine thread, and its copy must not try to stop one.
struct Session {
  // Shared: a thread waiting on a handle without the GIL holds a reference, so a shutdown() from
  // another thread cannot destroy the engine (its handle table, mutex and condition variable)
  // under that wait; the waiter wakes with the shutdown error and lets go.
  std::shared_ptr<Engine> engine;
  Topology topology;
  std::string last_stop_reason;  // why the previous engine stopped, for errors after shutdown()
};

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

// The engine, kept alive for as long as the caller holds it (see Session::engine).
std::shared_ptr<Engine> shared_engine() {
  engine();  // the same checks
  return session().engine;
}

// A setting's Python value as the text SettingField::set reads (converting as pybind11 does).
std::string setting_text(const SettingField& field, const py::handle& value) {
  try {
    switch (field.kind) {
      case SettingField::Kind::kUnsigned: return std::to_string(value.cast<uint64_t>());
      case SettingField::Kind::kInteger: return std::to_string(value.cast<int64_t>());
      case SettingField::Kind::kReal: return py::str(py::float_(value.cast<double>())).cast<std::string>();
      case SettingField::Kind::kBoolean: return value.cast<bool>() ? "1" : "0";
      case SettingField::Kind::kText: return value.cast<std::string>();
    }
  } catch (const py::cast_error&) {
  }
  static const char* const expected[] = {"a non-negative int", "an int", "a number", "a bool", "a str"};
  throw UsageError(detail::concat("setting '", field.key, "' must be ",
                                  expected[static_cast<int>(field.kind)], ", got ",
                                  py::repr(value).cast<std::string>()));
}

// The engine's settings from the complete dict dist_sync.config.load() returns (the one place
// that declares names, defaults and parsing): every key the engine has must be there.
EngineConfig engine_config(const py::dict& settings) {
  EngineConfig config{};
  std::string missing;
  for (const SettingField& field : setting_fields()) {
    if (!settings.contains(field.key)) {
      missing += (missing.empty() ? "'" : ", '") + std::string(field.key) + "'";
      continue;
    }
    field.set(config, setting_text(field, settings[field.key]));
  }
  DS_CHECK(missing.empty(), "the settings lack ", missing,
           ": pass the complete dict dist_sync.config.load() returns");
  return config;
}

// key -> DIST_SYNC_ variable of the settings every rank must share (Note [Settings every rank
// must share]), as dist_sync/config.py marks them.
std::vector<SharedSetting> shared_settings(const py::dict& shared) {
  std::vector<SharedSetting> settings;
  for (const auto& [key, variable] : shared) {
    SharedSetting setting{key.cast<std::string>(), variable.cast<std::string>(), ""};
    setting_field(setting.key);  // a key the engine has, or UsageError
    settings.push_back(std::move(setting));
  }
  return settings;
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
  std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(comm_f2c);
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

// Runs body(rank) on `size` threads without the GIL. A rank that throws is reported to
// `on_failure` (which kills it in its fabrics, so its peers fail instead of waiting) and the first
// failure is rethrown naming its rank.
void run_thread_ranks(int size, const std::function<void(int)>& body,
                      const std::function<void(int)>& on_failure) {
  std::vector<std::string> errors(static_cast<size_t>(size));
  {
    py::gil_scoped_release release;
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
      threads.emplace_back([&, r] {
        try {
          body(r);
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(r)] = e.what();
          on_failure(r);
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  for (int r = 0; r < size; ++r) {
    if (!errors[static_cast<size_t>(r)].empty()) {
      throw Error(detail::concat("rank ", r, ": ", errors[static_cast<size_t>(r)]));
    }
  }
}

std::vector<py::bytes> as_bytes(const std::vector<std::string>& outputs) {
  std::vector<py::bytes> result;
  for (const auto& out : outputs) result.emplace_back(out);
  return result;
}

// A submitted tensor's data: a numpy array's, or a raw address (Note [Submission cost]).
void* data_address(const py::handle& tensor) {
  if (py::isinstance<py::array>(tensor)) {
    // Writability of outputs was checked in Python; inputs may be read-only.
    return const_cast<void*>(py::reinterpret_borrow<py::array>(tensor).data());
  }
  return reinterpret_cast<void*>(tensor.cast<uintptr_t>());
}

// The in-process test hook: runs one collective over N thread ranks and returns each rank's
// output bytes. Lets pytest drive the C++ algorithms for many N and sizes without MPI.
std::vector<py::bytes> thread_collective(const std::string& kind, int size,
                                         const std::vector<std::string>& inputs, int dtype_code,
                                         int op_code, double prescale, double postscale,
                                         int64_t divisor, size_t segment_bytes,
                                         size_t small_bytes, int in_flight, int root,
                                         const std::vector<int64_t>& split_rows) {
  const DataType dtype = static_cast<DataType>(dtype_code);
  const ReduceOp op = static_cast<ReduceOp>(op_code);
  const size_t element_bytes = dtype_size(dtype);
  const int allreduce_tag = op_traits(OpType::kAllreduce).tag;
  const CollectiveConfig config{segment_bytes, small_bytes, in_flight};
  const Scaling scaling{prescale, postscale, divisor};
  auto fabric = std::make_shared<ThreadFabric>(size);
  std::vector<std::string> outputs(static_cast<size_t>(size));
  run_thread_ranks(size, [&](int r) {
          ThreadCommunicator comm(fabric, r);
          WaitConfig wait;
          wait.timeout = std::chrono::seconds(60);
          comm.set_wait_config(wait);
          Workspace workspace;
          const std::string& in = inputs[static_cast<size_t>(r)];
          std::string& out = outputs[static_cast<size_t>(r)];
          const size_t count = in.size() / element_bytes;
          if (kind == "allreduce" || kind == "ring" || kind == "recursive_doubling") {
            out.assign(in.size(), '\0');
            if (kind == "recursive_doubling") {
              out = in;
              std::vector<std::byte> scratch(in.size());
              recursive_doubling_allreduce(comm, out.data(), count, dtype, op, scratch.data(), allreduce_tag);
            } else if (kind == "ring") {
              SpanList spans(in.data(), out.data(), in.size());
              ring_collective(comm, spans, even_chunk_bounds(count, size, element_bytes),
                              RingPhases::kBoth, dtype, op, scaling, config, workspace, allreduce_tag);
            } else {
              // Split into uneven pieces so the ring sees segments straddling tensors.
              SpanList spans;
              size_t offset = 0, piece = element_bytes;
              while (offset < in.size()) {
                const size_t bytes = std::min(piece, in.size() - offset);
                spans.add(in.data() + offset, out.data() + offset, bytes);
                offset += bytes;
                piece = piece * 3 + element_bytes;
              }
              allreduce(comm, spans, dtype, op, scaling, config, workspace, allreduce_tag);
            }
          } else if (kind == "inplace") {
            out = in;
            SpanList spans(out.data(), out.data(), out.size());
            allreduce(comm, spans, dtype, op, scaling, config, workspace, allreduce_tag);
          } else if (kind == "broadcast") {
            out = in;
            SpanList spans(out.data(), out.data(), out.size());
            broadcast(comm, spans, root, config, workspace, op_traits(OpType::kBroadcast).tag);
          } else if (kind == "allgather") {
            std::vector<size_t> blocks;
            size_t total = 0;
            for (const auto& block : inputs) {
              blocks.push_back(block.size());
              total += block.size();
            }
            out.assign(total, '\0');
            allgatherv(comm, in.data(), out.data(), blocks, config, workspace,
                       op_traits(OpType::kAllgather).tag);
          } else if (kind == "reducescatter") {
            const std::vector<size_t> rows = even_chunk_bounds(count, size, 1);
            const size_t mine = rows[static_cast<size_t>(r) + 1] - rows[static_cast<size_t>(r)];
            out.assign(mine * element_bytes, '\0');
            std::vector<std::byte> scratch(in.size());
            reducescatter(comm, in.data(), out.data(), scratch.data(), rows, dtype, op, scaling,
                          config, workspace, op_traits(OpType::kReducescatter).tag);
          } else if (kind == "alltoall") {
            // split_rows is the N x N matrix of elements sent from rank s to rank d.
            const size_t n = static_cast<size_t>(size), me = static_cast<size_t>(r);
            std::vector<size_t> send(n), recv(n);
            size_t total = 0;
            for (size_t p = 0; p < n; ++p) {
              send[p] = static_cast<size_t>(split_rows[me * n + p]) * element_bytes;
              recv[p] = static_cast<size_t>(split_rows[p * n + me]) * element_bytes;
              total += recv[p];
            }
            out.assign(total, '\0');
            alltoallv(comm, in.data(), send, out.data(), recv, op_traits(OpType::kAlltoall).tag);
          } else {
            throw UsageError("unknown collective kind " + kind);
          }
      }, [&](int r) { fabric->kill_rank(r); });
  return as_bytes(outputs);
}

// Times one collective algorithm directly over a fresh duplicate of MPI_COMM_WORLD, bypassing
// the engine (whose negotiation is measured separately). Only allowed while no engine runs, so
// the calling thread is the only one using MPI. Returns, per timed iteration, the slowest rank's
// seconds; iterations start together (a small allreduce aligns the ranks first).
std::vector<double> bench_collective(const std::string& kind, size_t bytes, int dtype_code,
                                     int iterations, int warmup, const py::dict& settings) {
  Session& s = session();
  if (s.engine && s.engine->running()) {
    throw UsageError("_bench_collective needs the engine stopped: call dist_sync.shutdown() first");
  }
  const EngineConfig config = engine_config(settings);
  const DataType dtype = static_cast<DataType>(dtype_code);
  const size_t element_bytes = dtype_size(dtype);
  const size_t count = bytes / element_bytes;
  py::gil_scoped_release release;
  mpi_initialize();
  std::unique_ptr<MpiCommunicator> comm = MpiCommunicator::create(-1);
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
                op_traits(OpType::kAllreduce).tag);
    } else if (kind == "ring") {
      SpanList spans(input.get(), output.get(), buffer_bytes);
      ring_collective(*comm, spans, even_chunk_bounds(count, comm->size(), element_bytes),
                      RingPhases::kBoth, dtype, ReduceOp::kSum, Scaling{}, config.collectives,
                      workspace, op_traits(OpType::kAllreduce).tag);
    } else if (kind == "recursive_doubling") {
      std::memcpy(output.get(), input.get(), buffer_bytes);
      recursive_doubling_allreduce(*comm, output.get(), count, dtype, ReduceOp::kSum,
                                   scratch.get(), op_traits(OpType::kAllreduce).tag);
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

// Hierarchical allreduce over hosts x per_host thread ranks: each "host" is a thread fabric of
// its own, and the ranks with the same local rank share a cross fabric.
std::vector<py::bytes> thread_hierarchical(int hosts, int per_host, const std::vector<std::string>& inputs,
                                           int dtype_code, int op_code, double prescale,
                                           double postscale, int64_t divisor, size_t segment_bytes,
                                           size_t small_bytes, int in_flight) {
  const DataType dtype = static_cast<DataType>(dtype_code);
  const CollectiveConfig config{segment_bytes, small_bytes, in_flight};
  const Scaling scaling{prescale, postscale, divisor};
  const int size = hosts * per_host;
  std::vector<std::shared_ptr<ThreadFabric>> local_fabrics, cross_fabrics;
  for (int h = 0; h < hosts; ++h) local_fabrics.push_back(std::make_shared<ThreadFabric>(per_host));
  for (int l = 0; l < per_host; ++l) cross_fabrics.push_back(std::make_shared<ThreadFabric>(hosts));
  std::vector<std::string> outputs(static_cast<size_t>(size));
  run_thread_ranks(size, [&](int r) {
          const int host = r / per_host, local_rank = r % per_host;
          ThreadCommunicator local(local_fabrics[static_cast<size_t>(host)], local_rank);
          ThreadCommunicator cross(cross_fabrics[static_cast<size_t>(local_rank)], host);
          WaitConfig wait;
          wait.timeout = std::chrono::seconds(60);
          local.set_wait_config(wait);
          cross.set_wait_config(wait);
          Workspace workspace;
          const std::string& in = inputs[static_cast<size_t>(r)];
          std::string& out = outputs[static_cast<size_t>(r)];
          out.assign(in.size(), '\0');
          SpanList spans(in.data(), out.data(), in.size());
          hierarchical_allreduce(local, cross, spans, dtype, static_cast<ReduceOp>(op_code), scaling,
                                 config, workspace, op_traits(OpType::kAllreduce).tag);
      }, [&](int r) {
        local_fabrics[static_cast<size_t>(r / per_host)]->kill_rank(r % per_host);
        cross_fabrics[static_cast<size_t>(r % per_host)]->kill_rank(r / per_host);
      });
  return as_bytes(outputs);
}

// NAME for a C++ name in lower or mixed case ("allreduce", "bfloat16", "Average").
std::string enum_member(const std::string& name) {
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return upper;
}

// The C++ enums Python shares, as enum.IntEnum with the C++ values. Members are made from the
// names the C++ side already uses (op traits, dtype and op names), so nothing is listed twice.
void bind_enums(py::module_& m) {
  py::native_enum<OpType> op_type(m, "OpType", "enum.IntEnum",
                                  "Collective operation types (csrc/engine/op_traits.h).");
  for (int i = 0; i < kNumOpTypes; ++i) {
    const OpTraits& traits = op_traits(static_cast<OpType>(i));
    op_type.value(enum_member(traits.name).c_str(), traits.type);
  }
  op_type.finalize();
  py::native_enum<DataType> data_type(m, "DataType", "enum.IntEnum",
                                      "Element types the engine reduces (csrc/common/dtype.h).");
  for (int i = 0; i < kNumUserDataTypes; ++i) {
    const auto dtype = static_cast<DataType>(i);
    data_type.value(enum_member(dtype_name(dtype)).c_str(), dtype);
  }
  data_type.finalize();
  py::native_enum<DeviceKind> device_kind(m, "DeviceKind", "enum.IntEnum",
                                          "Where a tensor lives (csrc/engine/request.h).");
  for (int i = 0; i < kNumDeviceKinds; ++i) {
    const auto device = static_cast<DeviceKind>(i);
    device_kind.value(enum_member(device_kind_name(device)).c_str(), device);
  }
  device_kind.finalize();
  py::native_enum<ReduceOp> reduce_op(
      m, "ReduceOp", "enum.IntEnum",
      "Reductions, numbered as Horovod's (csrc/common/dtype.h); ADASUM is reserved.");
  for (int i = 0; i < kNumUserReduceOps; ++i) {
    const auto op = static_cast<ReduceOp>(i);
    reduce_op.value(enum_member(reduce_op_name(op)).c_str(), op);
  }
  reduce_op.finalize();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "dist_sync's C++ engine (internal; use the dist_sync package)";
  // DistSyncError (a RuntimeError) for everything dist_sync raises on purpose; ValueError for
  // caller mistakes (Note [User errors vs internal invariants]).
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> error_type;
  error_type.call_once_and_store_result(
      [&] { return py::object(py::exception<Error>(m, "DistSyncError", PyExc_RuntimeError)); });
  py::register_exception_translator([](std::exception_ptr pointer) {
    try {
      if (pointer) std::rethrow_exception(pointer);
    } catch (const UsageError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const Error& e) {
      PyErr_SetString(error_type.get_stored().ptr(), e.what());
    }
  });

  bind_enums(m);

  py::class_<OutputBuffer, std::shared_ptr<OutputBuffer>>(m, "_Buffer", py::buffer_protocol())
      .def_buffer([](OutputBuffer& buffer) {
        return py::buffer_info(buffer.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(buffer.bytes())}, {1});
      });

  m.def("init", &init, py::arg("config"), py::arg("shared"), py::arg("comm_f2c") = -1);
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

  // Note [Submission cost]
  // A training step submits one tensor per gradient, so the per-call cost adds up (ResNet-50:
  // 161 calls). Each tensor arrives as (name, input, output, dtype code, shape), where input
  // and output are numpy arrays (their data pointers read here, far cheaper than numpy's
  // .ctypes.data) or raw addresses (torch's data_ptr(); 0: no output). op_type, reduce_op and
  // device are the exported enums' members taken as plain ints (an IntEnum is an int): the
  // native-enum caster would add an isinstance check and a .value lookup per argument.
  m.def(
      "submit",
      [](int op_type, const std::string& name, const std::vector<py::tuple>& tensors,
         int reduce_op, double prescale, double postscale, int root,
         const std::vector<int64_t>& splits, int device, bool cacheable) {
        DS_CHECK(is_op_type(op_type), "unknown op type ", op_type);
        DS_CHECK(is_user_reduce_op(reduce_op), "unknown reduce op ", reduce_op);
        DS_CHECK(is_device_kind(device), "unknown device kind ", device);
        Request request;
        request.meta.type = static_cast<OpType>(op_type);
        request.meta.name = name;
        request.meta.reduce_op = static_cast<ReduceOp>(reduce_op);
        request.meta.prescale = prescale;
        request.meta.postscale = postscale;
        request.meta.root = root;
        request.meta.splits = splits;
        request.meta.device = static_cast<DeviceKind>(device);
        request.meta.cacheable = cacheable;
        for (const py::tuple& t : tensors) {
          TensorMeta tensor;
          tensor.name = t[0].cast<std::string>();
          request.inputs.push_back(data_address(t[1]));
          request.outputs.push_back(data_address(t[2]));
          const int dtype = t[3].cast<int>();
          DS_CHECK(is_user_dtype(dtype), "unsupported dtype code ", dtype);
          tensor.dtype = static_cast<DataType>(dtype);
          tensor.shape = t[4].cast<std::vector<int64_t>>();
          request.meta.tensors.push_back(std::move(tensor));
        }
        return engine().submit(std::move(request));
      },
      py::arg("op_type"), py::arg("name"), py::arg("tensors"),
      py::arg("reduce_op") = static_cast<int>(ReduceOp::kSum), py::arg("prescale") = 1.0,
      py::arg("postscale") = 1.0,
      py::arg("root") = 0, py::arg("splits") = std::vector<int64_t>{}, py::arg("device") = 0,
      py::arg("cacheable") = true);

  m.def("poll", [](uint64_t handle) { return engine().poll(handle); });
  m.def("wait", [](uint64_t handle) {
    const std::shared_ptr<Engine> e = shared_engine();
    OpResult result;
    {
      py::gil_scoped_release release;
      result = e->wait(handle);
    }
    if (!result.error.empty()) throw Error(result.error);
    py::object output = py::none();
    if (result.output) output = py::cast(result.output);
    return py::make_tuple(output, result.output_shape, result.received_splits, result.join_rank);
  });

  m.def("start_timeline", [](const std::string& path) {
    Engine& e = engine();
    if (e.rank() == 0) e.timeline().start(path);
  });
  m.def("stop_timeline", [] { engine().timeline().stop(); });

  m.def("_bench_collective", &bench_collective, py::arg("kind"), py::arg("bytes"),
        py::arg("dtype") = static_cast<int>(DataType::kFloat32), py::arg("iterations") = 10, py::arg("warmup") = 2,
        py::arg("settings"));

  // Test hooks (underscore: not API).
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
  m.def("_thread_collective", &thread_collective);
  m.def("_plan_segments", [](const std::vector<size_t>& span_bytes, size_t offset, size_t length,
                             size_t segment_bytes, size_t element_bytes) {
    SpanList spans;
    for (const size_t bytes : span_bytes) spans.add(nullptr, nullptr, bytes);
    std::vector<std::pair<size_t, size_t>> plan;
    for (const Extent& segment : plan_segments(spans, offset, length, segment_bytes, element_bytes)) {
      plan.emplace_back(segment.offset, segment.bytes);
    }
    return plan;
  });
  m.def("_on_huge_pages", [](uintptr_t address, size_t bytes) {
    const void* data = reinterpret_cast<const void*>(address);
    return HugePageMap({MemoryRange{data, bytes}}).covers(data, bytes);
  });
  m.def("_thread_hierarchical", &thread_hierarchical, py::arg("hosts"), py::arg("per_host"),
        py::arg("inputs"), py::arg("dtype"), py::arg("op"), py::arg("prescale"), py::arg("postscale"),
        py::arg("divisor"), py::arg("segment_bytes"), py::arg("small_bytes"), py::arg("in_flight") = 4);
  m.def("_reduce", [](py::bytes dst_own, py::bytes other, int dtype, int op, double prescale,
                      double postscale, int64_t divisor, bool finalize) {
    std::string own = dst_own;
    const std::string theirs = other;
    const Scaling scaling{prescale, postscale, divisor};
    const auto data_type = static_cast<DataType>(dtype);
    reduce(own.data(), own.data(), theirs.data(), own.size() / dtype_size(data_type), data_type,
           static_cast<ReduceOp>(op), scaling, finalize);
    return py::bytes(own);
  });
  m.def("_float_to_half", [](float v) { return float_to_half(v); });
  m.def("_half_to_float", [](uint16_t v) { return half_to_float(v); });
  m.def("_float_to_bfloat16", [](float v) { return float_to_bfloat16(v); });
}
