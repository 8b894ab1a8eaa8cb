// DistSyncAllgather: every rank's tensor concatenated along the first dimension (which may
// differ between ranks; a scalar is one row), and the rows each rank contributed.
#include "tensorflow/collective_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dist_sync::tf_ops {
namespace tf = ::tensorflow;

REGISTER_OP("DistSyncAllgather")
    .Attr("T: " DIST_SYNC_MOVABLE_TYPES)
    .SetIsStateful()  // Note [Collective ops are stateful]
    .Attr("tensor_name: string")
    .Attr("process_set: int = 0")
    .Input("tensor: T")
    .Output("gathered: T")
    .Output("rows: int32")
    .SetShapeFn([](tf::shape_inference::InferenceContext* c) -> absl::Status {
      tf::shape_inference::ShapeHandle input = c->input(0);
      if (!c->RankKnown(input)) {
        c->set_output(0, c->UnknownShape());
      } else if (c->Rank(input) == 0) {
        c->set_output(0, c->Vector(c->UnknownDim()));
      } else {
        tf::shape_inference::ShapeHandle gathered;
        TF_RETURN_IF_ERROR(c->ReplaceDim(input, 0, c->UnknownDim(), &gathered));
        c->set_output(0, gathered);
      }
      c->set_output(1, c->Vector(c->UnknownDim()));
      return absl::OkStatus();
    });

class AllgatherKernel : public CollectiveKernel {
 public:
  using CollectiveKernel::CollectiveKernel;

  void ComputeAsync(tf::OpKernelContext* context, DoneCallback done) override {
    const tf::Tensor& input = context->input(0);
    dist_sync_request request{};
    request.op_type = DIST_SYNC_ALLGATHER;
    request.prescale = 1.0;
    request.postscale = 1.0;
    TensorList tensors;
    tensors.add(tensor_name(), input, engine_dtype(input.dtype(), true), nullptr,
                /*as_rows=*/true);
    submit(context, done, request, tensors,
           [](tf::OpKernelContext* c, const dist_sync_output& output) -> absl::Status {
             TF_RETURN_IF_ERROR(output_from_engine(c, 0, output));
             // One tensor: received_splits holds each rank's rows.
             return rows_output(c, 1, output.received_splits, output.num_received_splits);
           });
  }
};

REGISTER_KERNEL_BUILDER(Name("DistSyncAllgather").Device(tf::DEVICE_CPU), AllgatherKernel);

}  // namespace dist_sync::tf_ops
