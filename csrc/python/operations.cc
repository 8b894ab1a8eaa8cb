#include "python/operations.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/errors.h"
#include "engine/handles.h"
#include "engine/request.h"
#include "python/session.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// A submitted tensor's data: a numpy array's, or a raw address (Note [Submission cost]).
void* data_address(const py::handle& tensor) {
  if (py::isinstance<py::array>(tensor)) {
    // Writability of outputs was checked in Python; inputs may be read-only.
    return const_cast<void*>(py::reinterpret_borrow<py::array>(tensor).data());
  }
  return reinterpret_cast<void*>(tensor.cast<uintptr_t>());
}

// Note [Submission cost]
// A training step submits one tensor per gradient, so the per-call cost adds up (ResNet-50:
// 161 calls). Each tensor arrives as (name, input, output, dtype code, shape), where input
// and output are numpy arrays (their data pointers read here, far cheaper than numpy's
// .ctypes.data) or raw addresses (torch's data_ptr(); 0: no output). op_type, reduce_op and
// device are the exported enums' members taken as plain ints (an IntEnum is an int): the
// native-enum caster would add an isinstance check and a .value lookup per argument.
uint64_t submit(int op_type, const std::string& name, const std::vector<py::tuple>& tensors,
                int reduce_op, double prescale, double postscale, int root,
                const std::vector<int64_t>& splits, int device, bool cacheable, int32_t process_set) {
  DS_CHECK(is_op_type(op_type), "unknown op type ", op_type);
  DS_CHECK(is_user_reduce_op(reduce_op), "unknown reduce op ", reduce_op);
  DS_CHECK(is_device_kind(device), "unknown device kind ", device);
  Request request;
  request.meta.type = static_cast<OpType>(op_type);
  request.meta.name = name;
  request.meta.reduce_op = static_cast<ReduceOp>(reduce_op);
  request.meta.prescale = prescale;
  request.meta.postscale = postscale;
  request.meta.root = root;
  request.meta.splits = splits;
  request.meta.device = static_cast<DeviceKind>(device);
  request.meta.cacheable = cacheable;
  for (const py::tuple& t : tensors) {
    TensorMeta tensor;
    tensor.name = t[0].cast<std::string>();
    request.inputs.push_back(data_address(t[1]));
    request.outputs.push_back(data_address(t[2]));
    const int dtype = t[3].cast<int>();
    DS_CHECK(is_user_dtype(dtype), "unsupported dtype code ", dtype);
    tensor.dtype = static_cast<DataType>(dtype);
    tensor.shape = t[4].cast<std::vector<int64_t>>();
    request.meta.tensors.push_back(std::move(tensor));
  }
  const std::shared_ptr<Engine> e = process_set_engine(process_set);
  return make_handle(process_set, e->submit(std::move(request)));
}

// Blocks without the GIL; (output buffer or None, output shape, received splits, join rank).
// The wait is cut into slices so that Ctrl-C (or any other signal handler that raises) reaches
// the waiting thread within a slice instead of when the operation completes (which may be after
// the stall timeout); the operation stays in flight and its handle valid.
py::tuple wait(uint64_t handle) {
  constexpr auto kSlice = std::chrono::milliseconds(100);
  const std::shared_ptr<Engine> e = process_set_engine(handle_set(handle));
  handle = handle_local(handle);
  std::optional<OpResult> done;
  while (true) {
    {
      py::gil_scoped_release release;
      done = e->wait_for(handle, kSlice);
    }
    if (done) break;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
  OpResult& result = *done;
  if (!result.error.empty()) {
    if (result.error_kind == ErrorKind::kMismatch) throw MismatchError(result.error);
    throw Error(result.error);
  }
  py::object output = py::none();
  if (result.output) output = py::cast(result.output);
  return py::make_tuple(output, result.output_shape, result.received_splits, result.join_rank);
}

}  // namespace

void bind_operations(py::module_& m) {
  py::class_<OutputBuffer, std::shared_ptr<OutputBuffer>>(m, "_Buffer", py::buffer_protocol())
      .def_buffer([](OutputBuffer& buffer) {
        return py::buffer_info(buffer.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(buffer.bytes())}, {1});
      });
  m.def("submit", &submit, py::arg("op_type"), py::arg("name"), py::arg("tensors"),
        py::arg("reduce_op") = static_cast<int>(ReduceOp::kSum), py::arg("prescale") = 1.0,
        py::arg("postscale") = 1.0, py::arg("root") = 0, py::arg("splits") = std::vector<int64_t>{},
        py::arg("device") = static_cast<int>(DeviceKind::kCpu), py::arg("cacheable") = true,
        py::arg("process_set") = 0,
        "Hands one operation to the engine of a process set (0: the global one); returns its "
        "handle. op_type, reduce_op, device: "
        "OpType, ReduceOp, DeviceKind members; tensors: (name, input, output, DataType, shape) "
        "each, input and output numpy arrays or addresses (0: no output).");
  m.def("poll", [](uint64_t handle) {
    return process_set_engine(handle_set(handle))->poll(handle_local(handle));
  });
  m.def("wait", &wait);
}

}  // namespace dist_sync::python
