// Submitting operations and collecting their results: submit, poll, wait, and the buffer type
// results the engine allocates are handed over in.
#pragma once

#include <pybind11/pybind11.h>

namespace dist_sync::python {

void bind_operations(pybind11::module_& core);

}  // namespace dist_sync::python
