/* disasm.h: instruction decoding through capstone, loaded at run time.
 *
 * The core does not link capstone: gt_cs_load dlopen()s the libcapstone shared object whose path
 * the caller gives (the Python layer takes it from the installed `capstone` wheel) and resolves
 * the few functions it uses. Only the documented, stable part of capstone 5's ABI is declared here
 * (cs_open, cs_close, cs_malloc, cs_free, cs_disasm_iter, cs_version and the cs_insn header
 * fields); the per-architecture detail structures are not used, operands are read from op_str. */
#ifndef GT_DISASM_H
#define GT_DISASM_H

#include <stddef.h>
#include <stdint.h>

#include "gt_common.h"

typedef struct gt_cs gt_cs;           /* a loaded capstone library */
typedef struct gt_decoder gt_decoder; /* one disassembler handle (not thread-safe) */

/* One decoded instruction (a copy: it outlives the next decode); capstone's Intel/ARM syntax. */
typedef struct gt_insn {
    uint64_t address;
    unsigned size;
    char mnemonic[32]; /* e.g. "call", "notrack jmp", "bl", "b.eq" */
    char op_str[160];  /* e.g. "qword ptr [rip + 0x2fe2]", "x16, #0x11000" */
} gt_insn;

/* Loads capstone from `path`. On success *out owns the library handle (gt_cs_unload releases
 * it). GT_EIO with a message in err when it cannot be loaded, GT_EUNSUPPORTED when its major
 * version is not 5. */
int gt_cs_load(const char *path, gt_cs **out, char *err, size_t err_cap);
void gt_cs_unload(gt_cs *cs);

/* Opens a decoder for an ELF machine (62 = x86-64, 183 = aarch64). *out is owned by the caller
 * and must be closed with gt_decoder_close before cs is unloaded. */
int gt_decoder_open(gt_cs *cs, int machine, gt_decoder **out, char *err, size_t err_cap);
void gt_decoder_close(gt_decoder *d);

/* Decodes one instruction from code[0..avail) at `address` into *insn. Returns GT_OK, or GT_EFORMAT for bytes that are no instruction. */
int gt_decode(gt_decoder *d, const uint8_t *code, size_t avail, uint64_t address, gt_insn *insn);

#endif /* GT_DISASM_H */
