// How the TensorFlow op library reaches dist_sync's engine: the C table dist_sync._core lends
// (Note [One engine, a C table for other libraries] in capi/dist_sync_c_api.h). This library
// links no engine of its own.
#pragma once

#include <cstdint>

#include "capi/dist_sync_c_api.h"
#include "tensorflow/core/framework/op_kernel.h"

extern "C" {
// Called once by dist_sync.tensorflow at import with the address inside the capsule
// dist_sync._core._c_api. Returns 0, or -1 if the table is of another version (a library built
// against another dist_sync; the caller says how to rebuild).
int dist_sync_tf_set_c_api(const void* table);
}

namespace dist_sync::tf_ops {

// The table, or null before dist_sync_tf_set_c_api.
const dist_sync_c_api* c_api();

// An engine error kind and its message as a TensorFlow status: a mismatch between ranks is
// FAILED_PRECONDITION (what Horovod's TensorFlow binding raises), a bad argument
// INVALID_ARGUMENT, a lost peer or stall ABORTED, an engine not running FAILED_PRECONDITION
// (the message says which).
absl::Status to_status(int32_t kind, const char* message);

}  // namespace dist_sync::tf_ops
