// pybind11 module dist_sync._core: raw pointers, byte counts and enum values in, handles out.
// Knows no torch, and of numpy only where a submitted array's data pointer is (Note [Submission
// cost]); dist_sync/ (Python) does the array handling. Every call that can wait releases the GIL.
// The test hooks are a module of their own (dist_sync._testhooks, python/testhooks/).
#include <pybind11/pybind11.h>

#include "python/bench.h"
#include "python/c_api.h"
#include "python/enums.h"
#include "python/errors.h"
#include "python/operations.h"
#include "python/session.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "dist_sync's C++ engine (internal; use the dist_sync package)";
  dist_sync::python::define_errors(m);
  dist_sync::python::bind_enums(m);
  dist_sync::python::bind_session(m);
  dist_sync::python::bind_operations(m);
  dist_sync::python::bind_bench(m);
  dist_sync::python::bind_c_api(m);
}
