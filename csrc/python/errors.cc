#include "python/errors.h"

#include <pybind11/gil_safe_call_once.h>

#include "common/errors.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// This module's handle on DistSyncError (each module compiles this file in: its own storage).
PYBIND11_CONSTINIT py::gil_safe_call_once_and_store<py::object> g_error_type;

// DistSyncError(message) with its `kind` attribute set.
void set_error_of_kind(const char* message, const char* kind) {
  const py::object type = g_error_type.get_stored();
  py::object error = type(message);
  error.attr("kind") = kind;
  PyErr_SetObject(type.ptr(), error.ptr());
}

void translate(std::exception_ptr pointer) {
  try {
    if (pointer) std::rethrow_exception(pointer);
  } catch (const UsageError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const MismatchError& e) {
    set_error_of_kind(e.what(), "mismatch");
  } catch (const Error& e) {
    PyErr_SetString(g_error_type.get_stored().ptr(), e.what());
  }
}

}  // namespace

void define_errors(py::module_& core) {
  g_error_type.call_once_and_store_result(
      [&] { return py::object(py::exception<Error>(core, "DistSyncError", PyExc_RuntimeError)); });
  py::register_exception_translator(&translate);
}

void translate_errors_locally() {
  g_error_type.call_once_and_store_result(
      [] { return py::module_::import("dist_sync._core").attr("DistSyncError"); });
  py::register_local_exception_translator(&translate);
}

}  // namespace dist_sync::python
