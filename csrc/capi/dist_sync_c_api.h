/* dist_sync's C interface for bindings that live in libraries of their own (the TensorFlow ops).
 *
 * Note [One engine, a C table for other libraries]
 * A framework's compiled ops must reach the engine that dist_sync._core runs, not a copy of it
 * linked into their own library (two engines would negotiate, fuse and talk to MPI separately).
 * They also must not share C++ types with _core: the TensorFlow library is built with
 * TensorFlow's compiler flags (its libstdc++ ABI setting among them), _core with ours. So _core
 * exports this plain C table of function pointers and POD arguments, as the PyCapsule
 * dist_sync._core._c_api (named DIST_SYNC_C_API_CAPSULE); a library receives its address once,
 * at import, and checks `version` and `struct_size` before use.
 *
 * Rules of the table: every function may be called from any thread without the GIL; none
 * blocks on other ranks. submit() either refuses the operation (returns an error kind and
 * writes a message) or accepts it, and then calls `done` exactly once, later, on the engine's
 * thread (or the thread stopping the engine), with the result. Memory passed to submit() must
 * stay valid until `done` is called; what `done` receives is valid only during the call.
 * Change anything here and bump DIST_SYNC_C_API_VERSION.
 */
#ifndef DIST_SYNC_C_API_H_
#define DIST_SYNC_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIST_SYNC_C_API_VERSION 1
#define DIST_SYNC_C_API_CAPSULE "dist_sync._core._c_api"

/* Why an operation failed: the engine's ErrorKind (csrc/engine/handles.h), same numbers. */
enum {
  DIST_SYNC_OK = 0,
  DIST_SYNC_ERROR_MISMATCH = 1, /* ranks disagree on the operation (found in negotiation) */
  DIST_SYNC_ERROR_INVALID = 2,  /* a bad argument, refused at submission */
  DIST_SYNC_ERROR_FATAL = 3,    /* a lost peer or a stall: the engine stopped with an error */
  DIST_SYNC_ERROR_SHUTDOWN = 4  /* not initialized, or shut down while pending */
};

/* Operation types and element types: the engine's OpType and DataType (dist_sync._core.OpType,
 * DataType), same numbers. */
enum {
  DIST_SYNC_ALLREDUCE = 0,
  DIST_SYNC_BROADCAST = 1,
  DIST_SYNC_ALLGATHER = 2,
  DIST_SYNC_ALLTOALL = 3,
  DIST_SYNC_REDUCESCATTER = 4
};
enum {
  DIST_SYNC_UINT8 = 0,
  DIST_SYNC_INT8 = 1,
  DIST_SYNC_INT16 = 2,
  DIST_SYNC_INT32 = 3,
  DIST_SYNC_INT64 = 4,
  DIST_SYNC_FLOAT16 = 5,
  DIST_SYNC_BFLOAT16 = 6,
  DIST_SYNC_FLOAT32 = 7,
  DIST_SYNC_FLOAT64 = 8
};

/* One tensor of an operation. dtype: the engine's DataType code (dist_sync._core.DataType).
 * output: where allreduce and broadcast write (same bytes as the input); NULL for the
 * operations whose result size comes from negotiation (allgather, alltoall, reducescatter). */
typedef struct {
  const char* name;
  const void* input;
  void* output;
  int32_t dtype;
  int32_t ndim;
  const int64_t* shape;
} dist_sync_tensor;

/* One operation: op_type and reduce_op are dist_sync._core.OpType / ReduceOp values; root is a
 * position in the process set; splits (alltoall; empty: divide the first dimension evenly) are
 * the rows sent to each rank of the set; process_set is a set id (0: all ranks). */
typedef struct {
  int32_t op_type;
  const char* name;
  int32_t reduce_op;
  double prescale;
  double postscale;
  int32_t root;
  const int64_t* splits;
  int32_t num_splits;
  int32_t process_set;
  const dist_sync_tensor* tensors;
  int32_t num_tensors;
} dist_sync_request;

/* What a completed operation produced beyond the outputs it was given: the engine's buffer
 * (allgather, alltoall, reducescatter; NULL and 0 bytes otherwise) and its shape, and for
 * alltoall the rows received from each rank. */
typedef struct {
  const void* data;
  size_t bytes;
  const int64_t* shape;
  int32_t ndim;
  const int64_t* received_splits;
  int32_t num_received_splits;
} dist_sync_output;

/* status: DIST_SYNC_OK or an error kind; message: NUL-terminated, empty on success; output:
 * never NULL. */
typedef void (*dist_sync_done)(void* context, int32_t status, const char* message,
                               const dist_sync_output* output);

typedef struct {
  uint32_t version;     /* DIST_SYNC_C_API_VERSION of the _core that filled it */
  uint32_t struct_size; /* sizeof(dist_sync_c_api) there */
  /* DIST_SYNC_OK: accepted, `done` will be called. Otherwise the error kind, the message in
   * message[0..capacity) (NUL-terminated, cut if longer), and `done` is never called. */
  int32_t (*submit)(const dist_sync_request* request, dist_sync_done done, void* context,
                    char* message, size_t message_capacity);
} dist_sync_c_api;

#ifdef __cplusplus
}
#endif

#endif /* DIST_SYNC_C_API_H_ */
