// pybind11 module dist_sync._testhooks: the test-only entry points into the engine library, kept
// out of the production module dist_sync._core. Everything here runs the C++ directly, without
// the engine: collectives over thread ranks, segment plans, huge-page detection, the reduction
// kernels and the float16/bfloat16 conversions. Uses _core's enums and exceptions.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "collectives/segments.h"
#include "common/page_backing.h"
#include "python/errors.h"
#include "python/testhooks/threads.h"
#include "reduce/half.h"
#include "reduce/reduce.h"

namespace py = pybind11;
using namespace dist_sync;

PYBIND11_MODULE(_testhooks, m) {
  m.doc() = "dist_sync's test hooks (not API; dist_sync._core is the engine)";
  py::module_::import("dist_sync._core");  // the enums and DistSyncError the hooks use
  python::translate_errors_locally();
  python::bind_thread_hooks(m);

  m.def("plan_segments", [](const std::vector<size_t>& span_bytes, size_t offset, size_t length,
                            size_t segment_bytes, size_t element_bytes) {
    SpanList spans;
    for (const size_t bytes : span_bytes) spans.add(nullptr, nullptr, bytes);
    std::vector<std::pair<size_t, size_t>> plan;
    for (const Extent& segment : plan_segments(spans, offset, length, segment_bytes, element_bytes)) {
      plan.emplace_back(segment.offset, segment.bytes);
    }
    return plan;
  }, "The ring's segments of [offset, offset + length) of spans of these sizes: (offset, bytes).");
  m.def("on_huge_pages", [](uintptr_t address, size_t bytes) {
    const void* data = reinterpret_cast<const void*>(address);
    return HugePageMap({MemoryRange{data, bytes}}).covers(data, bytes);
  }, "Whether the kernel reports all of [address, address + bytes) on huge pages.");
  m.def("reduce", [](py::bytes own, py::bytes other, DataType dtype, ReduceOp op, double prescale,
                     double postscale, int64_t divisor, bool finalize) {
    std::string result = own;
    const std::string theirs = other;
    const Scaling scaling{prescale, postscale, divisor};
    dist_sync::reduce(result.data(), result.data(), theirs.data(), result.size() / dtype_size(dtype),
                      dtype, op, scaling, finalize);
    return py::bytes(result);
  }, py::arg("own"), py::arg("other"), py::arg("dtype"), py::arg("op"), py::arg("prescale") = 1.0,
     py::arg("postscale") = 1.0, py::arg("divisor") = 1, py::arg("finalize") = true,
     "One reduction kernel: op(own * prescale, other), then postscale / divisor if finalize.");
  m.def("float_to_half", [](float v) { return float_to_half(v); });
  m.def("half_to_float", [](uint16_t v) { return half_to_float(v); });
  m.def("float_to_bfloat16", [](float v) { return float_to_bfloat16(v); });
}
