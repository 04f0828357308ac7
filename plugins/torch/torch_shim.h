/* torch_shim.h - the C face of the libtorch code: plain C types only; every
 * C++ exception is caught inside and returned as -1 with a message. */
#ifndef SERVE_TORCH_SHIM_H
#define SERVE_TORCH_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TORCH_SHIM_MAX_RANK 8

typedef struct torch_shim_model torch_shim_model;

/* Loads a TorchScript file onto `device` ("cpu", "cuda", "cuda:N") with
 * `threads` intra-op threads (0: libtorch's default) and `dtype` ("float32";
 * on a GPU also "float16" or "bfloat16"). 0, or -1 with err set. */
int torch_shim_load(const char *path, const char *device, int threads, const char *dtype,
                    torch_shim_model **out, char *err, size_t errlen);

/* Runs forward once on `rows` rows of shape row_shape[0..rank), stacked in
 * `input` (float32, row-major, borrowed). On success *output is a malloc'd
 * float32 array of rows x out_row_shape (free it with free()). */
int torch_shim_forward(torch_shim_model *m, const float *input, int64_t rows,
                       const int64_t *row_shape, int rank, float **output,
                       int64_t *out_row_shape, int *out_rank, char *err, size_t errlen);

/* The input row shape, where the model says it: a model whose first
 * parameter is a Linear layer's weight [out, in] takes rows of `in`. 0
 * with shape and rank set, or -1 when it cannot be read. */
int torch_shim_input_shape(torch_shim_model *m, int64_t *shape, int *rank);

void torch_shim_free(torch_shim_model *m);

#ifdef __cplusplus
}
#endif

#endif
