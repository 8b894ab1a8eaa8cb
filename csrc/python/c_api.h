// dist_sync._core._c_api: the engine's C table for libraries of their own (csrc/capi/).
#pragma once

#include <pybind11/pybind11.h>

namespace dist_sync::python {

void bind_c_api(pybind11::module_& core);

}  // namespace dist_sync::python
