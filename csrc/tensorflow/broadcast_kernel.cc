// DistSyncBroadcast: the root's tensor on every rank of a process set, as a new output.
#include "tensorflow/collective_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dist_sync::tf_ops {
namespace tf = ::tensorflow;

REGISTER_OP("DistSyncBroadcast")
    .Attr("T: " DIST_SYNC_MOVABLE_TYPES)
    .SetIsStateful()  // Note [Collective ops are stateful]
    .Attr("tensor_name: string")
    .Attr("root: int")  // the root's position in the process set
    .Attr("process_set: int = 0")
    .Input("tensor: T")
    .Output("broadcast: T")
    .SetShapeFn([](tf::shape_inference::InferenceContext* c) -> absl::Status {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

class BroadcastKernel : public CollectiveKernel {
 public:
  explicit BroadcastKernel(tf::OpKernelConstruction* c) : CollectiveKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("root", &root_));
  }

  void ComputeAsync(tf::OpKernelContext* context, DoneCallback done) override {
    const tf::Tensor& input = context->input(0);
    tf::Tensor* output = nullptr;
    OP_REQUIRES_OK_ASYNC(context, context->allocate_output(0, input.shape(), &output), done);
    dist_sync_request request{};
    request.op_type = DIST_SYNC_BROADCAST;
    request.prescale = 1.0;
    request.postscale = 1.0;
    request.root = root_;
    TensorList tensors;
    // The engine copies the root's input to its output.
    tensors.add(tensor_name(), input, engine_dtype(input.dtype(), true),
                const_cast<char*>(output->tensor_data().data()));
    submit(context, done, request, tensors);
  }

 private:
  int32_t root_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("DistSyncBroadcast").Device(tf::DEVICE_CPU), BroadcastKernel);

}  // namespace dist_sync::tf_ops
