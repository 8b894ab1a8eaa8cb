#include <cstring>

#include "collectives/broadcast.h"
#include "engine/executors/executor.h"

namespace dist_sync {

// Fused broadcasts share one root and travel as one span list. The root sends from its inputs
// (copying them to its outputs once); a joined rank relays through zeroed scratch.
void execute_broadcast(const ExecutionContext& context, const Response& response,
                       const std::vector<Request*>& locals, OpResult& result) {
  const int root = response.requests.front().root;
  const bool is_root = context.comm.rank() == root;
  const size_t missing_bytes = joined_bytes(response, locals);
  std::byte* scratch = missing_bytes > 0 ? context.zeros.get(missing_bytes) : nullptr;
  SpanList spans;
  for (size_t i = 0; i < locals.size(); ++i) {
    const RequestMeta& meta = response.requests[i];
    for (size_t t = 0; t < meta.tensors.size(); ++t) {
      const size_t bytes = meta.tensors[t].bytes();
      if (locals[i] == nullptr) {
        spans.add(scratch, scratch, bytes);
        scratch += bytes;
      } else if (is_root) {
        spans.add(locals[i]->inputs[t], locals[i]->outputs[t], bytes);
        if (locals[i]->inputs[t] != locals[i]->outputs[t]) {
          std::memcpy(locals[i]->outputs[t], locals[i]->inputs[t], bytes);
        }
      } else {
        spans.add(locals[i]->outputs[t], locals[i]->outputs[t], bytes);
      }
    }
  }
  broadcast(context.comm, spans, root, context.collectives, context.workspace,
            op_traits(OpType::kBroadcast).tag);
}

}  // namespace dist_sync
