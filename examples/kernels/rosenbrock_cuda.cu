/* rosenbrock_cuda.cu: the n-dimensional Rosenbrock function as a batched CUDA kernel, with a
 * correct and a subtly wrong gradient kernel, written against the device section of gradtest.h.
 *
 *     f(x) = sum_{i<n-1} [ 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 ]
 *
 * rosen_batch evaluates f at every point of a batch (one block per point, a shared-memory tree
 * sum), which is what gradtest.cuda.CudaKernel's batched finite differences launch. The wrong
 * gradient drops the outer factor 2 of the x_i term (200 for 400), as in rosenbrock.c; only a
 * check at x_i != 0 sees it.
 *
 * Build: nvcc -shared -Xcompiler -fPIC -O2 -I<gradtest include> \
 *            -gencode arch=compute_90,code=sm_90 rosenbrock_cuda.cu -o librosen_cuda.so */
#include <cuda_runtime.h>

#include <gradtest.h>

#define THREADS 256

/* point p of the batch is x[p * n .. p * n + n - 1]; block p sums its n - 1 terms */
__global__ void rosen_batch_kernel(size_t n, const double *x, double *f)
{
    __shared__ double part[THREADS];
    const double *xp = x + (size_t)blockIdx.x * n;
    double acc = 0.0;
    for (size_t i = threadIdx.x; i + 1 < n; i += blockDim.x) {
        double a = xp[i + 1] - xp[i] * xp[i], b = 1.0 - xp[i];
        acc += 100.0 * a * a + b * b;
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        f[blockIdx.x] = part[0];
}

__global__ void rosen_grad_kernel(size_t n, const double *x, double *g, double factor)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)blockDim.x * gridDim.x) {
        double gi = 0.0;
        if (i + 1 < n)
            gi += -factor * x[i] * (x[i + 1] - x[i] * x[i]) - 2.0 * (1.0 - x[i]);
        if (i > 0)
            gi += 200.0 * (x[i] - x[i - 1] * x[i - 1]);
        g[i] = gi;
    }
}

extern "C" int rosen_batch(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    rosen_batch_kernel<<<(unsigned)batch, THREADS, 0, (cudaStream_t)stream>>>(n, x, f);
    return (int)cudaGetLastError();
}

static int launch_grad(void *stream, size_t n, const double *x, double *g, double factor)
{
    unsigned blocks = (unsigned)((n + THREADS - 1) / THREADS < 4096 ? (n + THREADS - 1) / THREADS : 4096);
    rosen_grad_kernel<<<blocks, THREADS, 0, (cudaStream_t)stream>>>(n, x, g, factor);
    return (int)cudaGetLastError();
}

extern "C" int rosen_grad(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    (void)ctx;
    return launch_grad(stream, n, x, g, 400.0);
}

extern "C" int rosen_grad_wrong(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    (void)ctx;
    return launch_grad(stream, n, x, g, 200.0);
}

/* a kernel launched with an impossible configuration: the check reports CUDA's error string */
extern "C" int rosen_broken(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    (void)batch;
    rosen_batch_kernel<<<1, 4096, 0, (cudaStream_t)stream>>>(n, x, f);
    return (int)cudaGetLastError();
}

/* a gradient kernel that writes through a wrong device pointer: an illegal memory access, a
 * sticky error after which the process's CUDA context is unusable. Checked with
 * CudaKernel(..., isolate=True), the fault stays in the spawned child and is reported with
 * CUDA's error string; the caller's context is untouched. */
extern "C" int rosen_grad_fault(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    (void)ctx;
    (void)g;
    return launch_grad(stream, n, x, (double *)(size_t)0x10, 400.0);
}
