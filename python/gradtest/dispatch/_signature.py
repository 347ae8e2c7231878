"""C signatures for the call check: a parser of C prototypes (``"double(const double*, size_t)"``),
the same from ctypes' ``argtypes``/``restype``, and the conversion of Python arguments to the
register classes and bit patterns the core's guarded call takes (and of its result back).
"""

from __future__ import annotations

import ctypes
import dataclasses
import re
import struct
from typing import Any

import numpy as np

from .. import _dispatch

_INT_TYPES: dict[str, tuple[int, bool]] = {  # name -> (bytes, signed)
    "char": (1, True), "signed char": (1, True), "unsigned char": (1, False), "_Bool": (1, False),
    "bool": (1, False), "short": (2, True), "unsigned short": (2, False), "int": (4, True),
    "unsigned int": (4, False), "unsigned": (4, False), "long": (8, True), "unsigned long": (8, False),
    "long long": (8, True), "unsigned long long": (8, False), "size_t": (8, False), "ssize_t": (8, True),
    "ptrdiff_t": (8, True), "intptr_t": (8, True), "uintptr_t": (8, False), "int8_t": (1, True),
    "uint8_t": (1, False), "int16_t": (2, True), "uint16_t": (2, False), "int32_t": (4, True),
    "uint32_t": (4, False), "int64_t": (8, True), "uint64_t": (8, False),
}
_FLOAT_TYPES = {"double": 8, "float": 4}
_QUALIFIERS = {"const", "volatile", "restrict", "__restrict", "__restrict__", "struct", "signed"}
_TYPE_WORDS = {"char", "short", "int", "long", "unsigned", "double", "float", "void", "_Bool", "bool"}


@dataclasses.dataclass(frozen=True)
class CType:
    kind: str                  # "int", "float", "pointer", "void"
    size: int = 8
    signed: bool = True
    pointee: str | None = None  # pointer: numpy dtype name of the elements, None for void*
    text: str = ""


@dataclasses.dataclass(frozen=True)
class Signature:
    ret: CType
    args: tuple[CType, ...]

    def __str__(self) -> str:
        return f"{self.ret.text}({', '.join(a.text for a in self.args)})"


def parse_ctype(text: str, where: str) -> CType:
    tokens = re.findall(r"[A-Za-z_]\w*|\*|\[\s*\]", text)
    stars = sum(1 for t in tokens if t == "*" or t.startswith("["))
    words = [t for t in tokens if t != "*" and not t.startswith("[") and t not in _QUALIFIERS]
    # a trailing identifier that is no type word is the parameter's name
    if len(words) > 1 and words[-1] not in _TYPE_WORDS and words[-1] not in _INT_TYPES:
        words = words[:-1]
    base = " ".join(words)
    base = {"long int": "long", "long long int": "long long", "unsigned long int": "unsigned long",
            "short int": "short", "unsigned short int": "unsigned short", "long unsigned": "unsigned long",
            "unsigned long long int": "unsigned long long"}.get(base, base)
    shown = " ".join(text.split())
    if stars > 1:
        raise ValueError(f"signature: {where} has type {shown!r}: pointers to pointers are not supported")
    if stars == 1:
        if base == "void":
            return CType("pointer", pointee=None, text=shown)
        if base in _FLOAT_TYPES:
            return CType("pointer", pointee="float64" if base == "double" else "float32", text=shown)
        if base in _INT_TYPES:
            size, signed = _INT_TYPES[base]
            return CType("pointer", pointee=f"{'int' if signed else 'uint'}{8 * size}", text=shown)
        raise ValueError(f"signature: {where} has unsupported type {shown!r}")
    if base == "void":
        return CType("void", 0, text="void")
    if base in _FLOAT_TYPES:
        return CType("float", _FLOAT_TYPES[base], text=shown)
    if base in _INT_TYPES:
        size, signed = _INT_TYPES[base]
        return CType("int", size, signed, text=shown)
    raise ValueError(f"signature: {where} has unsupported type {shown!r} (scalars, pointers to scalars and void*)")


def parse_signature(text: str) -> Signature:
    if not isinstance(text, str):
        raise TypeError(f"signature: expected a string such as 'double(const double*, size_t)', got {text!r}")
    m = re.fullmatch(r"\s*(.+?)\s*(?:\b[A-Za-z_]\w*\s*)?\(\s*(.*?)\s*\)\s*", text)
    if not m:
        raise ValueError(f"signature: expected 'return_type(arg_type, ...)', got {text!r}")
    ret_text, args_text = m.group(1), m.group(2)
    ret = parse_ctype(ret_text, "the return value")
    if args_text in ("", "void"):
        return Signature(ret, ())
    if "..." in args_text:
        raise ValueError("signature: variadic functions are not supported by the call check")
    args = tuple(parse_ctype(a, f"argument {i}") for i, a in enumerate(args_text.split(",")))
    if any(a.kind == "void" for a in args):
        raise ValueError(f"signature: a parameter of type void in {text!r}")
    return Signature(ret, args)


def ctypes_type(t: Any, where: str) -> CType:
    if t is None:
        return CType("void", 0, text="void")
    if t is ctypes.c_double:
        return CType("float", 8, text="double")
    if t is ctypes.c_float:
        return CType("float", 4, text="float")
    if t in (ctypes.c_void_p, ctypes.c_char_p):
        return CType("pointer", pointee=None if t is ctypes.c_void_p else "int8", text=t.__name__)
    if isinstance(t, type) and issubclass(t, ctypes._Pointer):  # type: ignore[attr-defined]
        inner = ctypes_type(t._type_, where)
        if inner.kind == "float":
            return CType("pointer", pointee="float64" if inner.size == 8 else "float32", text=f"{inner.text}*")
        if inner.kind == "int":
            return CType("pointer", pointee=f"{'int' if inner.signed else 'uint'}{8 * inner.size}",
                          text=f"{inner.text}*")
        raise ValueError(f"argtypes: {where} is {t.__name__}, which the call check does not support")
    if isinstance(t, type) and issubclass(t, ctypes._SimpleCData) and t._type_ in "bBhHiIlLqQ?":  # type: ignore[attr-defined]
        signed = t._type_ in "bhilq"
        return CType("int", ctypes.sizeof(t), signed, text=t.__name__)
    raise ValueError(f"argtypes: {where} is {getattr(t, '__name__', t)!r}, which the call check does not support")


def signature_from_ctypes(fn: Any) -> Signature | None:
    argtypes = getattr(fn, "argtypes", None)
    if argtypes is None:
        return None
    restype = getattr(fn, "restype", ctypes.c_int)
    return Signature(
        ctypes_type(restype, "the return type"),
        tuple(ctypes_type(t, f"argument {i}") for i, t in enumerate(argtypes)),
    )


def convert_args(sig: Signature, args: tuple) -> tuple[list[int], list[int]]:
    """Classes and bit patterns of the arguments; raises on any mismatch before anything runs."""
    if len(args) != len(sig.args):
        raise TypeError(f"args: the signature {sig} takes {len(sig.args)} argument(s), got {len(args)}")
    classes, bits = [], []
    for i, (ct, value) in enumerate(zip(sig.args, args)):
        where = f"args[{i}] ({ct.text})"
        if ct.kind == "pointer":
            if value is None:
                raise ValueError(f"{where}: None would pass a NULL pointer; pass an array")
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where}: expected a numpy array, got {type(value).__name__}")
            if ct.pointee is not None and value.dtype != np.dtype(ct.pointee):
                raise TypeError(f"{where}: expected an array of dtype {ct.pointee}, got {value.dtype}")
            if not value.flags.c_contiguous:
                raise ValueError(f"{where}: the array is not C-contiguous; pass np.ascontiguousarray(...)")
            if value.size == 0:
                raise ValueError(f"{where}: the array is empty (its data pointer may be NULL or dangling)")
            classes.append(0)
            bits.append(value.ctypes.data)
        elif ct.kind == "int":
            if isinstance(value, (bool, np.bool_)) and ct.text not in ("_Bool", "bool", "c_bool"):
                raise TypeError(f"{where}: expected an integer, got a bool")
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"{where}: expected an integer, got {type(value).__name__}")
            v = int(value)
            lo, hi = (-(1 << (8 * ct.size - 1)), (1 << (8 * ct.size - 1)) - 1) if ct.signed else (0, (1 << (8 * ct.size)) - 1)
            if not lo <= v <= hi:
                raise OverflowError(f"{where}: {v} does not fit ({lo}..{hi})")
            classes.append(0)
            bits.append(v & 0xFFFFFFFFFFFFFFFF)
        else:  # float
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{where}: expected a real number, got {type(value).__name__}")
            if ct.size == 8:
                classes.append(1)
                bits.append(struct.unpack("<Q", struct.pack("<d", float(value)))[0])
            else:
                classes.append(2)
                bits.append(struct.unpack("<I", struct.pack("<f", float(value)))[0])
    n_int = sum(1 for c in classes if c == 0)
    n_fp = len(classes) - n_int
    if n_int > _dispatch.MAX_INT_ARGS or n_fp > _dispatch.MAX_FP_ARGS:
        raise ValueError(
            f"args: the call check passes arguments in registers only: at most {_dispatch.MAX_INT_ARGS} integer/"
            f"pointer and {_dispatch.MAX_FP_ARGS} floating-point ones; {sig} has {n_int} and {n_fp}"
        )
    return classes, bits


def buffer_specs(sig: Signature, args: tuple) -> list[tuple[int, str, bool] | None]:
    """Per argument of the call check, ``(nbytes, name, is_const)`` for an array passed to a
    pointer (the call gets a copy fenced by guard pages), else None. The name is the parameter's
    own when the signature gives one (``double *grad``), else ``args[i]``."""
    specs: list[tuple[int, str, bool] | None] = []
    for i, (ct, value) in enumerate(zip(sig.args, args)):
        if ct.kind != "pointer":
            specs.append(None)
            continue
        words = re.findall(r"[A-Za-z_]\w*", ct.text)
        named = len(words) > 1 and words[-1] not in _TYPE_WORDS and words[-1] not in _INT_TYPES \
            and words[-1] not in _QUALIFIERS
        specs.append((int(value.nbytes), words[-1] if named else f"args[{i}]", "const" in words))
    return specs


def convert_result(ret: CType, raw: int) -> Any:
    if ret.kind == "void":
        return None
    if ret.kind == "float":
        if ret.size == 8:
            return struct.unpack("<d", struct.pack("<Q", raw))[0]
        return struct.unpack("<f", struct.pack("<I", raw & 0xFFFFFFFF))[0]
    if ret.kind == "pointer":
        return raw
    v = raw & ((1 << (8 * ret.size)) - 1)
    if ret.signed and v >> (8 * ret.size - 1):
        v -= 1 << (8 * ret.size)
    return v
