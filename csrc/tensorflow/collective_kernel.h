// What every dist_sync TensorFlow kernel shares: the engine's dtype codes for TensorFlow's
// dtypes, the description of a request's tensors, and submission with completion through the
// kernel's done callback (Note [Asynchronous collective kernels]).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "capi/dist_sync_c_api.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace dist_sync::tf_ops {

// Note [Collective ops are stateful]
// Every dist_sync op is registered stateful: a collective is an exchange with the other ranks,
// not a function of its inputs. So TensorFlow never evaluates one while optimizing a graph
// (constant folding would submit it on one rank, outside any step), never merges two of them,
// and runs one even when nothing uses its outputs (the other ranks wait for it). Inside
// tf.function, automatic control dependencies would then run stateful ops one after another in
// program order; dist_sync marks its nodes as independent side effects instead (_graph.py:
// kernel_node), since negotiation pairs them by name in any order.

// Attribute lists of the ops' dtypes: those the engine reduces, and those it only moves
// (broadcast, allgather, alltoall also take bool and the unsigned types, as Horovod's do: their
// bytes travel as the engine's integer type of the same width).
#define DIST_SYNC_REDUCIBLE_TYPES \
  "{uint8, int8, int16, int32, int64, half, bfloat16, float, double}"
#define DIST_SYNC_MOVABLE_TYPES                                                     \
  "{uint8, int8, int16, int32, int64, half, bfloat16, float, double, bool, uint16, " \
  "uint32, uint64}"

// The engine's DataType code for `dtype` (with `moving`, same-width integers for the movable
// extras); -1 if the engine has none.
int32_t engine_dtype(::tensorflow::DataType dtype, bool moving);

// The tensors of one request. Owns the names and shapes the C views point into; the views are
// made last (views()), when no more tensors are added.
class TensorList {
 public:
  // `output`: where the engine writes this tensor's result (allreduce, broadcast), else null.
  // `as_rows`: a scalar is submitted as one row (allgather).
  void add(std::string name, const ::tensorflow::Tensor& tensor, int32_t dtype, void* output,
           bool as_rows = false);
  const std::vector<dist_sync_tensor>& views();

 private:
  struct Item {
    std::string name;
    std::vector<int64_t> shape;
    const void* input;
    void* output;
    int32_t dtype;
  };
  std::vector<Item> items_;
  std::vector<dist_sync_tensor> views_;
};

// Runs on success before done(): fills the outputs whose size negotiation decided.
using Finish =
    std::function<absl::Status(::tensorflow::OpKernelContext*, const dist_sync_output&)>;

// Base of the collective kernels: the attributes every one has (tensor_name: the negotiation
// key, given when the graph is built; process_set: a set id) and submission.
class CollectiveKernel : public ::tensorflow::AsyncOpKernel {
 public:
  explicit CollectiveKernel(::tensorflow::OpKernelConstruction* construction);

 protected:
  // Hands `request` (name and process set filled in here) to the engine and returns at once.
  // done() runs when the engine completes it (after `finish`, on success), or now if refused;
  // a failure becomes the op's status (engine_link.h: to_status).
  void submit(::tensorflow::OpKernelContext* context, DoneCallback done,
              dist_sync_request request, TensorList& tensors, Finish finish = nullptr) const;

  const std::string& tensor_name() const { return tensor_name_; }

 private:
  std::string tensor_name_;
  int32_t process_set_ = 0;
};

// The scalar double input `index` (prescale and postscale travel as inputs: a float attribute
// is 32 bits, and a factor computed when the graph runs stays possible).
absl::Status scalar_double(::tensorflow::OpKernelContext* context, int index, double* value);

// Copies the engine's buffer into output `index`, allocated with the engine's shape. The one
// copy of the operations whose result size comes from negotiation: the engine allocates that
// memory before TensorFlow could be asked for it.
absl::Status output_from_engine(::tensorflow::OpKernelContext* context, int index,
                                const dist_sync_output& output);

// The engine's row counts as an int32 vector output `index`.
absl::Status rows_output(::tensorflow::OpKernelContext* context, int index,
                         const int64_t* rows, int32_t count);

}  // namespace dist_sync::tf_ops
