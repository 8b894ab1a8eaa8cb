#include "engine/executors/executor.h"

namespace dist_sync {

// Nothing to move: negotiation released the barrier once every rank had submitted it.
void execute_barrier(const ExecutionContext& context, const Response& response,
                     const std::vector<Request*>& locals, OpResult& result) {}

}  // namespace dist_sync
