// DistSyncAllreduce: one or several tensors (a grouped allreduce: negotiated as one unit, fused
// by the engine) reduced over the ranks of a process set, each into a new output.
#include <string>
#include <vector>

#include "tensorflow/collective_kernel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dist_sync::tf_ops {
namespace tf = ::tensorflow;

REGISTER_OP("DistSyncAllreduce")
    .Attr("T: list(" DIST_SYNC_REDUCIBLE_TYPES ")")
    .SetIsStateful()  // Note [Collective ops are stateful]
    .Attr("tensor_name: string")
    .Attr("tensor_names: list(string)")
    .Attr("reduce_op: int")
    .Attr("process_set: int = 0")
    .Input("tensors: T")
    .Input("prescale: double")
    .Input("postscale: double")
    .Output("reduced: T")
    .SetShapeFn([](tf::shape_inference::InferenceContext* c) -> absl::Status {
      for (int i = 0; i < c->num_outputs(); ++i) c->set_output(i, c->input(i));
      return absl::OkStatus();
    });

class AllreduceKernel : public CollectiveKernel {
 public:
  explicit AllreduceKernel(tf::OpKernelConstruction* c) : CollectiveKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("tensor_names", &names_));
    OP_REQUIRES_OK(c, c->GetAttr("reduce_op", &reduce_op_));
  }

  void ComputeAsync(tf::OpKernelContext* context, DoneCallback done) override {
    const int count = context->num_outputs();
    OP_REQUIRES_ASYNC(context, static_cast<int>(names_.size()) == count,
                      absl::InvalidArgumentError("DistSyncAllreduce: one name per tensor"), done);
    dist_sync_request request{};
    request.op_type = DIST_SYNC_ALLREDUCE;
    request.reduce_op = reduce_op_;
    OP_REQUIRES_OK_ASYNC(context, scalar_double(context, count, &request.prescale), done);
    OP_REQUIRES_OK_ASYNC(context, scalar_double(context, count + 1, &request.postscale), done);
    TensorList tensors;
    for (int i = 0; i < count; ++i) {
      const tf::Tensor& input = context->input(i);
      // Reduced in place when TensorFlow lets this op take over the input's buffer (a
      // gradient nothing else reads): no fresh output to fault in, no second pass over memory.
      tf::Tensor* output = nullptr;
      OP_REQUIRES_OK_ASYNC(
          context, context->forward_input_or_allocate_output({i}, i, input.shape(), &output),
          done);
      tensors.add(names_[static_cast<size_t>(i)], input, engine_dtype(input.dtype(), false),
                  const_cast<char*>(output->tensor_data().data()));
    }
    submit(context, done, request, tensors);
  }

 private:
  std::vector<std::string> names_;
  int32_t reduce_op_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("DistSyncAllreduce").Device(tf::DEVICE_CPU), AllreduceKernel);

}  // namespace dist_sync::tf_ops
