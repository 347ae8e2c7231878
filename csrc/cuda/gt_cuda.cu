/* gt_cuda.cu: the device build of gradtest's kernels (nvcc), loaded by gradtest.cuda.
 *
 * The kernel bodies and launchers are kernels.h's; this file adds the runtime calls the host
 * side needs (memory, copies, streams, error strings). Linked with the CUDA runtime of the
 * toolkit that built it (nvcc's default static cudart), so at run time only the NVIDIA driver
 * (libcuda) is needed. */
#include <cuda_runtime.h>

#include "kernels.h"

GTD_API int gtd_malloc(size_t bytes, void **ptr)
{
    *ptr = NULL;
    return (int)cudaMalloc(ptr, bytes);
}

GTD_API int gtd_free(void *ptr)
{
    return ptr ? (int)cudaFree(ptr) : 0;
}

GTD_API int gtd_memcpy_sync(void *stream, void *dst, const void *src, size_t bytes, int to_device)
{
    cudaStream_t s = (cudaStream_t)stream;
    int st = (int)cudaMemcpyAsync(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, s);
    if (st == 0)
        st = (int)cudaStreamSynchronize(s);
    return st;
}

GTD_API int gtd_stream_synchronize(void *stream)
{
    int st = (int)cudaStreamSynchronize((cudaStream_t)stream);
    return st ? st : (int)cudaGetLastError();
}

GTD_API int gtd_device_count(int *count)
{
    *count = 0;
    return (int)cudaGetDeviceCount(count);
}

GTD_API const char *gtd_error_string(int code)
{
    if (code == -1)
        return "invalid argument to a gradtest device launcher (unknown op, dtype or layout)";
    return cudaGetErrorString((cudaError_t)code);
}

GTD_API int gtd_is_device_build(void) { return 1; }
