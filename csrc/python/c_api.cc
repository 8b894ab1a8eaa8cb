// The C table of csrc/capi/dist_sync_c_api.h, filled by this module (Note [One engine, a C
// table for other libraries]): submissions go to the same engines as dist_sync._core.submit.
#include "python/c_api.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "capi/dist_sync_c_api.h"
#include "common/errors.h"
#include "engine/handles.h"
#include "engine/request.h"
#include "python/session.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

static_assert(static_cast<int>(ErrorKind::kMismatch) == DIST_SYNC_ERROR_MISMATCH &&
                  static_cast<int>(ErrorKind::kInvalid) == DIST_SYNC_ERROR_INVALID &&
                  static_cast<int>(ErrorKind::kFatal) == DIST_SYNC_ERROR_FATAL &&
                  static_cast<int>(ErrorKind::kShutdown) == DIST_SYNC_ERROR_SHUTDOWN,
              "the C table's error kinds are the engine's");
static_assert(static_cast<int>(OpType::kAllreduce) == DIST_SYNC_ALLREDUCE &&
                  static_cast<int>(OpType::kBroadcast) == DIST_SYNC_BROADCAST &&
                  static_cast<int>(OpType::kAllgather) == DIST_SYNC_ALLGATHER &&
                  static_cast<int>(OpType::kAlltoall) == DIST_SYNC_ALLTOALL &&
                  static_cast<int>(OpType::kReducescatter) == DIST_SYNC_REDUCESCATTER,
              "the C table's op types are the engine's");
static_assert(static_cast<int>(DataType::kUInt8) == DIST_SYNC_UINT8 &&
                  static_cast<int>(DataType::kInt64) == DIST_SYNC_INT64 &&
                  static_cast<int>(DataType::kFloat16) == DIST_SYNC_FLOAT16 &&
                  static_cast<int>(DataType::kBFloat16) == DIST_SYNC_BFLOAT16 &&
                  static_cast<int>(DataType::kFloat64) == DIST_SYNC_FLOAT64,
              "the C table's dtypes are the engine's");

void copy_message(const std::string& text, char* message, size_t capacity) {
  if (message == nullptr || capacity == 0) return;
  const size_t length = std::min(text.size(), capacity - 1);
  std::memcpy(message, text.data(), length);
  message[length] = '\0';
}

Request make_request(const dist_sync_request& in) {
  DS_CHECK(is_op_type(in.op_type), "unknown op type ", in.op_type);
  DS_CHECK(is_user_reduce_op(in.reduce_op), "unknown reduce op ", in.reduce_op);
  DS_CHECK(in.name != nullptr && in.name[0] != '\0', "an operation needs a name");
  DS_CHECK(in.num_tensors >= 0 && in.num_splits >= 0, "negative counts");
  Request request;
  request.meta.type = static_cast<OpType>(in.op_type);
  request.meta.name = in.name;
  request.meta.reduce_op = static_cast<ReduceOp>(in.reduce_op);
  request.meta.prescale = in.prescale;
  request.meta.postscale = in.postscale;
  request.meta.root = in.root;
  request.meta.splits.assign(in.splits, in.splits + in.num_splits);
  request.meta.device = DeviceKind::kCpu;
  // Names come from the graph (stable across calls), so the response cache may keep them.
  request.meta.cacheable = true;
  for (int32_t i = 0; i < in.num_tensors; ++i) {
    const dist_sync_tensor& t = in.tensors[i];
    DS_CHECK(is_user_dtype(t.dtype), "unsupported dtype code ", t.dtype);
    DS_CHECK(t.ndim >= 0, "negative rank");
    TensorMeta tensor;
    tensor.name = t.name != nullptr ? t.name : "";
    tensor.dtype = static_cast<DataType>(t.dtype);
    tensor.shape.assign(t.shape, t.shape + t.ndim);
    request.meta.tensors.push_back(std::move(tensor));
    request.inputs.push_back(t.input);
    request.outputs.push_back(t.output);
  }
  return request;
}

// What the Python front end checks before _core.submit (dist_sync/_validation.py), here for
// arguments that only exist when a graph runs; the engine relies on them (a bad split or root
// would otherwise reach the data path). Same messages.
void check_arguments(Request& request, int set_size) {
  RequestMeta& meta = request.meta;
  const OpTraits& traits = op_traits(meta.type);
  if (traits.has_root) {
    DS_CHECK(meta.root >= 0 && meta.root < set_size, "root rank ", meta.root,
             " is not a rank of the process set (it has ", set_size, " ranks)");
  }
  if (meta.type == OpType::kReducescatter || meta.type == OpType::kAlltoall) {
    for (const TensorMeta& tensor : meta.tensors) {
      DS_CHECK(!tensor.shape.empty(), op_type_name(meta.type),
               " needs a tensor with at least one dimension");
    }
  }
  if (meta.type != OpType::kAlltoall) return;
  DS_CHECK(meta.tensors.size() == 1, "alltoall takes one tensor");
  const int64_t rows = meta.tensors.front().rows();
  if (meta.splits.empty()) {
    DS_CHECK(rows % set_size == 0, "alltoall without splits needs the first dimension (", rows,
             ") to be divisible by the number of ranks (", set_size, "); pass splits=");
    meta.splits.assign(static_cast<size_t>(set_size), rows / set_size);
    return;
  }
  DS_CHECK(meta.splits.size() == static_cast<size_t>(set_size), "splits has ",
           meta.splits.size(), " entries but there are ", set_size, " ranks");
  int64_t total = 0;
  for (const int64_t split : meta.splits) {
    DS_CHECK(split >= 0, "splits must be non-negative, got ", split);
    total += split;
  }
  DS_CHECK(total == rows, "splits sum to ", total, " but the first dimension is ", rows);
}

// Runs on the completing thread (Note [Completion callbacks]): translates the result into the
// table's POD view for the duration of the call.
void deliver(dist_sync_done done, void* context, const OpResult& result) {
  dist_sync_output output{};
  if (result.output) {
    output.data = result.output->data();
    output.bytes = result.output->bytes();
  }
  output.shape = result.output_shape.data();
  output.ndim = static_cast<int32_t>(result.output_shape.size());
  output.received_splits = result.received_splits.data();
  output.num_received_splits = static_cast<int32_t>(result.received_splits.size());
  const int32_t status = result.error.empty() ? DIST_SYNC_OK
                         : result.error_kind == ErrorKind::kNone
                             ? DIST_SYNC_ERROR_FATAL
                             : static_cast<int32_t>(result.error_kind);
  done(context, status, result.error.c_str(), &output);
}

int32_t submit(const dist_sync_request* in, dist_sync_done done, void* context, char* message,
               size_t capacity) {
  std::shared_ptr<Engine> engine;
  try {
    if (in == nullptr || done == nullptr) throw UsageError("submit needs a request and a callback");
    Request request = make_request(*in);
    engine = process_set_engine(in->process_set);
    check_arguments(request, engine->size());
    request.on_complete = [done, context](OpResult&& result) { deliver(done, context, result); };
    engine->submit(std::move(request));
    return DIST_SYNC_OK;
  } catch (const UsageError& error) {
    copy_message(error.what(), message, capacity);
    return DIST_SYNC_ERROR_INVALID;
  } catch (const std::exception& error) {
    // Not initialized, shut down, or stopped by a fault.
    copy_message(error.what(), message, capacity);
    return engine != nullptr && engine->failed() ? DIST_SYNC_ERROR_FATAL
                                                 : DIST_SYNC_ERROR_SHUTDOWN;
  }
}

const dist_sync_c_api kTable{DIST_SYNC_C_API_VERSION, sizeof(dist_sync_c_api), &submit};

}  // namespace

void bind_c_api(py::module_& core) {
  // The table is static: the capsule only lends its address.
  core.attr("_c_api") = py::capsule(static_cast<const void*>(&kTable), DIST_SYNC_C_API_CAPSULE);
}

}  // namespace dist_sync::python
