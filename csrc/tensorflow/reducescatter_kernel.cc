// DistSyncReducescatter: this rank's rows of the reduction over the ranks of a process set (the
// r-th rank gets rows [start_r, end_r), the first rows % size ranks one row more).
#include "tensorflow/collective_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dist_sync::tf_ops {
namespace tf = ::tensorflow;

REGISTER_OP("DistSyncReducescatter")
    .Attr("T: " DIST_SYNC_REDUCIBLE_TYPES)
    .SetIsStateful()  // Note [Collective ops are stateful]
    .Attr("tensor_name: string")
    .Attr("reduce_op: int")
    .Attr("process_set: int = 0")
    .Input("tensor: T")
    .Input("prescale: double")
    .Input("postscale: double")
    .Output("scattered: T")
    .SetShapeFn([](tf::shape_inference::InferenceContext* c) -> absl::Status {
      tf::shape_inference::ShapeHandle input;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &input));
      tf::shape_inference::ShapeHandle scattered;
      TF_RETURN_IF_ERROR(c->ReplaceDim(input, 0, c->UnknownDim(), &scattered));
      c->set_output(0, scattered);
      return absl::OkStatus();
    });

class ReducescatterKernel : public CollectiveKernel {
 public:
  explicit ReducescatterKernel(tf::OpKernelConstruction* c) : CollectiveKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("reduce_op", &reduce_op_));
  }

  void ComputeAsync(tf::OpKernelContext* context, DoneCallback done) override {
    const tf::Tensor& input = context->input(0);
    OP_REQUIRES_ASYNC(context, input.dims() >= 1,
                      absl::InvalidArgumentError("reducescatter needs a tensor with at least "
                                                 "one dimension"),
                      done);
    dist_sync_request request{};
    request.op_type = DIST_SYNC_REDUCESCATTER;
    request.reduce_op = reduce_op_;
    OP_REQUIRES_OK_ASYNC(context, scalar_double(context, 1, &request.prescale), done);
    OP_REQUIRES_OK_ASYNC(context, scalar_double(context, 2, &request.postscale), done);
    TensorList tensors;
    tensors.add(tensor_name(), input, engine_dtype(input.dtype(), false), nullptr);
    submit(context, done, request, tensors,
           [](tf::OpKernelContext* c, const dist_sync_output& output) -> absl::Status {
             return output_from_engine(c, 0, output);
           });
  }

 private:
  int32_t reduce_op_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("DistSyncReducescatter").Device(tf::DEVICE_CPU),
                        ReducescatterKernel);

}  // namespace dist_sync::tf_ops
