"""gradtest: tells authors of numerical code whether their derivatives are right."""

from .ckernel import CKernel, get_include

__all__ = ["CKernel", "get_include"]
