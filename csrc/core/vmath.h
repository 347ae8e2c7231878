/* vmath.h: sine and cosine over arrays of doubles, several lanes at a time, for the CPU's partial
 * loops (ops.c). Header-only: everything here is static inline (the kernel is vmath_kernel.h,
 * instantiated per vector width), so it adds no source file to the build; it includes only
 * <math.h> and <string.h>.
 *
 * Why: the partial of sin is cos, and libm's cos is a scalar call per element; on the 20-op
 * benchmark chain (four sin nodes) it was about a fifth of a forward pass at 10^6 elements.
 *
 * Accuracy: within 1 ulp of the true value (measured against libm in tests/c/test_vmath.c, which
 * allows 2), for every double. Lanes the fast path cannot do to that accuracy go to libm instead:
 * |x| >= 2^20, infinities and NaN, and the rare x whose reduced argument is so close to 0 that
 * the reduction's own error could show (|r| < n 2^-57, see below). So the result is libm's
 * exactly there, and +-0, tiny and subnormal x give sin(x) = x and cos(x) = 1, as libm does.
 *
 * Method (textbook, no tables):
 *   1. n = nearest integer to x * 2/pi, by adding and subtracting 1.5 * 2^52 (round to nearest,
 *      the default mode, does the rounding); its low two bits select the quadrant.
 *   2. r = x - n * pi/2 in double-double, with pi/2 split as C1 + C2 + C3 (Cody and Waite): C1
 *      and C2 have 33 significant bits, so n * C1 and n * C2 are exact for |n| < 2^20, and
 *      x - n * C1 is exact (Sterbenz: the two are within a factor 2 of each other, or n = 0).
 *      The remaining error, from rounding n * C3 and from the bits of pi/2 past C3, is below
 *      |n| 2^-121: relative to |r| >= |n| 2^-57 that is under 2^-64.
 *   3. sin(r) and cos(r) on |r| <= pi/4 by their Taylor series, to r^17 and r^16 (the first
 *      term left out is below 2^-62 relative there), plus the first-order effect of r's low
 *      part; cos adds 1 - r^2/2 with its rounding error recovered.
 *   4. sin(x) = (sin r, cos r, -sin r, -cos r)[n mod 4], cos(x) the same at n + 1.
 *
 * Vectorized with GCC/Clang vector extensions: two doubles (SSE2 or NEON registers), and on
 * x86-64 also four with FMA, taken at run time where the processor has AVX2 and FMA (measured in
 * a loop over 256 elements on the development machine: 4.3 ns an element, libm's cos 7.7). Other
 * compilers, or targets without 128-bit vectors, get libm in a plain loop (as does a build with
 * -DGT_VMATH_SCALAR). Comparisons that could
 * see a NaN are made on the bits as integers, so the fast path raises no floating-point flags
 * for NaN input that libm would not. No -ffast-math is needed or assumed; contracting a * b + c
 * into an FMA (GCC's default where FMA exists) keeps every step at least as exact. */
#ifndef GT_VMATH_H
#define GT_VMATH_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__SSE2__) || defined(__aarch64__)) && \
    !defined(GT_VMATH_SCALAR)
#define GT_VMATH_VECTOR 1
#else
#define GT_VMATH_VECTOR 0
#endif

#if GT_VMATH_VECTOR

/* pi/2 = C1 + C2 + C3 + (about 1e-37) */
#define GT_VM_PIO2_1 0x1.921fb54400000p+0
#define GT_VM_PIO2_2 0x1.0b4611a600000p-34
#define GT_VM_PIO2_3 0x1.3198a2e037073p-69
#define GT_VM_2_OVER_PI 0x1.45f306dc9c883p-1
#define GT_VM_ROUNDER 0x1.8p52
#define GT_VM_ABS_MASK 0x7fffffffffffffffLL
/* the high 32 bits of the patterns of the bounds on |x| (whose low 32 bits are 0) */
#define GT_VM_BIG_HI 0x41300000  /* 2^20 */
#define GT_VM_TINY_HI 0x3e400000 /* 2^-27: below it sin(x) rounds to x and cos(x) to 1 */

/* two lanes: SSE2 (every x86-64) or NEON */
#define GT_VMK_BYTES 16
#define GT_VMK_NAME(x) x##_w2
#define GT_VMK_ATTR
#include "vmath_kernel.h"
#undef GT_VMK_BYTES
#undef GT_VMK_NAME
#undef GT_VMK_ATTR

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* four lanes with FMA, for the x86-64 processors that have AVX2 (chosen at run time, so the
 * build needs no -march) */
#define GT_VMATH_AVX2 1
#define GT_VMK_BYTES 32
#define GT_VMK_NAME(x) x##_w4
#define GT_VMK_ATTR __attribute__((target("avx2,fma")))
#include "vmath_kernel.h"
#undef GT_VMK_BYTES
#undef GT_VMK_NAME
#undef GT_VMK_ATTR
#else
#define GT_VMATH_AVX2 0
#endif

/* 1 when this process runs the four-lane kernel */
static inline int gt_vm_uses_avx2(void)
{
#if GT_VMATH_AVX2
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static inline void gt_vm_sincos_f64(size_t n, const double *x, double *y, int want_cos)
{
#if GT_VMATH_AVX2
    if (gt_vm_uses_avx2()) {
        gt_vmk_sincos_f64_w4(n, x, y, want_cos);
        return;
    }
#endif
    gt_vmk_sincos_f64_w2(n, x, y, want_cos);
}

#else /* no vector extensions: libm */

#define GT_VMATH_AVX2 0

static inline int gt_vm_uses_avx2(void) { return 0; }

static inline void gt_vm_sincos_f64(size_t n, const double *x, double *y, int want_cos)
{
    for (size_t i = 0; i < n; i++)
        y[i] = want_cos ? cos(x[i]) : sin(x[i]);
}

#endif

static inline void gt_vm_sin_f64(size_t n, const double *x, double *y) { gt_vm_sincos_f64(n, x, y, 0); }
static inline void gt_vm_cos_f64(size_t n, const double *x, double *y) { gt_vm_sincos_f64(n, x, y, 1); }

#endif /* GT_VMATH_H */
