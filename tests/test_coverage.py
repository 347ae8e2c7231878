"""NumPy/SciPy coverage of both AD engines (issue 10, part 5).

Every case of ``tests/_coverage_cases.py`` (third-party-style gradient checks) runs in the
forward and in the reverse engine against the finite-difference ground truth and must pass. The
few that an engine does not support yet are listed in :data:`UNSUPPORTED` by name with the
reason; those must raise NotImplementedError (never a wrong gradient, never a silent zero), and
a listed case that starts passing fails here, so the list cannot go stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from _coverage_cases import all_cases, run_case

ENGINES = ("forward", "reverse")

# (case, engine) -> why it is not supported; regenerate with
# ``PYTHONPATH=python python tests/coverage_report.py --expected``
UNSUPPORTED: dict[tuple[str, str], str] = {
    ('array_0d_result', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_0d_result', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_mixed_const', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_mixed_const', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_nested', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_nested', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_of_arrays', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_of_arrays', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_of_scalars', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('array_of_scalars', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('asarray_list', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('asarray_list', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('beta', 'forward'): "gradtest's forward mode does not support scipy.special.beta",
    ('beta', 'reverse'): "gradtest's reverse mode does not support scipy.special.beta",
    ('beta[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.beta",
    ('beta[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.beta",
    ('betaln', 'forward'): "gradtest's forward mode does not support scipy.special.betaln",
    ('betaln', 'reverse'): "gradtest's reverse mode does not support scipy.special.betaln",
    ('betaln[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.betaln",
    ('betaln[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.betaln",
    ('c_', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('c_', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('c_2d', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('c_2d', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('digamma', 'forward'): "gradtest's forward mode does not support scipy.special.psi",
    ('digamma', 'reverse'): "gradtest's reverse mode does not support scipy.special.psi",
    ('digamma[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.psi",
    ('digamma[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.psi",
    ('entr', 'forward'): "gradtest's forward mode does not support scipy.special.entr",
    ('entr', 'reverse'): "gradtest's reverse mode does not support scipy.special.entr",
    ('entr[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.entr",
    ('entr[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.entr",
    ('erf', 'forward'): "gradtest's forward mode does not support scipy.special.erf",
    ('erf', 'reverse'): "gradtest's reverse mode does not support scipy.special.erf",
    ('erf[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.erf",
    ('erf[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.erf",
    ('erfc', 'forward'): "gradtest's forward mode does not support scipy.special.erfc",
    ('erfc', 'reverse'): "gradtest's reverse mode does not support scipy.special.erfc",
    ('erfc[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.erfc",
    ('erfc[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.erfc",
    ('erfcinv', 'forward'): "gradtest's forward mode does not support scipy.special.erfcinv",
    ('erfcinv', 'reverse'): "gradtest's reverse mode does not support scipy.special.erfcinv",
    ('erfcinv[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.erfcinv",
    ('erfcinv[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.erfcinv",
    ('erfinv', 'forward'): "gradtest's forward mode does not support scipy.special.erfinv",
    ('erfinv', 'reverse'): "gradtest's reverse mode does not support scipy.special.erfinv",
    ('erfinv[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.erfinv",
    ('erfinv[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.erfinv",
    ('expit', 'forward'): "gradtest's forward mode does not support scipy.special.expit",
    ('expit', 'reverse'): "gradtest's reverse mode does not support scipy.special.expit",
    ('expit[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.expit",
    ('expit[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.expit",
    ('expit_logit', 'forward'): "gradtest's forward mode does not support scipy.special.expit",
    ('expit_logit', 'reverse'): "gradtest's reverse mode does not support scipy.special.expit",
    ('expit_logit[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.expit",
    ('expit_logit[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.expit",
    ('gamma', 'forward'): "gradtest's forward mode does not support scipy.special.gamma",
    ('gamma', 'reverse'): "gradtest's reverse mode does not support scipy.special.gamma",
    ('gamma[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.gamma",
    ('gamma[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.gamma",
    ('gamma_negative', 'forward'): "gradtest's forward mode does not support scipy.special.gamma",
    ('gamma_negative', 'reverse'): "gradtest's reverse mode does not support scipy.special.gamma",
    ('gamma_negative[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.gamma",
    ('gamma_negative[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.gamma",
    ('gammaln', 'forward'): "gradtest's forward mode does not support scipy.special.gammaln",
    ('gammaln', 'reverse'): "gradtest's reverse mode does not support scipy.special.gammaln",
    ('gammaln[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.gammaln",
    ('gammaln[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.gammaln",
    ('gammaln_negative', 'forward'): "gradtest's forward mode does not support scipy.special.gammaln",
    ('gammaln_negative', 'reverse'): "gradtest's reverse mode does not support scipy.special.gammaln",
    ('gammaln_negative[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.gammaln",
    ('gammaln_negative[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.gammaln",
    ('i0', 'forward'): "gradtest's forward mode does not support scipy.special.i0",
    ('i0', 'reverse'): "gradtest's reverse mode does not support scipy.special.i0",
    ('i0[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.i0",
    ('i0[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.i0",
    ('i0e', 'forward'): "gradtest's forward mode does not support scipy.special.i0e",
    ('i0e', 'reverse'): "gradtest's reverse mode does not support scipy.special.i0e",
    ('i0e[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.i0e",
    ('i0e[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.i0e",
    ('i1', 'forward'): "gradtest's forward mode does not support scipy.special.i1",
    ('i1', 'reverse'): "gradtest's reverse mode does not support scipy.special.i1",
    ('i1[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.i1",
    ('i1[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.i1",
    ('i1e', 'forward'): "gradtest's forward mode does not support scipy.special.i1e",
    ('i1e', 'reverse'): "gradtest's reverse mode does not support scipy.special.i1e",
    ('i1e[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.i1e",
    ('i1e[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.i1e",
    ('iv', 'forward'): "gradtest's forward mode does not support scipy.special.iv",
    ('iv', 'reverse'): "gradtest's reverse mode does not support scipy.special.iv",
    ('iv[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.iv",
    ('iv[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.iv",
    ('iv_int_order', 'forward'): "gradtest's forward mode does not support scipy.special.iv",
    ('iv_int_order', 'reverse'): "gradtest's reverse mode does not support scipy.special.iv",
    ('iv_int_order[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.iv",
    ('iv_int_order[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.iv",
    ('ive', 'forward'): "gradtest's forward mode does not support scipy.special.ive",
    ('ive', 'reverse'): "gradtest's reverse mode does not support scipy.special.ive",
    ('ive[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.ive",
    ('ive[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.ive",
    ('jv', 'forward'): "gradtest's forward mode does not support scipy.special.jv",
    ('jv', 'reverse'): "gradtest's reverse mode does not support scipy.special.jv",
    ('jv[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.jv",
    ('jv[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.jv",
    ('jv_zero_order', 'forward'): "gradtest's forward mode does not support scipy.special.jv",
    ('jv_zero_order', 'reverse'): "gradtest's reverse mode does not support scipy.special.jv",
    ('jv_zero_order[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.jv",
    ('jv_zero_order[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.jv",
    ('kl_div', 'forward'): "gradtest's forward mode does not support scipy.special.kl_div",
    ('kl_div', 'reverse'): "gradtest's reverse mode does not support scipy.special.kl_div",
    ('kl_div[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.kl_div",
    ('kl_div[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.kl_div",
    ('kv', 'forward'): "gradtest's forward mode does not support scipy.special.kv",
    ('kv', 'reverse'): "gradtest's reverse mode does not support scipy.special.kv",
    ('kv[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.kv",
    ('kv[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.kv",
    ('log_ndtr', 'forward'): "gradtest's forward mode does not support scipy.special.log_ndtr",
    ('log_ndtr', 'reverse'): "gradtest's reverse mode does not support scipy.special.log_ndtr",
    ('log_ndtr[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.log_ndtr",
    ('log_ndtr[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.log_ndtr",
    ('log_ndtr_tail', 'forward'): "gradtest's forward mode does not support scipy.special.log_ndtr",
    ('log_ndtr_tail', 'reverse'): "gradtest's reverse mode does not support scipy.special.log_ndtr",
    ('log_ndtr_tail[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.log_ndtr",
    ('log_ndtr_tail[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.log_ndtr",
    ('log_softmax', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('log_softmax', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('log_softmax[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('log_softmax[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('log_softmax_axis', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('log_softmax_axis', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('log_softmax_axis[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('log_softmax_axis[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logaddexp_reduce', 'forward'): "gradtest's forward mode does not support numpy.logaddexp.reduce",
    ('logaddexp_reduce', 'reverse'): "gradtest's reverse mode does not support numpy.logaddexp.reduce",
    ('loggamma', 'forward'): "gradtest's forward mode does not support scipy.special.loggamma",
    ('loggamma', 'reverse'): "gradtest's reverse mode does not support scipy.special.loggamma",
    ('loggamma[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.loggamma",
    ('loggamma[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.loggamma",
    ('logit', 'forward'): "gradtest's forward mode does not support scipy.special.logit",
    ('logit', 'reverse'): "gradtest's reverse mode does not support scipy.special.logit",
    ('logit[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.logit",
    ('logit[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.logit",
    ('logsumexp', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_axis', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_axis', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_axis[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_axis[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_b', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_b', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_b[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_b[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_keepdims', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_keepdims', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_keepdims[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_keepdims[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_large', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_large', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_large[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('logsumexp_large[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_logpdf', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_logpdf', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_logpdf_batch', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_logpdf_batch', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_logpdf_cov', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_logpdf_cov', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_pdf', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('mvn_pdf', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('ndtr', 'forward'): "gradtest's forward mode does not support scipy.special.ndtr",
    ('ndtr', 'reverse'): "gradtest's reverse mode does not support scipy.special.ndtr",
    ('ndtr[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.ndtr",
    ('ndtr[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.ndtr",
    ('ndtri', 'forward'): "gradtest's forward mode does not support scipy.special.ndtri",
    ('ndtri', 'reverse'): "gradtest's reverse mode does not support scipy.special.ndtri",
    ('ndtri[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.ndtri",
    ('ndtri[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.ndtri",
    ('norm_cdf', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_cdf', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logcdf', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logcdf', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logpdf', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logpdf', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logpdf_kw', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logpdf_kw', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logpdf_loc_scale', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_logpdf_loc_scale', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_pdf', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('norm_pdf', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_1', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_1', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_1[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_1[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_array_n', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_array_n', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_array_n[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('polygamma_array_n[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('psi', 'forward'): "gradtest's forward mode does not support scipy.special.psi",
    ('psi', 'reverse'): "gradtest's reverse mode does not support scipy.special.psi",
    ('psi[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.psi",
    ('psi[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.psi",
    ('r_', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('r_', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('r_scalar', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('r_scalar', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('r_slice', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('r_slice', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('rel_entr', 'forward'): "gradtest's forward mode does not support scipy.special.rel_entr",
    ('rel_entr', 'reverse'): "gradtest's reverse mode does not support scipy.special.rel_entr",
    ('rel_entr[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.rel_entr",
    ('rel_entr[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.rel_entr",
    ('softmax', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('softmax', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('softmax[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('softmax[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('softmax_axis', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('softmax_axis', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('softmax_axis[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('softmax_axis[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('spherical_jn', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('spherical_jn', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('spherical_jn[float32]', 'forward'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('spherical_jn[float32]', 'reverse'): "conversion to a NumPy array (np.asarray, np.array, np.float64, assignment into a plain arr",
    ('xlog1py', 'forward'): "gradtest's forward mode does not support scipy.special.xlog1py",
    ('xlog1py', 'reverse'): "gradtest's reverse mode does not support scipy.special.xlog1py",
    ('xlog1py[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.xlog1py",
    ('xlog1py[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.xlog1py",
    ('xlogy', 'forward'): "gradtest's forward mode does not support scipy.special.xlogy",
    ('xlogy', 'reverse'): "gradtest's reverse mode does not support scipy.special.xlogy",
    ('xlogy[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.xlogy",
    ('xlogy[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.xlogy",
    ('xlogy_zero_x', 'forward'): "gradtest's forward mode does not support scipy.special.xlogy",
    ('xlogy_zero_x', 'reverse'): "gradtest's reverse mode does not support scipy.special.xlogy",
    ('xlogy_zero_x[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.xlogy",
    ('xlogy_zero_x[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.xlogy",
    ('yv', 'forward'): "gradtest's forward mode does not support scipy.special.yv",
    ('yv', 'reverse'): "gradtest's reverse mode does not support scipy.special.yv",
    ('yv[float32]', 'forward'): "gradtest's forward mode does not support scipy.special.yv",
    ('yv[float32]', 'reverse'): "gradtest's reverse mode does not support scipy.special.yv",
}

_ALL = all_cases()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", _ALL, ids=[c.name for c in _ALL])
def test_case(case, engine):
    if case.scipy:
        pytest.importorskip("scipy")
    with warnings.catch_warnings():
        # the cases run NumPy on NaN-masked and boundary inputs, as users' code does
        warnings.simplefilter("ignore", RuntimeWarning)
        kind, message = run_case(case, engine)
    reason = UNSUPPORTED.get((case.name, engine))
    if reason is None:
        assert kind == "pass", f"{engine}: {kind}: {message}"
    else:
        assert kind != "pass", f"{case.name} now passes in {engine}: remove it from UNSUPPORTED"
        assert kind == "unsupported", f"{engine}: expected NotImplementedError ({reason}), got {kind}: {message}"


def test_unsupported_list_names_real_cases():
    names = {c.name for c in _ALL}
    assert not [key for key in UNSUPPORTED if key[0] not in names or key[1] not in ENGINES]


def test_cases_cover_issue_functions():
    """Every function issue 10 part 5 lists has at least one case (by the name it is written in)."""
    import _coverage_cases
    with open(_coverage_cases.__file__, encoding="utf-8") as fh:
        source = fh.read()
    wanted = (
        "np.array( np.r_ np.c_ np.append svd solve eigh cholesky det slogdet inv pinv eig( \"nuc\" "
        "qr es( tril triu diag roll rot90 split array_split hsplit vsplit dsplit pad cross kron "
        "partition select linspace gradient fliplr flipud rollaxis average nansum nanmean nanmax "
        "nanmin nanprod nanstd nanvar nancumsum copysign heaviside sinc ptp nan_to_num "
        "gammaln digamma polygamma \"erf\" erfc erfinv erfcinv expit logit xlogy xlog1py ndtr "
        "log_ndtr ndtri \"i0\" \"i1\" i0e i1e ive \"iv\" \"jv\" \"yv\" \"kv\" \"gamma\" \"beta\" "
        "betaln loggamma psi spherical_jn logsumexp softmax log_softmax entr rel_entr kl_div "
        "logpdf .pdf( .cdf( logcdf multivariate_normal"
    ).split()
    assert [w for w in wanted if w not in source] == []


@pytest.mark.parametrize("engine", ENGINES)
def test_unsupported_scipy_function_is_named(engine):
    """A SciPy ufunc without a rule is refused naming scipy.special, not numpy."""
    special = pytest.importorskip("scipy.special")
    import gradtest
    report = gradtest.check_gradients(lambda x: np.sum(special.struve(1.0, x)), np.array([0.5, 1.5]),
                                      backends=[engine])
    outcome = report.outcomes[engine]
    assert outcome.status == "error"
    assert isinstance(outcome.exception, NotImplementedError)
    assert "scipy.special.struve" in str(outcome.exception)


def test_import_gradtest_does_not_import_scipy():
    code = ("import sys, numpy as np, gradtest, gradtest.forward, gradtest.reverse;"
            "from gradtest.forward import Dual;"
            "d = Dual(np.ones(2), np.eye(2)); np.sum(np.sin(d));"
            "print('scipy' in sys.modules)")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"
