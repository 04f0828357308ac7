/* kernel.h - the CUDA side of the cuda sample plugin, as a C API. */
#ifndef SERVE_CUDA_KERNEL_H
#define SERVE_CUDA_KERNEL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuda_transform cuda_transform;

/* Picks `device`, allocates device buffers for `capacity` floats. 0, or -1
 * with err (also when no GPU is present). */
int cuda_transform_open(int device, size_t capacity, cuda_transform **out, char *err,
                        size_t errlen);
/* y = scale * tanh(x) + shift over n floats: one host-to-device copy, one
 * kernel, one device-to-host copy. */
int cuda_transform_run(cuda_transform *t, const float *x, float *y, size_t n, float scale,
                       float shift, char *err, size_t errlen);
void cuda_transform_close(cuda_transform *t);

#ifdef __cplusplus
}
#endif

#endif
