/* emulation.c: the CPU emulation of gradtest's device kernels, for tests only.
 *
 * The same kernel bodies as gt_cuda.cu (kernels.h), compiled by a C compiler: each grid-stride
 * loop is a plain loop over host memory, atomics are plain adds and a launch is a call. The
 * "device" is host memory, so gradtest's device-side drivers (the device tape, the batched
 * finite differences) can be run end to end where there is no GPU. This is never GPU support:
 * gtd_is_device_build() says 0 and gradtest.cuda.available() never counts this library. */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

GTD_API int gtd_malloc(size_t bytes, void **ptr)
{
    *ptr = bytes ? malloc(bytes) : NULL;
    return *ptr ? 0 : 2; /* 2 is cudaErrorMemoryAllocation */
}

GTD_API int gtd_free(void *ptr)
{
    free(ptr);
    return 0;
}

GTD_API int gtd_memcpy_sync(void *stream, void *dst, const void *src, size_t bytes, int to_device)
{
    (void)stream;
    (void)to_device;
    if (bytes)
        memcpy(dst, src, bytes);
    return 0;
}

GTD_API int gtd_stream_synchronize(void *stream)
{
    (void)stream;
    return 0;
}

GTD_API int gtd_device_count(int *count)
{
    *count = 0;
    return 0;
}

GTD_API const char *gtd_error_string(int code)
{
    switch (code) {
    case 0: return "no error (CPU emulation)";
    case -1: return "invalid argument to a gradtest device launcher (unknown op, dtype or layout)";
    case 2: return "out of memory (CPU emulation)";
    default: return "error reported by a kernel (CPU emulation)";
    }
}

GTD_API int gtd_is_device_build(void) { return 0; }
