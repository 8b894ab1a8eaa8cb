#include "tensorflow/collective_kernel.h"

#include <cstring>
#include <memory>
#include <utility>

#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/engine_link.h"

namespace dist_sync::tf_ops {

namespace tf = ::tensorflow;

// Note [Asynchronous collective kernels]
// A kernel hands its operation to the engine (through the C table, engine_link.h) and returns;
// the engine's thread calls back when every rank has taken part, and the callback ends the op
// with done(). So a waiting collective holds no TensorFlow thread and never the GIL, the nodes
// of a graph may run in any order (negotiation pairs them by name), and independent
// collectives are in flight together, where the engine fuses them. Inputs stay alive (the op
// context holds them) until done(); allreduce and broadcast write straight into outputs
// allocated before submission.
namespace {

// What the callback needs; owned by the engine's call from submission to completion.
struct Pending {
  tf::OpKernelContext* context;
  tf::AsyncOpKernel::DoneCallback done;
  Finish finish;
};

void on_done(void* opaque, int32_t status, const char* message,
             const dist_sync_output* output) {
  std::unique_ptr<Pending> pending(static_cast<Pending*>(opaque));
  absl::Status result = to_status(status, message);
  if (result.ok() && pending->finish) result = pending->finish(pending->context, *output);
  if (!result.ok()) pending->context->SetStatus(result);
  pending->done();
}

}  // namespace

int32_t engine_dtype(tf::DataType dtype, bool moving) {
  switch (dtype) {
    case tf::DT_UINT8: return DIST_SYNC_UINT8;
    case tf::DT_INT8: return DIST_SYNC_INT8;
    case tf::DT_INT16: return DIST_SYNC_INT16;
    case tf::DT_INT32: return DIST_SYNC_INT32;
    case tf::DT_INT64: return DIST_SYNC_INT64;
    case tf::DT_HALF: return DIST_SYNC_FLOAT16;
    case tf::DT_BFLOAT16: return DIST_SYNC_BFLOAT16;
    case tf::DT_FLOAT: return DIST_SYNC_FLOAT32;
    case tf::DT_DOUBLE: return DIST_SYNC_FLOAT64;
    case tf::DT_BOOL: return moving ? DIST_SYNC_UINT8 : -1;
    case tf::DT_UINT16: return moving ? DIST_SYNC_INT16 : -1;
    case tf::DT_UINT32: return moving ? DIST_SYNC_INT32 : -1;
    case tf::DT_UINT64: return moving ? DIST_SYNC_INT64 : -1;
    default: return -1;
  }
}

void TensorList::add(std::string name, const tf::Tensor& tensor, int32_t dtype, void* output,
                     bool as_rows) {
  Item item{std::move(name), {}, tensor.tensor_data().data(), output, dtype};
  for (const auto& dim : tensor.shape()) item.shape.push_back(dim.size);
  if (as_rows && item.shape.empty()) item.shape.push_back(1);
  items_.push_back(std::move(item));
}

const std::vector<dist_sync_tensor>& TensorList::views() {
  views_.clear();
  for (const Item& item : items_) {
    views_.push_back(dist_sync_tensor{item.name.c_str(), item.input, item.output, item.dtype,
                                      static_cast<int32_t>(item.shape.size()),
                                      item.shape.data()});
  }
  return views_;
}

CollectiveKernel::CollectiveKernel(tf::OpKernelConstruction* construction)
    : AsyncOpKernel(construction) {
  OP_REQUIRES_OK(construction, construction->GetAttr("tensor_name", &tensor_name_));
  OP_REQUIRES_OK(construction, construction->GetAttr("process_set", &process_set_));
}

void CollectiveKernel::submit(tf::OpKernelContext* context, DoneCallback done,
                              dist_sync_request request, TensorList& tensors,
                              Finish finish) const {
  const dist_sync_c_api* api = c_api();
  OP_REQUIRES_ASYNC(context, api != nullptr,
                    absl::FailedPreconditionError(
                        "dist_sync's TensorFlow ops were loaded without dist_sync.tensorflow "
                        "(import dist_sync.tensorflow and call init() first)"),
                    done);
  const std::vector<dist_sync_tensor>& views = tensors.views();
  request.name = tensor_name_.c_str();
  request.process_set = process_set_;
  request.tensors = views.data();
  request.num_tensors = static_cast<int32_t>(views.size());
  auto pending = std::make_unique<Pending>(Pending{context, done, std::move(finish)});
  char message[2048];
  const int32_t refused = api->submit(&request, &on_done, pending.get(), message, sizeof message);
  if (refused != DIST_SYNC_OK) {
    context->SetStatus(to_status(refused, message));
    done();
    return;
  }
  // Accepted: the engine calls on_done exactly once, which takes ownership back.
  pending.release();
}

absl::Status scalar_double(tf::OpKernelContext* context, int index, double* value) {
  const tf::Tensor& tensor = context->input(index);
  if (tensor.dtype() != tf::DT_DOUBLE || tensor.NumElements() != 1) {
    return absl::InvalidArgumentError("dist_sync: prescale and postscale must be float64 scalars");
  }
  *value = tensor.flat<double>()(0);
  return absl::OkStatus();
}

absl::Status output_from_engine(tf::OpKernelContext* context, int index,
                                const dist_sync_output& output) {
  tf::TensorShape shape;
  for (int32_t d = 0; d < output.ndim; ++d) {
    absl::Status status = shape.AddDimWithStatus(output.shape[d]);
    if (!status.ok()) return status;
  }
  tf::Tensor* result = nullptr;
  absl::Status status = context->allocate_output(index, shape, &result);
  if (!status.ok()) return status;
  const absl::string_view target = result->tensor_data();
  if (target.size() != output.bytes) {
    return absl::InternalError("dist_sync: the engine's result has " +
                               std::to_string(output.bytes) + " bytes, the output " +
                               std::to_string(target.size()));
  }
  if (output.bytes > 0) std::memcpy(const_cast<char*>(target.data()), output.data, output.bytes);
  return absl::OkStatus();
}

absl::Status rows_output(tf::OpKernelContext* context, int index, const int64_t* rows,
                         int32_t count) {
  tf::TensorShape shape;
  shape.AddDim(count);
  tf::Tensor* result = nullptr;
  absl::Status status = context->allocate_output(index, shape, &result);
  if (!status.ok()) return status;
  auto values = result->flat<int32_t>();
  for (int32_t i = 0; i < count; ++i) values(i) = static_cast<int32_t>(rows[i]);
  return absl::OkStatus();
}

}  // namespace dist_sync::tf_ops
