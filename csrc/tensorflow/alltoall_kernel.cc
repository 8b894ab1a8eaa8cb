// DistSyncAlltoall: rows [sum(splits[:p]), sum(splits[:p+1])) of the tensor go to rank p of the
// process set (no splits: the first dimension divided evenly); returns what arrived and the
// rows received from each rank.
#include <vector>

#include "tensorflow/collective_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dist_sync::tf_ops {
namespace tf = ::tensorflow;

REGISTER_OP("DistSyncAlltoall")
    .Attr("T: " DIST_SYNC_MOVABLE_TYPES)
    .SetIsStateful()  // Note [Collective ops are stateful]
    .Attr("tensor_name: string")
    .Attr("process_set: int = 0")
    .Input("tensor: T")
    .Input("splits: int64")  // empty: divide evenly
    .Output("received: T")
    .Output("received_splits: int32")
    .SetShapeFn([](tf::shape_inference::InferenceContext* c) -> absl::Status {
      tf::shape_inference::ShapeHandle input;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &input));
      tf::shape_inference::ShapeHandle received;
      TF_RETURN_IF_ERROR(c->ReplaceDim(input, 0, c->UnknownDim(), &received));
      c->set_output(0, received);
      c->set_output(1, c->Vector(c->UnknownDim()));
      return absl::OkStatus();
    });

class AlltoallKernel : public CollectiveKernel {
 public:
  using CollectiveKernel::CollectiveKernel;

  void ComputeAsync(tf::OpKernelContext* context, DoneCallback done) override {
    const tf::Tensor& input = context->input(0);
    OP_REQUIRES_ASYNC(context, input.dims() >= 1,
                      absl::InvalidArgumentError("alltoall needs a tensor with at least one "
                                                 "dimension"),
                      done);
    const tf::Tensor& split_input = context->input(1);
    std::vector<int64_t> splits;
    const auto values = split_input.flat<int64_t>();
    for (int64_t i = 0; i < values.size(); ++i) splits.push_back(values(i));
    dist_sync_request request{};
    request.op_type = DIST_SYNC_ALLTOALL;
    request.prescale = 1.0;
    request.postscale = 1.0;
    // Checked against the set's size and the rows by the engine's binding (INVALID_ARGUMENT).
    request.splits = splits.data();
    request.num_splits = static_cast<int32_t>(splits.size());
    TensorList tensors;
    tensors.add(tensor_name(), input, engine_dtype(input.dtype(), true), nullptr);
    submit(context, done, request, tensors,
           [](tf::OpKernelContext* c, const dist_sync_output& output) -> absl::Status {
             TF_RETURN_IF_ERROR(output_from_engine(c, 0, output));
             return rows_output(c, 1, output.received_splits, output.num_received_splits);
           });
  }
};

REGISTER_KERNEL_BUILDER(Name("DistSyncAlltoall").Device(tf::DEVICE_CPU), AlltoallKernel);

}  // namespace dist_sync::tf_ops
