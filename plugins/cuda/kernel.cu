// kernel.cu - the cuda sample plugin's kernel and buffers (see kernel.h).
// Every CUDA call is checked; an error comes back as text, never as abort.
#include "kernel.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

struct cuda_transform {
    int device;
    size_t capacity;
    float *in;
    float *out;
};

#define CHECK(call, what)                                                              \
    do {                                                                               \
        cudaError_t rc_ = (call);                                                      \
        if (rc_ != cudaSuccess) {                                                      \
            std::snprintf(err, errlen, "%s: %s", what, cudaGetErrorString(rc_));       \
            return -1;                                                                 \
        }                                                                              \
    } while (0)

__global__ static void transform(const float *x, float *y, size_t n, float scale, float shift)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = scale * tanhf(x[i]) + shift;
}

extern "C" int cuda_transform_open(int device, size_t capacity, cuda_transform **out, char *err,
                                   size_t errlen)
{
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
        std::snprintf(err, errlen, "no CUDA device: %s",
                      rc != cudaSuccess ? cudaGetErrorString(rc) : "the driver sees none");
        return -1;
    }
    if (device < 0 || device >= count) {
        std::snprintf(err, errlen, "device=%d: this machine has %d CUDA device(s)", device, count);
        return -1;
    }
    cuda_transform *t = static_cast<cuda_transform *>(std::calloc(1, sizeof *t));
    if (!t) {
        std::snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->device = device;
    t->capacity = capacity;
    if (cudaSetDevice(device) != cudaSuccess ||
        cudaMalloc(&t->in, capacity * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&t->out, capacity * sizeof(float)) != cudaSuccess) {
        std::snprintf(err, errlen, "cannot allocate %zu floats on device %d: %s", capacity, device,
                      cudaGetErrorString(cudaGetLastError()));
        cuda_transform_close(t);
        return -1;
    }
    *out = t;
    return 0;
}

extern "C" int cuda_transform_run(cuda_transform *t, const float *x, float *y, size_t n,
                                  float scale, float shift, char *err, size_t errlen)
{
    if (n > t->capacity) {
        std::snprintf(err, errlen, "%zu floats exceed the %zu allocated at init", n, t->capacity);
        return -1;
    }
    CHECK(cudaSetDevice(t->device), "cudaSetDevice");
    CHECK(cudaMemcpy(t->in, x, n * sizeof(float), cudaMemcpyHostToDevice), "copy to the device");
    unsigned threads = 256, blocks = (unsigned)((n + threads - 1) / threads);
    transform<<<blocks, threads>>>(t->in, t->out, n, scale, shift);
    CHECK(cudaGetLastError(), "kernel launch");
    CHECK(cudaMemcpy(y, t->out, n * sizeof(float), cudaMemcpyDeviceToHost), "copy from the device");
    return 0;
}

extern "C" void cuda_transform_close(cuda_transform *t)
{
    if (!t) return;
    if (t->in) cudaFree(t->in);
    if (t->out) cudaFree(t->out);
    std::free(t);
}
