#include "tensorflow/engine_link.h"

#include <atomic>
#include <string>

namespace dist_sync::tf_ops {
namespace {

// Set once at import, read by every kernel: an atomic pointer, no lock.
std::atomic<const dist_sync_c_api*> g_table{nullptr};

}  // namespace

const dist_sync_c_api* c_api() { return g_table.load(std::memory_order_acquire); }

absl::Status to_status(int32_t kind, const char* message) {
  const std::string text = message != nullptr ? message : "";
  switch (kind) {
    case DIST_SYNC_OK:
      return absl::OkStatus();
    case DIST_SYNC_ERROR_MISMATCH:
      return absl::FailedPreconditionError(text);
    case DIST_SYNC_ERROR_INVALID:
      return absl::InvalidArgumentError(text);
    case DIST_SYNC_ERROR_FATAL:
      return absl::AbortedError(text);
    case DIST_SYNC_ERROR_SHUTDOWN:
      // Not UNAVAILABLE: TensorFlow reads that as a network failure and, for a function run
      // eagerly, replaces it with INTERNAL. Horovod's ops say FAILED_PRECONDITION here too.
      return absl::FailedPreconditionError(text);
    default:
      return absl::InternalError("dist_sync: unknown error kind " + std::to_string(kind) + ": " +
                                 text);
  }
}

}  // namespace dist_sync::tf_ops

extern "C" int dist_sync_tf_set_c_api(const void* table) {
  const auto* api = static_cast<const dist_sync_c_api*>(table);
  if (api == nullptr || api->version != DIST_SYNC_C_API_VERSION ||
      api->struct_size < sizeof(dist_sync_c_api)) {
    return -1;
  }
  dist_sync::tf_ops::g_table.store(api, std::memory_order_release);
  return 0;
}
