/* elf_reader.h: a bounds-checked reader of 64-bit little-endian ELF shared objects and executables.
 *
 * It reads what the dispatch analysis needs: the loadable segments (to turn a virtual address into
 * code bytes), the sections (to know the PLT), the function symbols of .symtab and .dynsym (by
 * address and by name) and the RELA relocations (GOT slot -> symbol). Every offset, size and
 * index read from the file is checked against the file's size before use, so a truncated,
 * stripped or malformed object gives GT_EFORMAT and a message, never an out-of-bounds read.
 * Names returned point into the object's own memory and live as long as the gt_elf. */
#ifndef GT_ELF_H
#define GT_ELF_H

#include <stddef.h>
#include <stdint.h>

#include "gt_common.h"

#define GT_EM_X86_64 62
#define GT_EM_AARCH64 183

typedef struct gt_elf gt_elf;

typedef struct gt_elf_symbol {
    uint64_t value;   /* virtual address */
    uint64_t size;    /* bytes, 0 when unknown */
    const char *name; /* NUL-terminated, inside the object's string table */
    uint8_t global;   /* 1 for STB_GLOBAL/STB_WEAK, 0 for STB_LOCAL */
    uint8_t dynamic;  /* 1 when it came from .dynsym */
} gt_elf_symbol;

/* What a relocated pointer slot (a GOT entry) will hold at run time. */
typedef struct gt_elf_reloc {
    uint64_t offset;  /* the slot's virtual address */
    const char *name; /* the symbol it binds to, or NULL for a relative/IRELATIVE slot */
    int defined;      /* 1 when that symbol is defined in this object */
    uint64_t value;   /* the symbol's address in this object when defined, else the addend */
    int jump_slot;    /* 1 for JUMP_SLOT (PLT) relocations */
} gt_elf_reloc;

/* Opens the file at `path` (mapped read-only). On success *out owns the mapping; release it with
 * gt_elf_close. On failure returns GT_EIO (errno set) or GT_EFORMAT and writes a message into
 * err (err_cap bytes, may be 0); *out is left NULL. */
int gt_elf_open_file(const char *path, gt_elf **out, char *err, size_t err_cap);

/* Parses `size` bytes at `data`, which the caller keeps alive and unchanged until gt_elf_close
 * (the reader borrows it). Same results as gt_elf_open_file. */
int gt_elf_open_mem(const void *data, size_t size, gt_elf **out, char *err, size_t err_cap);

/* Releases the object and its mapping; NULL is a no-op. */
void gt_elf_close(gt_elf *elf);

/* The e_machine field (GT_EM_X86_64, GT_EM_AARCH64, ...). */
int gt_elf_machine(const gt_elf *elf);

/* The lowest virtual address of a PT_LOAD segment (page-aligned): with the load bias it gives the
 * runtime address of the object's first byte. */
uint64_t gt_elf_base_vaddr(const gt_elf *elf);

/* Points *code at the file bytes of an executable segment holding `vaddr` and sets *avail to the
 * bytes left in that segment. Returns GT_EINVAL when vaddr is not in executable file bytes. */
int gt_elf_code(const gt_elf *elf, uint64_t vaddr, const uint8_t **code, size_t *avail);

/* Copies `n` bytes at `vaddr` from any loadable segment's file bytes into `out`.
 * Returns GT_EINVAL when the whole range is not backed by the file. */
int gt_elf_read(const gt_elf *elf, uint64_t vaddr, void *out, size_t n);

/* The function symbol that starts exactly at vaddr (preferring a global name), or NULL. */
const gt_elf_symbol *gt_elf_function_at(const gt_elf *elf, uint64_t vaddr);

/* The function symbol containing vaddr (or, failing a size, the closest one below it, within
 * the same executable segment); *offset gets vaddr - symbol value. NULL when none. */
const gt_elf_symbol *gt_elf_symbolize(const gt_elf *elf, uint64_t vaddr, uint64_t *offset);

/* The defined function symbol called `name` (global preferred), or NULL. */
const gt_elf_symbol *gt_elf_lookup(const gt_elf *elf, const char *name);

/* The relocation of the pointer slot at vaddr, or NULL. */
const gt_elf_reloc *gt_elf_reloc_at(const gt_elf *elf, uint64_t vaddr);

/* The name of the section containing vaddr (allocated sections only), or NULL. */
const char *gt_elf_section_name(const gt_elf *elf, uint64_t vaddr);

/* 1 when vaddr lies in a PLT section (.plt, .plt.sec, .plt.got, .iplt). */
int gt_elf_in_plt(const gt_elf *elf, uint64_t vaddr);

/* The source position of vaddr from .debug_line (DWARF 2 to 5), when the object has one: *dir
 * (may be "") and *file point into the object, *line is 1-based. GT_EINVAL when unknown. A damaged
 * line table is read up to the damage and never fails gt_elf_open_*. */
int gt_elf_line(const gt_elf *elf, uint64_t vaddr, const char **dir, const char **file, unsigned *line);

/* Counts of what was read, for reports and tests. */
size_t gt_elf_symbol_count(const gt_elf *elf);
size_t gt_elf_reloc_count(const gt_elf *elf);

/* The i-th function symbol in address order (i < gt_elf_symbol_count), or NULL. */
const gt_elf_symbol *gt_elf_symbol_get(const gt_elf *elf, size_t i);

#endif /* GT_ELF_H */
