#include "python/testhooks/threads.h"

#include <pybind11/native_enum.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/allgatherv.h"
#include "collectives/allreduce.h"
#include "collectives/alltoallv.h"
#include "collectives/broadcast.h"
#include "collectives/hierarchical.h"
#include "collectives/recursive_doubling.h"
#include "collectives/reducescatter.h"
#include "collectives/adasum.h"
#include "collectives/ring.h"
#include "comm/thread_comm.h"
#include "common/errors.h"
#include "engine/op_traits.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// Which allreduce algorithm thread_collective runs.
enum class AllreduceAlgorithm : int {
  kSizeBased = 0,          // allreduce(): recursive doubling up to small_allreduce_bytes, else the ring
  kRing = 1,               // ring_collective() on one buffer
  kRecursiveDoubling = 2,  // recursive_doubling_allreduce(), in place on a copy of the input
  kAdasum = 3,             // adasum_allreduce(), in place on a copy of the input (op ignored)
};

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

void set_test_wait(Communicator& comm) {
  WaitConfig wait;
  wait.timeout = std::chrono::seconds(60);
  comm.set_wait_config(wait);
}

// One rank's allreduce. Out of place, the size-based choice sees the input as uneven pieces, so
// the ring meets segments straddling tensors.
void thread_allreduce(Communicator& comm, const std::string& in, std::string& out, DataType dtype,
                      ReduceOp op, const Scaling& scaling, const CollectiveConfig& config,
                      Workspace& workspace, AllreduceAlgorithm algorithm, bool in_place) {
  const size_t element_bytes = dtype_size(dtype);
  const size_t count = in.size() / element_bytes;
  const int tag = op_traits(OpType::kAllreduce).tag;
  switch (algorithm) {
    case AllreduceAlgorithm::kRecursiveDoubling: {
      out = in;
      std::vector<std::byte> scratch(in.size());
      recursive_doubling_allreduce(comm, out.data(), count, dtype, op, scratch.data(), tag);
      return;
    }
    case AllreduceAlgorithm::kAdasum: {
      out = in;
      std::vector<std::byte> scratch((count / 2 + 1) * element_bytes);
      adasum_allreduce(comm, out.data(), count, dtype, scaling.prescale, scaling.postscale,
                       scratch.data(), tag);
      return;
    }
    case AllreduceAlgorithm::kRing: {
      out.assign(in.size(), '\0');
      SpanList spans(in.data(), out.data(), in.size());
      ring_collective(comm, spans, even_chunk_bounds(count, comm.size(), element_bytes),
                      RingPhases::kBoth, dtype, op, scaling, config, workspace, tag);
      return;
    }
    case AllreduceAlgorithm::kSizeBased: {
      SpanList spans;
      if (in_place) {
        out = in;
        spans.add(out.data(), out.data(), out.size());
      } else {
        out.assign(in.size(), '\0');
        size_t offset = 0, piece = element_bytes;
        while (offset < in.size()) {
          const size_t bytes = std::min(piece, in.size() - offset);
          spans.add(in.data() + offset, out.data() + offset, bytes);
          offset += bytes;
          piece = piece * 3 + element_bytes;
        }
      }
      allreduce(comm, spans, dtype, op, scaling, config, workspace, tag);
      return;
    }
  }
  throw UsageError("unknown allreduce algorithm");
}

// Runs one collective over len(inputs) thread ranks and returns each rank's output bytes.
std::vector<py::bytes> thread_collective(OpType op_type, const std::vector<std::string>& inputs,
                                         DataType dtype, ReduceOp op, double prescale,
                                         double postscale, int64_t divisor, size_t segment_bytes,
                                         size_t small_allreduce_bytes, int in_flight, int root,
                                         const std::vector<int64_t>& split_rows,
                                         AllreduceAlgorithm algorithm, bool in_place,
                                         bool reproducible) {
  const int size = static_cast<int>(inputs.size());
  DS_CHECK(size >= 1, "thread_collective needs at least one rank's input");
  DS_CHECK(op_type != OpType::kBarrier && op_type != OpType::kJoin,
           "thread_collective runs the data-moving collectives; ", op_type_name(op_type),
           " moves no data");
  const size_t element_bytes = dtype_size(dtype);
  const CollectiveConfig config{segment_bytes, small_allreduce_bytes, in_flight, reproducible};
  const Scaling scaling{prescale, postscale, divisor};
  const int tag = op_traits(op_type).tag;
  auto fabric = std::make_shared<ThreadFabric>(size);
  std::vector<std::string> outputs(static_cast<size_t>(size));
  run_thread_ranks(size, [&](int r) {
        ThreadCommunicator comm(fabric, r);
        set_test_wait(comm);
        Workspace workspace;
        const std::string& in = inputs[static_cast<size_t>(r)];
        std::string& out = outputs[static_cast<size_t>(r)];
        const size_t count = in.size() / element_bytes;
        switch (op_type) {
          case OpType::kAllreduce:
            thread_allreduce(comm, in, out, dtype, op, scaling, config, workspace, algorithm, in_place);
            return;
          case OpType::kBroadcast: {
            out = in;
            SpanList spans(out.data(), out.data(), out.size());
            broadcast(comm, spans, root, config, workspace, tag);
            return;
          }
          case OpType::kAllgather: {
            std::vector<size_t> blocks;
            size_t total = 0;
            for (const auto& block : inputs) {
              blocks.push_back(block.size());
              total += block.size();
            }
            out.assign(total, '\0');
            allgatherv(comm, in.data(), out.data(), blocks, config, workspace, tag);
            return;
          }
          case OpType::kReducescatter: {
            const std::vector<size_t> rows = even_chunk_bounds(count, size, 1);
            const size_t mine = rows[static_cast<size_t>(r) + 1] - rows[static_cast<size_t>(r)];
            out.assign(mine * element_bytes, '\0');
            std::vector<std::byte> scratch(in.size());
            reducescatter(comm, in.data(), out.data(), scratch.data(), rows, dtype, op, scaling,
                          config, workspace, tag);
            return;
          }
          case OpType::kAlltoall: {
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
            alltoallv(comm, in.data(), send, out.data(), recv, tag);
            return;
          }
          case OpType::kBarrier:
          case OpType::kJoin:
            break;
        }
        DS_ASSERT(false, "no thread collective for ", op_type_name(op_type));
      }, [&](int r) { fabric->kill_rank(r); });
  return as_bytes(outputs);
}

// Hierarchical allreduce over hosts x per_host thread ranks: each "host" is a thread fabric of
// its own, and the ranks with the same local rank share a cross fabric.
std::vector<py::bytes> thread_hierarchical(int hosts, int per_host, const std::vector<std::string>& inputs,
                                           DataType dtype, ReduceOp op, double prescale,
                                           double postscale, int64_t divisor, size_t segment_bytes,
                                           size_t small_allreduce_bytes, int in_flight,
                                           bool reproducible) {
  const CollectiveConfig config{segment_bytes, small_allreduce_bytes, in_flight, reproducible};
  const Scaling scaling{prescale, postscale, divisor};
  const int size = hosts * per_host;
  DS_CHECK(inputs.size() == static_cast<size_t>(size), "one input per rank: ", size, " needed");
  std::vector<std::shared_ptr<ThreadFabric>> local_fabrics, cross_fabrics;
  for (int h = 0; h < hosts; ++h) local_fabrics.push_back(std::make_shared<ThreadFabric>(per_host));
  for (int l = 0; l < per_host; ++l) cross_fabrics.push_back(std::make_shared<ThreadFabric>(hosts));
  std::vector<std::string> outputs(static_cast<size_t>(size));
  run_thread_ranks(size, [&](int r) {
        const int host = r / per_host, local_rank = r % per_host;
        ThreadCommunicator local(local_fabrics[static_cast<size_t>(host)], local_rank);
        ThreadCommunicator cross(cross_fabrics[static_cast<size_t>(local_rank)], host);
        set_test_wait(local);
        set_test_wait(cross);
        Workspace workspace;
        const std::string& in = inputs[static_cast<size_t>(r)];
        std::string& out = outputs[static_cast<size_t>(r)];
        out.assign(in.size(), '\0');
        SpanList spans(in.data(), out.data(), in.size());
        hierarchical_allreduce(local, cross, spans, dtype, op, scaling, config, workspace,
                               op_traits(OpType::kAllreduce).tag);
      }, [&](int r) {
        local_fabrics[static_cast<size_t>(r / per_host)]->kill_rank(r % per_host);
        cross_fabrics[static_cast<size_t>(r % per_host)]->kill_rank(r / per_host);
      });
  return as_bytes(outputs);
}

// Allreduce of several tensors fused into one span list (one span per tensor, as the engine
// fuses them) over hosts x per_host thread ranks; flat (allreduce()) when hosts is 1, else
// hierarchical. inputs[r][t] is rank r's tensor t; returns every rank's results, per tensor.
std::vector<std::vector<py::bytes>> thread_fused_allreduce(
    int hosts, const std::vector<std::vector<std::string>>& inputs, DataType dtype, ReduceOp op,
    double prescale, double postscale, int64_t divisor, size_t segment_bytes,
    size_t small_allreduce_bytes, int in_flight, bool reproducible) {
  const CollectiveConfig config{segment_bytes, small_allreduce_bytes, in_flight, reproducible};
  const Scaling scaling{prescale, postscale, divisor};
  const int size = static_cast<int>(inputs.size());
  DS_CHECK(hosts >= 1 && size >= hosts && size % hosts == 0, "ranks (", size,
           ") must split evenly over ", hosts, " hosts");
  const int per_host = size / hosts;
  auto flat = std::make_shared<ThreadFabric>(size);
  std::vector<std::shared_ptr<ThreadFabric>> local_fabrics, cross_fabrics;
  for (int h = 0; h < hosts; ++h) local_fabrics.push_back(std::make_shared<ThreadFabric>(per_host));
  for (int l = 0; l < per_host; ++l) cross_fabrics.push_back(std::make_shared<ThreadFabric>(hosts));
  std::vector<std::vector<std::string>> outputs(static_cast<size_t>(size));
  run_thread_ranks(size, [&](int r) {
        const std::vector<std::string>& tensors = inputs[static_cast<size_t>(r)];
        std::vector<std::string>& results = outputs[static_cast<size_t>(r)];
        results.resize(tensors.size());
        SpanList spans;
        for (size_t t = 0; t < tensors.size(); ++t) {
          results[t].assign(tensors[t].size(), '\0');
          spans.add(tensors[t].data(), results[t].data(), tensors[t].size());
        }
        Workspace workspace;
        const int tag = op_traits(OpType::kAllreduce).tag;
        if (hosts == 1) {
          ThreadCommunicator comm(flat, r);
          set_test_wait(comm);
          allreduce(comm, spans, dtype, op, scaling, config, workspace, tag);
          return;
        }
        ThreadCommunicator local(local_fabrics[static_cast<size_t>(r / per_host)], r % per_host);
        ThreadCommunicator cross(cross_fabrics[static_cast<size_t>(r % per_host)], r / per_host);
        set_test_wait(local);
        set_test_wait(cross);
        hierarchical_allreduce(local, cross, spans, dtype, op, scaling, config, workspace, tag);
      }, [&](int r) {
        flat->kill_rank(r);
        local_fabrics[static_cast<size_t>(r / per_host)]->kill_rank(r % per_host);
        cross_fabrics[static_cast<size_t>(r % per_host)]->kill_rank(r / per_host);
      });
  std::vector<std::vector<py::bytes>> result;
  for (const auto& rank_outputs : outputs) result.push_back(as_bytes(rank_outputs));
  return result;
}

}  // namespace

void bind_thread_hooks(py::module_& m) {
  py::native_enum<AllreduceAlgorithm>(m, "AllreduceAlgorithm", "enum.IntEnum",
                                      "Which allreduce thread_collective runs.")
      .value("SIZE_BASED", AllreduceAlgorithm::kSizeBased)
      .value("RING", AllreduceAlgorithm::kRing)
      .value("RECURSIVE_DOUBLING", AllreduceAlgorithm::kRecursiveDoubling)
      .value("ADASUM", AllreduceAlgorithm::kAdasum)
      .finalize();
  m.def("thread_collective", &thread_collective, py::arg("op_type"), py::arg("inputs"),
        py::arg("dtype"), py::arg("op") = ReduceOp::kSum, py::kw_only(), py::arg("prescale") = 1.0,
        py::arg("postscale") = 1.0, py::arg("divisor") = 1, py::arg("segment_bytes"),
        py::arg("small_allreduce_bytes"), py::arg("in_flight"), py::arg("root") = 0,
        py::arg("split_rows") = std::vector<int64_t>{},
        py::arg("algorithm") = AllreduceAlgorithm::kSizeBased, py::arg("in_place") = false,
        py::arg("reproducible") = false,
        "Runs one collective over len(inputs) thread ranks; returns each rank's output bytes. "
        "split_rows: alltoall's N x N matrix of elements sent from rank s to rank d; algorithm "
        "and in_place: which allreduce (in_place: one buffer, the size-based choice only).");
  m.def("thread_hierarchical", &thread_hierarchical, py::arg("hosts"), py::arg("per_host"),
        py::arg("inputs"), py::arg("dtype"), py::arg("op") = ReduceOp::kSum, py::kw_only(),
        py::arg("prescale") = 1.0, py::arg("postscale") = 1.0, py::arg("divisor") = 1,
        py::arg("segment_bytes"), py::arg("small_allreduce_bytes"), py::arg("in_flight"),
        py::arg("reproducible") = false,
        "Hierarchical allreduce over hosts x per_host thread ranks; each rank's output bytes.");
  m.def("thread_fused_allreduce", &thread_fused_allreduce, py::arg("hosts"), py::arg("inputs"),
        py::arg("dtype"), py::arg("op") = ReduceOp::kSum, py::kw_only(), py::arg("prescale") = 1.0,
        py::arg("postscale") = 1.0, py::arg("divisor") = 1, py::arg("segment_bytes"),
        py::arg("small_allreduce_bytes"), py::arg("in_flight"), py::arg("reproducible"),
        "Allreduce of inputs[r] (rank r's tensors, fused as one span each) over hosts x "
        "len(inputs)/hosts thread ranks (hierarchical when hosts > 1); results[r][t].");
}

}  // namespace dist_sync::python
