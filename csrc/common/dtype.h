// Element types and reduction operations understood by every layer below the bindings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dist_sync {

// The numeric values are part of the Python binding's contract (dist_sync/_dtypes.py).
enum class DataType : int32_t {
  kUInt8 = 0,
  kInt8 = 1,
  kInt16 = 2,
  kInt32 = 3,
  kInt64 = 4,
  kFloat16 = 5,
  kBFloat16 = 6,
  kFloat32 = 7,
  kFloat64 = 8,
  // Internal only: the negotiation bit vectors. Not accepted from users.
  kUInt64 = 9,
};
constexpr int kNumUserDataTypes = 9;

// Horovod's numbering, which the Python binding exports as dist_sync._core.ReduceOp: the same
// name never means two codes in the two languages.
enum class ReduceOp : int32_t {
  kAverage = 0,  // Sum, then divided by the number of ranks (Scaling::divisor); kernels sum
  kSum = 1,
  kAdasum = 2,   // allreduce only: Note [Adasum] (collectives/adasum.h), not a kernel op
  kMin = 3,
  kMax = 4,
  kProduct = 5,
  // Internal only (never exported): combining negotiation bit vectors. Outside the user range.
  kBitAnd = 100,
};
constexpr int kNumUserReduceOps = 6;

inline size_t dtype_size(DataType dtype) {
  switch (dtype) {
    case DataType::kUInt8:
    case DataType::kInt8: return 1;
    case DataType::kInt16:
    case DataType::kFloat16:
    case DataType::kBFloat16: return 2;
    case DataType::kInt32:
    case DataType::kFloat32: return 4;
    case DataType::kInt64:
    case DataType::kFloat64:
    case DataType::kUInt64: return 8;
  }
  return 0;
}

inline bool is_floating(DataType dtype) {
  return dtype == DataType::kFloat16 || dtype == DataType::kBFloat16 ||
         dtype == DataType::kFloat32 || dtype == DataType::kFloat64;
}

inline bool is_user_dtype(int32_t raw) { return raw >= 0 && raw < kNumUserDataTypes; }
inline bool is_user_reduce_op(int32_t raw) { return raw >= 0 && raw < kNumUserReduceOps; }

// Names follow numpy/torch spelling so error messages read naturally to users.
inline std::string dtype_name(DataType dtype) {
  switch (dtype) {
    case DataType::kUInt8: return "uint8";
    case DataType::kInt8: return "int8";
    case DataType::kInt16: return "int16";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
    case DataType::kFloat16: return "float16";
    case DataType::kBFloat16: return "bfloat16";
    case DataType::kFloat32: return "float32";
    case DataType::kFloat64: return "float64";
    case DataType::kUInt64: return "uint64";
  }
  return "dtype(" + std::to_string(static_cast<int>(dtype)) + ")";
}

inline std::string reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kAverage: return "Average";
    case ReduceOp::kSum: return "Sum";
    case ReduceOp::kAdasum: return "Adasum";
    case ReduceOp::kMin: return "Min";
    case ReduceOp::kMax: return "Max";
    case ReduceOp::kProduct: return "Product";
    case ReduceOp::kBitAnd: return "BitAnd";
  }
  return "op(" + std::to_string(static_cast<int>(op)) + ")";
}

}  // namespace dist_sync
