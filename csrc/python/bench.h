// _bench_collective: one collective algorithm timed without the engine. Part of the production
// module because the installed `python -m dist_sync.bench` uses it.
#pragma once

#include <pybind11/pybind11.h>

namespace dist_sync::python {

void bind_bench(pybind11::module_& core);

}  // namespace dist_sync::python
