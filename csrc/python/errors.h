// Python exceptions for what dist_sync throws (Note [User errors vs internal invariants]):
// UsageError becomes ValueError, every other dist_sync::Error dist_sync.DistSyncError (a
// RuntimeError, defined by dist_sync._core).
#pragma once

#include <pybind11/pybind11.h>

namespace dist_sync::python {

// Defines DistSyncError in `core` (dist_sync._core) and translates the errors of every module.
void define_errors(pybind11::module_& core);

// Translates the errors of this module's functions (another module than _core: the test hooks)
// to _core's exceptions; imports dist_sync._core.
void translate_errors_locally();

}  // namespace dist_sync::python
