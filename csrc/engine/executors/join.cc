#include "engine/executors/executor.h"

namespace dist_sync {

// Negotiation answered join once every rank had joined; the caller learns which rank was last.
void execute_join(const ExecutionContext& context, const Response& response,
                  const std::vector<Request*>& locals, OpResult& result) {
  result.join_rank = response.last_joined;
}

}  // namespace dist_sync
