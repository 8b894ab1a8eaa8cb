#include "python/enums.h"

#include <pybind11/native_enum.h>

#include <cctype>
#include <string>

#include "common/dtype.h"
#include "engine/op_traits.h"
#include "engine/request.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

std::string upper_case(std::string name) {
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

// Values 0..count-1 of Enum, each named upper_case(name_of(value)).
template <typename Enum, typename NameOf>
void export_enum(py::module_& module, const char* python_name, const char* doc, int count,
                 NameOf name_of) {
  py::native_enum<Enum> exported(module, python_name, "enum.IntEnum", doc);
  for (int i = 0; i < count; ++i) {
    const auto value = static_cast<Enum>(i);
    exported.value(upper_case(name_of(value)).c_str(), value);
  }
  exported.finalize();
}

}  // namespace

void bind_enums(py::module_& core) {
  export_enum<OpType>(core, "OpType", "Collective operation types (csrc/engine/op_traits.h).",
                      kNumOpTypes, op_type_name);
  export_enum<DataType>(core, "DataType", "Element types the engine reduces (csrc/common/dtype.h).",
                        kNumUserDataTypes, dtype_name);
  export_enum<DeviceKind>(core, "DeviceKind", "Where a tensor lives (csrc/engine/request.h).",
                          kNumDeviceKinds, device_kind_name);
  export_enum<ReduceOp>(core, "ReduceOp",
                        "Reductions, numbered as Horovod's (csrc/common/dtype.h). ADASUM is "
                        "reserved: submitting it raises ValueError.",
                        kNumUserReduceOps, reduce_op_name);
}

}  // namespace dist_sync::python
