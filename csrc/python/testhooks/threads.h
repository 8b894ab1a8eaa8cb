// Collectives over thread ranks (ThreadCommunicator): one process, N threads, no MPI, so tests
// drive the C++ algorithms for many N and sizes in milliseconds.
#pragma once

#include <pybind11/pybind11.h>

namespace dist_sync::python {

// thread_collective, thread_hierarchical and the AllreduceAlgorithm enum.
void bind_thread_hooks(pybind11::module_& testhooks);

}  // namespace dist_sync::python
