/* gradtest.h: the C ABI of kernels whose derivatives gradtest checks.
 *
 * Include it from your kernel's sources (the folder is gradtest.get_include(), or
 * `python -c "import gradtest; print(gradtest.get_include())"`); it declares types only, so a
 * kernel library needs no gradtest library to link against. Hand the functions to
 * gradtest.CKernel as ctypes or cffi function pointers, integer addresses or "lib.so:symbol".
 *
 * Every function has the same shape:
 *
 *     int name(void *ctx, <sizes and arrays>);
 *
 *  - ctx: the opaque pointer given to CKernel(ctx=...), passed unchanged (NULL if none). The kernel
 *    may read it; when CKernel(thread_safe=True) is used, concurrent calls share it, so the kernel
 *    must not write through it without its own locking.
 *  - return value: 0 on success; any other value means the kernel failed. gradtest stops that
 *    stage and reports the status (gradtest.ckernel.KernelError), it never retries.
 *  - inputs (x, ybar, xdot) are const: owned by gradtest, valid only during the call, never
 *    written. The kernel must not keep pointers to them after it returns.
 *  - outputs (f, grad, y, xbar, ydot) are caller-allocated by gradtest, with exactly the element
 *    counts given; the kernel must write every element (gradtest fills them with NaN before the
 *    call, so an element left unwritten shows up as a mismatch). Outputs are overwritten, not
 *    accumulated into. Outputs never alias inputs.
 *  - sizes: n is the number of inputs (x.size), m the number of outputs of a vector function.
 *    Kernels may be written for one fixed n and check it (returning non-zero on a mismatch).
 *  - the kernel must not call exit(), longjmp out, or keep global state between calls that
 *    changes its results: finite differences call f 2n to 4n times at nearby points.
 *
 * Two element types: the _f64 family works on double, the _f32 family on float (CKernel(...,
 * dtype="float32")). A float32 kernel is differentiated in float32, as it computes.
 */
#ifndef GRADTEST_H
#define GRADTEST_H

#include <stddef.h>

#define GRADTEST_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

/* ---- float64 --------------------------------------------------------------------------- */

/* Scalar function: *f = f(x), x of n elements. */
typedef int (*gradtest_scalar_f64)(void *ctx, size_t n, const double *x, double *f);

/* Gradient of a scalar function: grad[i] = df/dx_i, n elements. */
typedef int (*gradtest_gradient_f64)(void *ctx, size_t n, const double *x, double *grad);

/* Vector function: y = f(x), x of n elements, y of m elements. */
typedef int (*gradtest_vector_f64)(void *ctx, size_t n, const double *x, size_t m, double *y);

/* Vector-Jacobian product (adjoint, reverse mode): xbar = J(x)^T ybar, with J the m x n Jacobian
 * of the vector function at x. ybar has m elements, xbar n. */
typedef int (*gradtest_vjp_f64)(void *ctx, size_t n, const double *x, size_t m, const double *ybar,
                                double *xbar);

/* Jacobian-vector product (tangent, forward mode): ydot = J(x) xdot. xdot has n elements, ydot m. */
typedef int (*gradtest_jvp_f64)(void *ctx, size_t n, const double *x, const double *xdot, size_t m,
                                double *ydot);

/* ---- float32: the same contracts on float ------------------------------------------------ */

typedef int (*gradtest_scalar_f32)(void *ctx, size_t n, const float *x, float *f);
typedef int (*gradtest_gradient_f32)(void *ctx, size_t n, const float *x, float *grad);
typedef int (*gradtest_vector_f32)(void *ctx, size_t n, const float *x, size_t m, float *y);
typedef int (*gradtest_vjp_f32)(void *ctx, size_t n, const float *x, size_t m, const float *ybar,
                                float *xbar);
typedef int (*gradtest_jvp_f32)(void *ctx, size_t n, const float *x, const float *xdot, size_t m,
                                float *ydot);

/* A scalar function may also be given a vjp/jvp: it is then treated as a vector function with
 * m = 1 for those two (ybar and ydot have one element). */

/* ---- device kernels (CUDA): batched scalar functions over device memory -------------------
 *
 * Checked by gradtest.cuda.CudaKernel with batched finite differences. The same rules as above,
 * with these differences:
 *  - stream: the cudaStream_t to launch on (a void * here, so this header needs no CUDA header).
 *    The function is a host function that enqueues its work on that stream and may return
 *    before the work finishes; gradtest waits for the stream and reads the outputs after it.
 *  - x is device memory of batch x n elements, row-major: point p is x[p * n .. p * n + n - 1].
 *    f is device memory of batch elements: f[p] = f(point p). A scalar function must handle any
 *    batch >= 1 (gradtest picks it from the memory a batch takes).
 *  - grad is device memory of n elements (filled with NaN by gradtest before the call).
 *  - return value: 0, or a cudaError_t (for example cudaGetLastError() after the launch).
 *    gradtest reports a non-zero value, and any error the stream raises, with the CUDA error
 *    string (cudaGetErrorString).
 *  - device kernels run in gradtest's process: CUDA contexts do not survive fork(), so there is
 *    no isolation in a child process, and a kernel that faults leaves the context unusable.
 */
typedef int (*gradtest_device_scalar_f64)(void *ctx, void *stream, size_t batch, size_t n,
                                          const double *x, double *f);
typedef int (*gradtest_device_gradient_f64)(void *ctx, void *stream, size_t n, const double *x,
                                            double *grad);
typedef int (*gradtest_device_scalar_f32)(void *ctx, void *stream, size_t batch, size_t n,
                                          const float *x, float *f);
typedef int (*gradtest_device_gradient_f32)(void *ctx, void *stream, size_t n, const float *x,
                                            float *grad);

/* Batched vector function: y[p * m .. p * m + m - 1] = f(point p), y device memory of batch x m;
 * and its VJP at one point: xbar = J(x)^T ybar (ybar: m elements, xbar: n, device memory). A
 * vector function is checked through a fixed random cotangent u, on <u, f(x)>, as for CKernel. */
typedef int (*gradtest_device_vector_f64)(void *ctx, void *stream, size_t batch, size_t n,
                                          const double *x, size_t m, double *y);
typedef int (*gradtest_device_vjp_f64)(void *ctx, void *stream, size_t n, const double *x, size_t m,
                                       const double *ybar, double *xbar);
typedef int (*gradtest_device_vector_f32)(void *ctx, void *stream, size_t batch, size_t n,
                                          const float *x, size_t m, float *y);
typedef int (*gradtest_device_vjp_f32)(void *ctx, void *stream, size_t n, const float *x, size_t m,
                                       const float *ybar, float *xbar);

#ifdef __cplusplus
}
#endif

#endif /* GRADTEST_H */
