/* vmath_kernel.h: the body of vmath.h's sin/cos at one vector width. Included only by vmath.h,
 * once per width, with these defined:
 *   GT_VMK_BYTES   the vector size in bytes (16: two doubles; 32: four)
 *   GT_VMK_NAME(x) the name of this width's x (e.g. x##_w2)
 *   GT_VMK_ATTR    attributes for every function here (a target ISA), or nothing
 * The method and its error bounds are described in vmath.h. */

#define GT_VMK_LANES (GT_VMK_BYTES / 8)

typedef double GT_VMK_NAME(gt_vmk_d) __attribute__((vector_size(GT_VMK_BYTES)));
typedef long long GT_VMK_NAME(gt_vmk_l) __attribute__((vector_size(GT_VMK_BYTES)));
typedef unsigned long long GT_VMK_NAME(gt_vmk_u) __attribute__((vector_size(GT_VMK_BYTES)));
typedef int GT_VMK_NAME(gt_vmk_i) __attribute__((vector_size(GT_VMK_BYTES)));

/* all ones in the 64-bit lanes where the high 32 bits of the pattern of |x| (abs_bits) are below
 * hi_bound, compared as integers (they order like the doubles, NaN and infinity above every
 * finite value); for a bound whose low 32 bits are 0 that is |x| < bound. Built from 32-bit
 * compares and 64-bit logical shifts: SSE2 has no 64-bit compare, and GCC splits one into scalar
 * code. */
GT_VMK_ATTR static inline GT_VMK_NAME(gt_vmk_l) GT_VMK_NAME(gt_vmk_abs_below)(GT_VMK_NAME(gt_vmk_l) abs_bits,
                                                                         int hi_bound)
{
    GT_VMK_NAME(gt_vmk_l) m = (GT_VMK_NAME(gt_vmk_l))((GT_VMK_NAME(gt_vmk_i))abs_bits < hi_bound);
    GT_VMK_NAME(gt_vmk_u) hi = (GT_VMK_NAME(gt_vmk_u))m & 0xffffffff00000000ULL;
    return (GT_VMK_NAME(gt_vmk_l))(hi | (hi >> 32));
}

/* mask ? a : b, mask lanes all ones or all zeros */
GT_VMK_ATTR static inline GT_VMK_NAME(gt_vmk_d) GT_VMK_NAME(gt_vmk_select)(GT_VMK_NAME(gt_vmk_l) mask,
                                                                      GT_VMK_NAME(gt_vmk_d) a,
                                                                      GT_VMK_NAME(gt_vmk_d) b)
{
    return (GT_VMK_NAME(gt_vmk_d))((mask & (GT_VMK_NAME(gt_vmk_l))a) | (~mask & (GT_VMK_NAME(gt_vmk_l))b));
}

/* sin (quadrant_offset 0) or cos (1) of every lane of x; *bad gets all ones in the lanes the
 * caller must redo with libm */
GT_VMK_ATTR static inline GT_VMK_NAME(gt_vmk_d) GT_VMK_NAME(gt_vmk_sincos)(GT_VMK_NAME(gt_vmk_d) x,
                                                                      long long quadrant_offset,
                                                                      GT_VMK_NAME(gt_vmk_l) *bad)
{
    typedef GT_VMK_NAME(gt_vmk_d) vd;
    typedef GT_VMK_NAME(gt_vmk_l) vl;
    typedef GT_VMK_NAME(gt_vmk_u) vu;
    const vl abs_bits = (vl)x & GT_VM_ABS_MASK;
    const vl in_range = GT_VMK_NAME(gt_vmk_abs_below)(abs_bits, GT_VM_BIG_HI);
    const vl tiny = GT_VMK_NAME(gt_vmk_abs_below)(abs_bits, GT_VM_TINY_HI);
    /* out-of-range, non-finite and tiny lanes compute on 0, so no NaN or overflow arises */
    const vd xs = (vd)((vl)x & (in_range & ~tiny));

    const vd t = xs * GT_VM_2_OVER_PI + GT_VM_ROUNDER;
    const vd n = t - GT_VM_ROUNDER;
    /* the low bits of t's significand are n's (1.5 * 2^52 has ulp 1 and is 0 mod 4) */
    const vl quadrant = ((vl)t + quadrant_offset) & 3;

    /* r = (x - n C1 - n C2) - n C3 as rh + rl: the first difference is exact, the second an
     * exact two-sum, the last term small */
    const vd t1 = xs - n * GT_VM_PIO2_1;
    const vd p2 = n * GT_VM_PIO2_2;
    const vd s = t1 - p2;
    const vd sb = s - t1;
    const vd s_err = (t1 - (s - sb)) - (p2 + sb);
    const vd lo0 = s_err - n * GT_VM_PIO2_3;
    const vd rh = s + lo0;
    const vd rb = rh - s;
    const vd rl = (s - (rh - rb)) + (lo0 - rb);

    /* where |r| is below the reduction's error bound times 2^64, ask libm (finite lanes here,
     * so the compare raises no flag) */
    const vd abs_rh = (vd)((vl)rh & GT_VM_ABS_MASK);
    const vd abs_n = (vd)((vl)n & GT_VM_ABS_MASK);
    const vl near_zero = abs_rh < abs_n * 0x1p-57;

    const vd z = rh * rh;
    /* sin r = r + r^3 S(r^2), S(z) = -1/3! + z/5! - ... + z^7/17! (Taylor: exactly these
     * coefficients, rounded once) */
    vd ps = z * (1.0 / 355687428096000.0) - 1.0 / 1307674368000.0;
    ps = ps * z + 1.0 / 6227020800.0;
    ps = ps * z - 1.0 / 39916800.0;
    ps = ps * z + 1.0 / 362880.0;
    ps = ps * z - 1.0 / 5040.0;
    ps = ps * z + 1.0 / 120.0;
    ps = ps * z - 1.0 / 6.0;
    /* sin(rh + rl) ~ sin rh + rl cos rh, cos rh ~ 1 - z/2 at this order */
    const vd sin_r = rh + ((z * rh) * ps + (rl - 0.5 * z * rl));
    /* cos r = 1 - r^2/2 + r^4 C(r^2), C(z) = 1/4! - z/6! + ... + z^6/16! */
    vd pc = z * (1.0 / 20922789888000.0) - 1.0 / 87178291200.0;
    pc = pc * z + 1.0 / 479001600.0;
    pc = pc * z - 1.0 / 3628800.0;
    pc = pc * z + 1.0 / 40320.0;
    pc = pc * z - 1.0 / 720.0;
    pc = pc * z + 1.0 / 24.0;
    const vd hz = 0.5 * z;
    const vd w = 1.0 - hz;
    /* (1 - w) - hz is the rounding error of w (both differences exact); cos(rh + rl) adds -rh rl */
    const vd cos_r = w + (((1.0 - w) - hz) + ((z * z) * pc - rh * rl));

    /* masks by arithmetic on the quadrant, not by 64-bit compares (see gt_vmk_abs_below) */
    const vl odd = 0 - (quadrant & 1);
    const vu negate = ((vu)quadrant & 2) << 62; /* the sign bit */
    vd res = GT_VMK_NAME(gt_vmk_select)(odd, cos_r, sin_r);
    res = (vd)((vu)res ^ negate);
    /* tiny lanes: x itself for sin (its sign and subnormals kept), 1 for cos */
    res = GT_VMK_NAME(gt_vmk_select)(tiny, quadrant_offset ? x - x + 1.0 : x, res);
    *bad = ~in_range | near_zero;
    return res;
}

/* y[0..lanes) = sin or cos of x[0..lanes), lanes <= GT_VMK_LANES (fewer: the missing lanes
 * compute on 0 and are not stored) */
GT_VMK_ATTR static inline void GT_VMK_NAME(gt_vmk_one)(const double *x, double *y, size_t lanes, int want_cos)
{
    GT_VMK_NAME(gt_vmk_d) v = {0}, r;
    GT_VMK_NAME(gt_vmk_l) bad;
    memcpy(&v, x, lanes * sizeof(double));
    r = GT_VMK_NAME(gt_vmk_sincos)(v, want_cos ? 1 : 0, &bad);
    memcpy(y, &r, lanes * sizeof(double));
    long long any = 0;
    for (int l = 0; l < GT_VMK_LANES; l++)
        any |= bad[l];
    if (any) { /* rare: |x| >= 2^20, inf, NaN, or x next to a multiple of pi/2 */
        for (size_t l = 0; l < lanes; l++)
            if (bad[l])
                y[l] = want_cos ? cos(x[l]) : sin(x[l]);
    }
}

/* y[i] = sin(x[i]) (want_cos == 0) or cos(x[i]) over n elements; y must not overlap x */
GT_VMK_ATTR static inline void GT_VMK_NAME(gt_vmk_sincos_f64)(size_t n, const double *x, double *y, int want_cos)
{
    size_t i = 0;
    for (; i + GT_VMK_LANES <= n; i += GT_VMK_LANES) /* a constant length: one vector load */
        GT_VMK_NAME(gt_vmk_one)(x + i, y + i, GT_VMK_LANES, want_cos);
    if (i < n)
        GT_VMK_NAME(gt_vmk_one)(x + i, y + i, n - i, want_cos);
}

#undef GT_VMK_LANES
