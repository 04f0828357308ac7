// torch_shim.cpp - libtorch behind a C API (see torch_shim.h). The only C++
// in serve; no C++ type crosses the header.
#include "torch_shim.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

struct torch_shim_model {
    torch::jit::script::Module module;
    torch::Device device{torch::kCPU};
    torch::ScalarType dtype = torch::kFloat32;
};

// Debian's libtorch calls BLAS through libblas.so.3; when that is OpenBLAS
// it keeps a thread pool of its own (one per core, spinning between calls)
// that at::set_num_threads does not reach. `threads` must bound it too, or
// its spinning threads take the cores from the HTTP threads.
static void limit_blas_threads(int threads)
{
    void *blas = dlopen("libblas.so.3", RTLD_NOW | RTLD_NOLOAD);
    if (!blas) return;
    void *sym = dlsym(blas, "openblas_set_num_threads");
    if (sym) {
        void (*set_threads)(int);
        std::memcpy(&set_threads, &sym, sizeof set_threads);
        set_threads(threads);
    }
    dlclose(blas);
}

// The line of a libtorch message that says what went wrong. A TorchScript
// interpreter error starts with "The following operation failed..." and a
// traceback, and names the reason on a line "RuntimeError: REASON" (or
// another "...Error: "); other messages put it first and go on with a C++
// backtrace.
static std::string reason_line(const std::string &text)
{
    size_t at = std::string::npos;
    for (size_t line = 0; line < text.size();) {
        size_t end = text.find('\n', line);
        if (end == std::string::npos) end = text.size();
        size_t colon = text.find("Error: ", line);
        if (colon != std::string::npos && colon < end && text.compare(line, 2, "  ") != 0)
            at = colon + 7;
        line = end + 1;
    }
    size_t start = at != std::string::npos ? at : 0;
    size_t end = text.find('\n', start);
    return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

static void fail(char *err, size_t errlen, const char *what, const char *detail)
{
    std::string text = reason_line(detail ? detail : "");
    std::snprintf(err, errlen, "%s: %s", what, text.c_str());
}

extern "C" int torch_shim_load(const char *path, const char *device, int threads,
                               const char *dtype, torch_shim_model **out, char *err,
                               size_t errlen)
{
    try {
        auto m = std::make_unique<torch_shim_model>();
        m->device = torch::Device(device && *device ? device : "cpu");
        if (dtype && std::strcmp(dtype, "float16") == 0) {
            m->dtype = torch::kFloat16;
        } else if (dtype && std::strcmp(dtype, "bfloat16") == 0) {
            m->dtype = torch::kBFloat16;
        } else if (dtype && *dtype && std::strcmp(dtype, "float32") != 0) {
            std::snprintf(err, errlen, "dtype=%s: expected float32, float16 or bfloat16", dtype);
            return -1;
        }
        if (m->dtype != torch::kFloat32 && !m->device.is_cuda()) {
            std::snprintf(err, errlen, "dtype=%s needs device=cuda", dtype);
            return -1;
        }
        if (threads > 0) {
            at::set_num_threads(threads);
            limit_blas_threads(threads);
        }
        m->module = torch::jit::load(path, m->device);
        m->module.eval();
        if (m->dtype != torch::kFloat32) m->module.to(m->dtype);
        *out = m.release();
        return 0;
    } catch (const std::exception &e) {
        fail(err, errlen, "cannot load TorchScript model", e.what());
    } catch (...) {
        fail(err, errlen, "cannot load TorchScript model", "unknown error");
    }
    return -1;
}

extern "C" int torch_shim_forward(torch_shim_model *m, const float *input, int64_t rows,
                                  const int64_t *row_shape, int rank, float **output,
                                  int64_t *out_row_shape, int *out_rank, char *err,
                                  size_t errlen)
{
    try {
        c10::InferenceMode guard;
        std::vector<int64_t> shape{rows};
        shape.insert(shape.end(), row_shape, row_shape + rank);
        // from_blob borrows the caller's rows: the move to the device (and
        // dtype) is the only copy on the way in.
        torch::Tensor x = torch::from_blob(const_cast<float *>(input), shape, torch::kFloat32);
        if (m->device.is_cuda())
            x = x.pin_memory().to(m->device, m->dtype, /*non_blocking=*/true);
        else if (m->dtype != torch::kFloat32)
            x = x.to(m->dtype);
        torch::Tensor y = m->module.forward({x}).toTensor();
        y = y.to(torch::kCPU, torch::kFloat32).contiguous();
        if (y.dim() < 1 || y.size(0) != rows || y.dim() - 1 > TORCH_SHIM_MAX_RANK) {
            std::snprintf(err, errlen, "the model's output has %lld dimension(s), not one row per input",
                          (long long)y.dim());
            return -1;
        }
        *out_rank = (int)y.dim() - 1;
        for (int i = 0; i < *out_rank; i++) out_row_shape[i] = y.size(i + 1);
        size_t bytes = (size_t)y.numel() * sizeof(float);
        float *copy = static_cast<float *>(std::malloc(bytes ? bytes : 1));
        if (!copy) {
            std::snprintf(err, errlen, "out of memory");
            return -1;
        }
        std::memcpy(copy, y.data_ptr<float>(), bytes);
        *output = copy;
        return 0;
    } catch (const c10::Error &e) {
        fail(err, errlen, "forward failed", e.what_without_backtrace());
    } catch (const std::exception &e) {
        fail(err, errlen, "forward failed", e.what());
    } catch (...) {
        fail(err, errlen, "forward failed", "unknown error");
    }
    return -1;
}

extern "C" int torch_shim_input_shape(torch_shim_model *m, int64_t *shape, int *rank)
{
    try {
        for (const torch::Tensor &p : m->module.parameters(/*recurse=*/true)) {
            // The first weight of a Linear layer is [out, in]: rows of `in`.
            if (p.dim() != 2) return -1;
            shape[0] = p.size(1);
            *rank = 1;
            return 0;
        }
    } catch (...) {
    }
    return -1;
}

extern "C" void torch_shim_free(torch_shim_model *m) { delete m; }
