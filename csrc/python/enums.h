// The C++ enums Python shares, exported as enum.IntEnum with the C++ values.
#pragma once

#include <pybind11/pybind11.h>

namespace dist_sync::python {

// OpType, DataType, DeviceKind and ReduceOp (the user reductions; not the negotiation's bitwise
// AND). Members are named after the names the C++ side already uses (op traits, dtype, device
// and reduction names, upper-cased), so nothing is listed twice.
void bind_enums(pybind11::module_& core);

}  // namespace dist_sync::python
