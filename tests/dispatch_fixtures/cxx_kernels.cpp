// cxx_kernels.cpp: C++ patterns for the dispatch checks (built by the tests with the C++ compiler).
#include <cstddef>
#include <stdexcept>

#define EXPORT extern "C" __attribute__((visibility("default")))

// operator new[] / delete[]: allocation.
EXPORT double gt_cxx_new_sum(const double *x, std::size_t n)
{
    double *tmp = new double[n];
    double acc = 0.0;
    for (std::size_t i = 0; i < n; i++) {
        tmp[i] = x[i];
        acc += tmp[i];
    }
    delete[] tmp;
    return acc;
}

struct Op {
    virtual ~Op() = default;
    virtual double apply(double v) const = 0;
};

// A virtual call in the loop: dynamic dispatch.
EXPORT double gt_cxx_virtual_sum(const Op *op, const double *x, std::size_t n)
{
    double acc = 0.0;
    for (std::size_t i = 0; i < n; i++)
        acc += op->apply(x[i]);
    return acc;
}

// A throw on bad input: __cxa_allocate_exception and __cxa_throw lie on the error path.
EXPORT double gt_cxx_checked(const double *x, std::size_t n)
{
    if (n == 0)
        throw std::invalid_argument("empty");
    double acc = 0.0;
    for (std::size_t i = 0; i < n; i++)
        acc += x[i];
    return acc;
}
