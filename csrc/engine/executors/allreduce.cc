#include <map>

#include <cstring>
#include <vector>

#include "collectives/adasum.h"
#include "collectives/allreduce.h"
#include "collectives/hierarchical.h"
#include "engine/executors/executor.h"

namespace dist_sync {
namespace {

// Adasum combines each tensor on its own (its dot products are the tensor's), so Adasum
// requests are never fused (negotiation.cc) and a grouped request runs tensor by tensor.
void execute_adasum(const ExecutionContext& context, const Response& response,
                    const std::vector<Request*>& locals, int tag) {
  for (size_t i = 0; i < locals.size(); ++i) {
    const RequestMeta& meta = response.requests[i];
    for (size_t t = 0; t < meta.tensors.size(); ++t) {
      const TensorMeta& tensor = meta.tensors[t];
      const size_t bytes = tensor.bytes();
      const size_t count = static_cast<size_t>(tensor.elements());
      std::vector<std::byte> joined;  // a joined rank combines zeros and keeps no result
      void* data;
      if (locals[i] != nullptr) {
        data = locals[i]->outputs[t];
        if (data != locals[i]->inputs[t]) std::memcpy(data, locals[i]->inputs[t], bytes);
      } else {
        joined.assign(bytes, std::byte{0});
        data = joined.data();
      }
      std::byte* scratch =
          context.workspace.get(Workspace::kFusion, (count / 2 + 1) * dtype_size(tensor.dtype));
      adasum_allreduce(context.comm, data, count, tensor.dtype, meta.prescale, meta.postscale,
                       scratch, tag);
    }
  }
}

}  // namespace

// Fused requests are reduced as one span list (Note [Fusion without copies]), one span per
// tensor, which the reproducible order relies on (Note [Canonical reduction order]); a joined
// rank adds zeros of the same sizes, so every rank's spans line up.
void execute_allreduce(const ExecutionContext& context, const Response& response,
                       const std::vector<Request*>& locals, OpResult& result) {
  const RequestMeta& first = response.requests.front();
  const int tag = op_traits(OpType::kAllreduce).tag;
  if (first.reduce_op == ReduceOp::kAdasum) {
    execute_adasum(context, response, locals, tag);
    return;
  }
  const Scaling scaling = scaling_of(first, context.comm.size());
  const size_t missing_bytes = joined_bytes(response, locals);
  std::byte* zero_cursor = missing_bytes > 0 ? context.zeros.get(missing_bytes) : nullptr;
  // A grouped request may mix dtypes: one pass per dtype, in a fixed (enum) order.
  std::map<DataType, SpanList> by_dtype;
  for (size_t i = 0; i < locals.size(); ++i) {
    const RequestMeta& meta = response.requests[i];
    for (size_t t = 0; t < meta.tensors.size(); ++t) {
      const size_t bytes = meta.tensors[t].bytes();
      SpanList& spans = by_dtype[meta.tensors[t].dtype];
      if (locals[i] != nullptr) {
        spans.add(locals[i]->inputs[t], locals[i]->outputs[t], bytes);
      } else {
        spans.add(zero_cursor, zero_cursor, bytes);  // joined: contribute zeros
        zero_cursor += bytes;
      }
    }
  }
  for (const auto& [dtype, spans] : by_dtype) {
    // Reproducible: the hierarchical order differs from the flat one, so the choice must not
    // depend on the fused size (Note [Canonical reduction order]).
    const bool hierarchical =
        context.local != nullptr &&
        (context.collectives.reproducible || spans.bytes() > context.collectives.small_allreduce_bytes);
    if (hierarchical) {
      hierarchical_allreduce(*context.local, *context.cross, spans, dtype, first.reduce_op, scaling,
                             context.collectives, context.workspace, tag, context.phases);
    } else {
      allreduce(context.comm, spans, dtype, first.reduce_op, scaling, context.collectives,
                context.workspace, tag, context.phases);
    }
  }
}

}  // namespace dist_sync
