/* elf_reader.c: bounds-checked ELF64 reader (see elf_reader.h).
 *
 * Fields are read byte by byte through rd16/rd32/rd64 from checked offsets, never by casting the
 * file to structs, so alignment and the file's size never matter. */
#define _POSIX_C_SOURCE 200809L
#include "elf_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ELF constants used here (from the System V gABI and the psABIs). */
enum {
    EHDR_SIZE = 64, SHDR_SIZE = 64, PHDR_SIZE = 56, SYM_SIZE = 24, RELA_SIZE = 24,
    PT_LOAD = 1, PF_X = 1,
    SHT_SYMTAB = 2, SHT_RELA = 4, SHT_NOBITS = 8, SHT_DYNSYM = 11,
    SHF_ALLOC = 2,
    SHN_UNDEF = 0, SHN_LORESERVE = 0xff00, SHN_XINDEX = 0xffff,
    STT_FUNC = 2, STT_GNU_IFUNC = 10, STB_LOCAL = 0,
    R_X86_64_64 = 1, R_X86_64_GLOB_DAT = 6, R_X86_64_JUMP_SLOT = 7,
    R_AARCH64_ABS64 = 257, R_AARCH64_GLOB_DAT = 1025, R_AARCH64_JUMP_SLOT = 1026,
};

#define MAX_SEGMENTS 64
#define MAX_SECTIONS 65535

typedef struct segment {
    uint64_t vaddr, filesz, offset;
    int exec;
} segment;

typedef struct line_row {
    uint64_t addr;
    uint32_t file; /* index into gt_elf.files */
    uint32_t line; /* 0 marks the end of a sequence */
} line_row;

typedef struct line_file {
    const char *dir; /* may be "" */
    const char *name;
} line_file;

typedef struct section {
    const char *name; /* "" when unnamed */
    uint64_t addr, size;
    int alloc, plt;
} section;

struct gt_elf {
    const uint8_t *data;
    size_t size;
    void *mapping; /* non-NULL when we own an mmap of `size` bytes */
    int machine;
    segment segs[MAX_SEGMENTS];
    size_t nsegs;
    section *secs;
    size_t nsecs;
    gt_elf_symbol *syms; /* function symbols sorted by address */
    size_t nsyms;
    gt_elf_symbol **by_name; /* the same, sorted by name */
    gt_elf_reloc *relocs;    /* sorted by offset */
    size_t nrelocs;
    uint64_t plt_lo[8], plt_hi[8]; /* the PLT sections' ranges, looked up for every branch */
    size_t nplt;
    /* .debug_line: rows sorted by address and the file names they index */
    uint64_t dl_off, dl_size, dls_off, dls_size, ds_off, ds_size;
    line_row *rows;
    size_t nrows;
    line_file *files;
    size_t nfiles;
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | ((uint32_t)rd16(p + 2) << 16); }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* 1 when [off, off+len) lies inside the file (overflow-safe). */
static int in_file(const gt_elf *e, uint64_t off, uint64_t len)
{
    return off <= e->size && len <= e->size - off;
}

static int fail(char *err, size_t cap, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return GT_EFORMAT;
}

/* A NUL-terminated string at `off` within the string table [tab, tab+tabsz), or NULL. */
static const char *str_at(const gt_elf *e, uint64_t tab, uint64_t tabsz, uint64_t off)
{
    if (!in_file(e, tab, tabsz) || off >= tabsz)
        return NULL;
    const uint8_t *s = e->data + tab + off;
    if (!memchr(s, '\0', (size_t)(tabsz - off)))
        return NULL;
    return (const char *)s;
}

static int cmp_sym_addr(const void *a, const void *b)
{
    const gt_elf_symbol *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    /* at one address: globals first, then longer-known sizes, then by name (stable order) */
    if (x->global != y->global)
        return x->global ? -1 : 1;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_sym_name(const void *a, const void *b)
{
    const gt_elf_symbol *x = *(const gt_elf_symbol *const *)a, *y = *(const gt_elf_symbol *const *)b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    if (x->global != y->global)
        return x->global ? -1 : 1;
    return x->value < y->value ? -1 : x->value > y->value;
}

static int cmp_reloc(const void *a, const void *b)
{
    const gt_elf_reloc *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Reads the program headers into e->segs. */
static int read_segments(gt_elf *e, char *err, size_t cap)
{
    const uint8_t *h = e->data;
    uint64_t phoff = rd64(h + 32);
    uint16_t phentsize = rd16(h + 54), phnum = rd16(h + 56);
    if (phnum == 0)
        return fail(err, cap, "no program headers: not a loadable object (a relocatable .o file?)");
    if (phentsize < PHDR_SIZE)
        return fail(err, cap, "program header entry size %u is smaller than %d", phentsize, PHDR_SIZE);
    if (!in_file(e, phoff, (uint64_t)phnum * phentsize))
        return fail(err, cap, "program headers (offset %llu, %u entries) extend past the end of the file "
                    "(%zu bytes): truncated?", (unsigned long long)phoff, phnum, e->size);
    for (uint16_t i = 0; i < phnum; i++) {
        const uint8_t *p = h + phoff + (uint64_t)i * phentsize;
        if (rd32(p) != PT_LOAD)
            continue;
        if (e->nsegs == MAX_SEGMENTS)
            return fail(err, cap, "more than %d loadable segments", MAX_SEGMENTS);
        segment s = {rd64(p + 16), rd64(p + 32), rd64(p + 8), (rd32(p + 4) & PF_X) != 0};
        if (!in_file(e, s.offset, s.filesz))
            return fail(err, cap, "loadable segment %u (offset %llu, %llu bytes) extends past the end of "
                        "the file (%zu bytes): truncated?", i, (unsigned long long)s.offset,
                        (unsigned long long)s.filesz, e->size);
        if (s.vaddr + s.filesz < s.vaddr)
            return fail(err, cap, "loadable segment %u wraps around the address space", i);
        e->segs[e->nsegs++] = s;
    }
    if (e->nsegs == 0)
        return fail(err, cap, "no loadable segments");
    return GT_OK;
}

/* Appends the function symbols of one symbol table; grows e->syms. */
static int read_symbols(gt_elf *e, uint64_t off, uint64_t size, uint64_t entsize, uint64_t stroff,
                        uint64_t strsz, int dynamic, size_t *cap_syms, char *err, size_t cap)
{
    if (entsize < SYM_SIZE)
        return fail(err, cap, "symbol entry size %llu is smaller than %d", (unsigned long long)entsize, SYM_SIZE);
    if (!in_file(e, off, size))
        return fail(err, cap, "symbol table extends past the end of the file: truncated?");
    if (!in_file(e, stroff, strsz))
        return fail(err, cap, "string table of the symbol table extends past the end of the file: truncated?");
    uint64_t n = size / entsize;
    for (uint64_t i = 1; i < n; i++) { /* entry 0 is the reserved null symbol */
        const uint8_t *s = e->data + off + i * entsize;
        uint8_t info = s[4], type = info & 0xf, bind = info >> 4;
        uint16_t shndx = rd16(s + 6);
        uint64_t value = rd64(s + 8), sz = rd64(s + 16);
        if ((type != STT_FUNC && type != STT_GNU_IFUNC) || shndx == SHN_UNDEF || value == 0)
            continue;
        if (shndx >= SHN_LORESERVE && shndx != SHN_XINDEX)
            continue; /* absolute or common: not code */
        const char *name = str_at(e, stroff, strsz, rd32(s));
        if (!name)
            return fail(err, cap, "symbol %llu has a name outside its string table", (unsigned long long)i);
        if (!name[0])
            continue;
        if (e->nsyms == *cap_syms) {
            size_t ncap = *cap_syms ? 2 * *cap_syms : 256;
            gt_elf_symbol *grown = gt_malloc(ncap * sizeof *grown);
            if (!grown)
                return GT_ENOMEM;
            if (e->nsyms)
                memcpy(grown, e->syms, e->nsyms * sizeof *grown);
            gt_free(e->syms);
            e->syms = grown;
            *cap_syms = ncap;
        }
        e->syms[e->nsyms++] = (gt_elf_symbol){value, sz, name, bind != STB_LOCAL, (uint8_t)dynamic};
    }
    return GT_OK;
}

/* Reads one RELA section whose symbols come from the table at section index `link`. */
static int read_relocs(gt_elf *e, const uint8_t *shdrs, uint64_t shentsize, uint64_t shnum, uint64_t off,
                       uint64_t size, uint64_t entsize, uint64_t link, size_t *cap_rel, char *err, size_t cap)
{
    if (entsize < RELA_SIZE)
        return fail(err, cap, "relocation entry size %llu is smaller than %d", (unsigned long long)entsize, RELA_SIZE);
    if (!in_file(e, off, size))
        return fail(err, cap, "relocation section extends past the end of the file: truncated?");
    uint64_t symoff = 0, symsize = 0, symentsize = SYM_SIZE, stroff = 0, strsz = 0;
    int have_syms = 0;
    if (link != 0 && link < shnum) {
        const uint8_t *sh = shdrs + link * shentsize;
        uint32_t type = rd32(sh + 4);
        uint64_t strlink = rd32(sh + 40);
        if ((type == SHT_DYNSYM || type == SHT_SYMTAB) && strlink < shnum) {
            const uint8_t *st = shdrs + strlink * shentsize;
            symoff = rd64(sh + 24), symsize = rd64(sh + 32), symentsize = rd64(sh + 56);
            stroff = rd64(st + 24), strsz = rd64(st + 32);
            have_syms = symentsize >= SYM_SIZE && in_file(e, symoff, symsize) && in_file(e, stroff, strsz);
        }
    }
    uint64_t n = size / entsize;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *r = e->data + off + i * entsize;
        uint64_t offset = rd64(r), info = rd64(r + 8), addend = rd64(r + 16);
        uint32_t type = (uint32_t)info, symi = (uint32_t)(info >> 32);
        int jump = type == R_X86_64_JUMP_SLOT || type == R_AARCH64_JUMP_SLOT;
        int pointer = jump || type == R_X86_64_GLOB_DAT || type == R_X86_64_64 ||
                      type == R_AARCH64_GLOB_DAT || type == R_AARCH64_ABS64;
        if (e->machine == GT_EM_X86_64 && type > 255)
            pointer = 0;
        if (e->machine == GT_EM_AARCH64 && type < 256)
            pointer = 0;
        if (!pointer || symi == 0)
            continue;
        if (!have_syms || symi >= symsize / symentsize)
            return fail(err, cap, "relocation %llu names symbol %u outside its symbol table",
                        (unsigned long long)i, symi);
        const uint8_t *s = e->data + symoff + (uint64_t)symi * symentsize;
        const char *name = str_at(e, stroff, strsz, rd32(s));
        if (!name)
            return fail(err, cap, "relocation %llu: symbol %u has a name outside its string table",
                        (unsigned long long)i, symi);
        uint16_t shndx = rd16(s + 6);
        int defined = shndx != SHN_UNDEF;
        if (e->nrelocs == *cap_rel) {
            size_t ncap = *cap_rel ? 2 * *cap_rel : 128;
            gt_elf_reloc *grown = gt_malloc(ncap * sizeof *grown);
            if (!grown)
                return GT_ENOMEM;
            if (e->nrelocs)
                memcpy(grown, e->relocs, e->nrelocs * sizeof *grown);
            gt_free(e->relocs);
            e->relocs = grown;
            *cap_rel = ncap;
        }
        e->relocs[e->nrelocs++] = (gt_elf_reloc){offset, name, defined, defined ? rd64(s + 8) : addend, jump};
    }
    return GT_OK;
}

/* Reads the section headers: names, PLT ranges, symbol tables and relocations. */
static int read_sections(gt_elf *e, char *err, size_t cap)
{
    const uint8_t *h = e->data;
    uint64_t shoff = rd64(h + 40), shentsize = rd16(h + 58), shnum = rd16(h + 60), shstrndx = rd16(h + 62);
    if (shoff == 0)
        return fail(err, cap, "no section headers (the object was stripped of them, e.g. by sstrip): "
                    "the analysis needs at least .dynsym and the PLT sections");
    if (shentsize < SHDR_SIZE)
        return fail(err, cap, "section header entry size %llu is smaller than %d", (unsigned long long)shentsize, SHDR_SIZE);
    if (!in_file(e, shoff, shentsize))
        return fail(err, cap, "section headers (offset %llu) lie past the end of the file (%zu bytes): truncated?",
                    (unsigned long long)shoff, e->size);
    if (shnum == 0) /* extended numbering: the count is in section 0 */
        shnum = rd64(h + shoff + 32);
    if (shstrndx == SHN_XINDEX)
        shstrndx = rd32(h + shoff + 40);
    if (shnum == 0 || shnum > MAX_SECTIONS)
        return fail(err, cap, "implausible section count %llu", (unsigned long long)shnum);
    if (!in_file(e, shoff, shnum * shentsize))
        return fail(err, cap, "section headers (%llu entries at offset %llu) extend past the end of the file "
                    "(%zu bytes): truncated?", (unsigned long long)shnum, (unsigned long long)shoff, e->size);
    const uint8_t *shdrs = h + shoff;
    uint64_t nameoff = 0, namesz = 0;
    if (shstrndx != 0 && shstrndx < shnum) {
        nameoff = rd64(shdrs + shstrndx * shentsize + 24);
        namesz = rd64(shdrs + shstrndx * shentsize + 32);
        if (!in_file(e, nameoff, namesz))
            return fail(err, cap, "section name table extends past the end of the file: truncated?");
    }
    e->secs = gt_calloc((size_t)shnum, sizeof *e->secs);
    if (!e->secs)
        return GT_ENOMEM;
    e->nsecs = (size_t)shnum;
    size_t cap_syms = 0, cap_rel = 0;
    int status = GT_OK;
    /* symbol tables first, relocations second: the pass order does not matter for relocations
     * (they read their table directly) but keeps symtab before dynsym in e->syms */
    for (int pass = 0; pass < 2 && status == GT_OK; pass++) {
        for (uint64_t i = 0; i < shnum && status == GT_OK; i++) {
            const uint8_t *sh = shdrs + i * shentsize;
            uint32_t type = rd32(sh + 4);
            uint64_t flags = rd64(sh + 8), addr = rd64(sh + 16), off = rd64(sh + 24), size = rd64(sh + 32);
            uint64_t link = rd32(sh + 40), entsize = rd64(sh + 56);
            if (pass == 0) {
                const char *name = namesz ? str_at(e, nameoff, namesz, rd32(sh)) : "";
                if (!name)
                    return fail(err, cap, "section %llu has a name outside the section name table", (unsigned long long)i);
                section *s = &e->secs[i];
                s->name = name;
                s->addr = addr;
                s->size = size;
                s->alloc = (flags & SHF_ALLOC) != 0;
                s->plt = !strcmp(name, ".plt") || !strcmp(name, ".plt.sec") || !strcmp(name, ".plt.got") ||
                         !strcmp(name, ".iplt");
                if (s->plt && size && e->nplt < 8 && addr + size > addr) {
                    e->plt_lo[e->nplt] = addr;
                    e->plt_hi[e->nplt] = addr + size;
                    e->nplt++;
                }
                if (type == SHT_NOBITS)
                    continue;
                if (!strcmp(name, ".debug_line") && in_file(e, off, size)) {
                    e->dl_off = off;
                    e->dl_size = size;
                } else if (!strcmp(name, ".debug_line_str") && in_file(e, off, size)) {
                    e->dls_off = off;
                    e->dls_size = size;
                } else if (!strcmp(name, ".debug_str") && in_file(e, off, size)) {
                    e->ds_off = off;
                    e->ds_size = size;
                }
                if ((type == SHT_SYMTAB || type == SHT_DYNSYM)) {
                    if (link >= shnum)
                        return fail(err, cap, "symbol table section %llu links to string table %llu of %llu sections",
                                    (unsigned long long)i, (unsigned long long)link, (unsigned long long)shnum);
                    const uint8_t *st = shdrs + link * shentsize;
                    status = read_symbols(e, off, size, entsize, rd64(st + 24), rd64(st + 32), type == SHT_DYNSYM,
                                          &cap_syms, err, cap);
                }
            } else if (type == SHT_RELA && (flags & SHF_ALLOC)) {
                status = read_relocs(e, shdrs, shentsize, shnum, off, size, entsize, link, &cap_rel, err, cap);
            }
        }
    }
    return status;
}

/* Sorts and de-duplicates the symbols; builds the by-name index. */
static int index_symbols(gt_elf *e)
{
    if (e->nsyms == 0)
        return GT_OK;
    qsort(e->syms, e->nsyms, sizeof *e->syms, cmp_sym_addr);
    size_t w = 0;
    for (size_t r = 0; r < e->nsyms; r++) {
        if (w > 0 && e->syms[w - 1].value == e->syms[r].value && !strcmp(e->syms[w - 1].name, e->syms[r].name))
            continue; /* the same function in .symtab and .dynsym */
        e->syms[w++] = e->syms[r];
    }
    e->nsyms = w;
    e->by_name = gt_malloc(e->nsyms * sizeof *e->by_name);
    if (!e->by_name)
        return GT_ENOMEM;
    for (size_t i = 0; i < e->nsyms; i++)
        e->by_name[i] = &e->syms[i];
    qsort(e->by_name, e->nsyms, sizeof *e->by_name, cmp_sym_name);
    return GT_OK;
}

/* ---------- .debug_line (DWARF 2 to 5) ----------
 * A damaged line table is not an error of the object: the reader stops at the first unit it
 * cannot read and keeps the rows read so far. */

typedef struct cursor {
    const uint8_t *p, *end;
    int bad;
} cursor;

static uint64_t cur_bytes(cursor *c, size_t n)
{
    if (c->bad || (size_t)(c->end - c->p) < n) {
        c->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)c->p[i] << (8 * i);
    c->p += n;
    return v;
}

static uint64_t cur_uleb(cursor *c)
{
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        if (c->bad || c->p >= c->end || shift > 63) {
            c->bad = 1;
            return 0;
        }
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
}

static int64_t cur_sleb(cursor *c)
{
    uint64_t v = 0;
    int shift = 0;
    uint8_t b;
    do {
        if (c->bad || c->p >= c->end || shift > 63) {
            c->bad = 1;
            return 0;
        }
        b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    if (shift < 64 && (b & 0x40))
        v |= ~(uint64_t)0 << shift;
    return (int64_t)v;
}

static const char *cur_cstr(cursor *c)
{
    if (c->bad)
        return NULL;
    const uint8_t *z = memchr(c->p, '\0', (size_t)(c->end - c->p));
    if (!z) {
        c->bad = 1;
        return NULL;
    }
    const char *s = (const char *)c->p;
    c->p = z + 1;
    return s;
}

/* Reads one attribute of a DWARF 5 directory/file entry; *str gets a string form's value. */
static void read_form(gt_elf *e, cursor *c, uint64_t form, int off64, const char **str, uint64_t *num)
{
    *str = NULL;
    *num = 0;
    switch (form) {
    case 0x08: /* DW_FORM_string */
        *str = cur_cstr(c);
        break;
    case 0x1f: /* DW_FORM_line_strp */
    case 0x0e: { /* DW_FORM_strp */
        uint64_t o = cur_bytes(c, off64 ? 8 : 4);
        uint64_t base = form == 0x1f ? e->dls_off : e->ds_off, size = form == 0x1f ? e->dls_size : e->ds_size;
        if (!c->bad)
            *str = str_at(e, base, size, o);
        break;
    }
    case 0x0f: *num = cur_uleb(c); break;      /* DW_FORM_udata */
    case 0x0b: *num = cur_bytes(c, 1); break;  /* DW_FORM_data1 */
    case 0x05: *num = cur_bytes(c, 2); break;  /* DW_FORM_data2 */
    case 0x06: *num = cur_bytes(c, 4); break;  /* DW_FORM_data4 */
    case 0x07: *num = cur_bytes(c, 8); break;  /* DW_FORM_data8 */
    case 0x1e: cur_bytes(c, 8); cur_bytes(c, 8); break; /* DW_FORM_data16 (MD5) */
    case 0x09: { /* DW_FORM_block */
        uint64_t n = cur_uleb(c);
        if (!c->bad && n <= (uint64_t)(c->end - c->p))
            c->p += n;
        else
            c->bad = 1;
        break;
    }
    default:
        c->bad = 1;
    }
}

static int push_row(gt_elf *e, size_t *cap, uint64_t addr, uint32_t file, uint32_t line)
{
    if (e->nrows == *cap) {
        size_t ncap = *cap ? 2 * *cap : 256;
        line_row *g = gt_malloc(ncap * sizeof *g);
        if (!g)
            return GT_ENOMEM;
        if (e->nrows)
            memcpy(g, e->rows, e->nrows * sizeof *g);
        gt_free(e->rows);
        e->rows = g;
        *cap = ncap;
    }
    e->rows[e->nrows++] = (line_row){addr, file, line};
    return GT_OK;
}

static int push_file(gt_elf *e, size_t *cap, const char *dir, const char *name)
{
    if (e->nfiles == *cap) {
        size_t ncap = *cap ? 2 * *cap : 64;
        line_file *g = gt_malloc(ncap * sizeof *g);
        if (!g)
            return GT_ENOMEM;
        if (e->nfiles)
            memcpy(g, e->files, e->nfiles * sizeof *g);
        gt_free(e->files);
        e->files = g;
        *cap = ncap;
    }
    e->files[e->nfiles++] = (line_file){dir ? dir : "", name ? name : "?"};
    return GT_OK;
}

#define MAX_UNIT_DIRS 1024

/* Reads one line-number program unit at c (which it advances past the unit). */
static int read_line_unit(gt_elf *e, cursor *c, size_t *cap_rows, size_t *cap_files)
{
    uint64_t unit_len = cur_bytes(c, 4);
    int off64 = 0;
    if (unit_len == 0xffffffffu) {
        unit_len = cur_bytes(c, 8);
        off64 = 1;
    }
    if (c->bad || unit_len > (uint64_t)(c->end - c->p)) {
        c->bad = 1;
        return GT_OK;
    }
    cursor u = {c->p, c->p + unit_len, 0};
    c->p += unit_len;
    uint16_t version = (uint16_t)cur_bytes(&u, 2);
    if (version < 2 || version > 5) {
        return GT_OK;
    }
    uint64_t addr_size = 8;
    if (version >= 5) {
        addr_size = cur_bytes(&u, 1);
        cur_bytes(&u, 1); /* segment selector size */
    }
    uint64_t header_len = cur_bytes(&u, off64 ? 8 : 4);
    if (u.bad || header_len > (uint64_t)(u.end - u.p))
        return GT_OK;
    const uint8_t *program = u.p + header_len;
    uint64_t min_inst = cur_bytes(&u, 1);
    if (version >= 4)
        cur_bytes(&u, 1); /* maximum operations per instruction */
    uint64_t default_is_stmt = cur_bytes(&u, 1);
    (void)default_is_stmt;
    int8_t line_base = (int8_t)cur_bytes(&u, 1);
    uint64_t line_range = cur_bytes(&u, 1);
    uint64_t opcode_base = cur_bytes(&u, 1);
    uint8_t std_len[256] = {0};
    for (uint64_t i = 1; i < opcode_base && !u.bad; i++)
        std_len[i] = (uint8_t)cur_bytes(&u, 1);
    if (u.bad || line_range == 0 || opcode_base == 0 || (addr_size != 8 && addr_size != 4))
        return GT_OK;
    /* directories and files of this unit; rows index the object-wide file list */
    const char *dirs[MAX_UNIT_DIRS];
    size_t ndirs = 0;
    size_t file_base = e->nfiles;
    int status = GT_OK;
    if (version >= 5) {
        for (int table = 0; table < 2 && !u.bad; table++) {
            uint64_t nfmt = cur_bytes(&u, 1), fmt[2 * 16];
            if (nfmt > 16) {
                u.bad = 1;
                break;
            }
            for (uint64_t i = 0; i < nfmt; i++) {
                fmt[2 * i] = cur_uleb(&u);
                fmt[2 * i + 1] = cur_uleb(&u);
            }
            uint64_t count = cur_uleb(&u);
            for (uint64_t k = 0; k < count && !u.bad; k++) {
                const char *name = NULL;
                uint64_t dir_index = 0;
                for (uint64_t i = 0; i < nfmt && !u.bad; i++) {
                    const char *sv;
                    uint64_t nv;
                    read_form(e, &u, fmt[2 * i + 1], off64, &sv, &nv);
                    if (fmt[2 * i] == 1) /* DW_LNCT_path */
                        name = sv;
                    else if (fmt[2 * i] == 2) /* DW_LNCT_directory_index */
                        dir_index = nv;
                }
                if (u.bad)
                    break;
                if (table == 0) {
                    if (ndirs < MAX_UNIT_DIRS)
                        dirs[ndirs++] = name ? name : "";
                } else if ((status = push_file(e, cap_files, dir_index < ndirs ? dirs[dir_index] : "", name)) != GT_OK) {
                    return status;
                }
            }
        }
    } else {
        dirs[ndirs++] = ""; /* index 0: the compilation directory, not named here */
        for (;;) {
            const char *d = cur_cstr(&u);
            if (!d || !*d)
                break;
            if (ndirs < MAX_UNIT_DIRS)
                dirs[ndirs++] = d;
        }
        /* DWARF 2-4 number files from 1: a placeholder keeps file_base + index right */
        if ((status = push_file(e, cap_files, "", "?")) != GT_OK)
            return status;
        for (;;) {
            const char *f = cur_cstr(&u);
            if (!f || !*f)
                break;
            uint64_t dir_index = cur_uleb(&u);
            cur_uleb(&u);
            cur_uleb(&u);
            if ((status = push_file(e, cap_files, dir_index < ndirs ? dirs[dir_index] : "", f)) != GT_OK)
                return status;
        }
    }
    if (u.bad)
        return GT_OK;
    size_t nunit_files = e->nfiles - file_base;
    /* the state machine */
    cursor pc = {program, u.end, 0};
    uint64_t addr = 0, file = 1, line = 1;
    while (!pc.bad && pc.p < pc.end) {
        uint8_t op = (uint8_t)cur_bytes(&pc, 1);
        int emit = 0, end_seq = 0;
        if (op >= opcode_base) {
            uint64_t adj = op - opcode_base;
            addr += (adj / line_range) * min_inst;
            line += (uint64_t)((int64_t)line_base + (int64_t)(adj % line_range));
            emit = 1;
        } else if (op == 0) {
            uint64_t len = cur_uleb(&pc);
            if (pc.bad || len == 0 || len > (uint64_t)(pc.end - pc.p))
                break;
            const uint8_t *next = pc.p + len;
            uint8_t sub = (uint8_t)cur_bytes(&pc, 1);
            if (sub == 1) {
                emit = end_seq = 1;
            } else if (sub == 2) {
                addr = cur_bytes(&pc, (size_t)addr_size);
            }
            pc.p = next;
        } else {
            switch (op) {
            case 1: emit = 1; break;
            case 2: addr += cur_uleb(&pc) * min_inst; break;
            case 3: line += (uint64_t)cur_sleb(&pc); break;
            case 4: file = cur_uleb(&pc); break;
            case 8: addr += ((255 - opcode_base) / line_range) * min_inst; break;
            case 9: addr += cur_bytes(&pc, 2); break;
            default:
                for (uint8_t i = 0; i < std_len[op] && !pc.bad; i++)
                    cur_uleb(&pc);
            }
        }
        if (emit && !pc.bad) {
            uint32_t f = file < nunit_files ? (uint32_t)(file_base + file) : UINT32_MAX;
            uint32_t l = end_seq ? 0 : (line > UINT32_MAX ? UINT32_MAX : (uint32_t)line);
            if ((status = push_row(e, cap_rows, addr, f, l)) != GT_OK)
                return status;
        }
        if (end_seq) {
            addr = 0;
            file = 1;
            line = 1;
        }
    }
    return GT_OK;
}

static int cmp_row(const void *a, const void *b)
{
    const line_row *x = a, *y = b;
    if (x->addr != y->addr)
        return x->addr < y->addr ? -1 : 1;
    /* at one address an end-of-sequence row sorts first: the next sequence's row wins */
    return (x->line != 0) - (y->line != 0);
}

static int read_debug_line(gt_elf *e)
{
    if (!e->dl_size)
        return GT_OK;
    cursor c = {e->data + e->dl_off, e->data + e->dl_off + e->dl_size, 0};
    size_t cap_rows = 0, cap_files = 0;
    while (!c.bad && c.p < c.end) {
        int status = read_line_unit(e, &c, &cap_rows, &cap_files);
        if (status != GT_OK)
            return status;
    }
    if (e->nrows > 1)
        qsort(e->rows, e->nrows, sizeof *e->rows, cmp_row);
    return GT_OK;
}

int gt_elf_line(const gt_elf *e, uint64_t vaddr, const char **dir, const char **file, unsigned *line)
{
    size_t lo = 0, hi = e->nrows;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->rows[mid].addr <= vaddr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return GT_EINVAL;
    const line_row *r = &e->rows[lo - 1];
    if (r->line == 0 || r->file >= e->nfiles)
        return GT_EINVAL;
    *dir = e->files[r->file].dir;
    *file = e->files[r->file].name;
    *line = r->line;
    return GT_OK;
}

static int parse(gt_elf *e, char *err, size_t cap)
{
    const uint8_t *h = e->data;
    if (e->size < 4 || memcmp(h, "\x7f" "ELF", 4) != 0)
        return fail(err, cap, "not an ELF file (bad magic)");
    if (e->size < EHDR_SIZE)
        return fail(err, cap, "ELF header truncated (%zu bytes)", e->size);
    if (h[4] != 2)
        return fail(err, cap, "32-bit ELF is not supported (x86-64 and aarch64 objects only)");
    if (h[5] != 1)
        return fail(err, cap, "big-endian ELF is not supported");
    uint16_t type = rd16(h + 16);
    if (type != 2 && type != 3)
        return fail(err, cap, "ELF type %u is not an executable or shared object", type);
    e->machine = rd16(h + 18);
    int status = read_segments(e, err, cap);
    if (status == GT_OK)
        status = read_sections(e, err, cap);
    if (status == GT_OK)
        status = index_symbols(e);
    if (status == GT_OK && e->nrelocs > 1)
        qsort(e->relocs, e->nrelocs, sizeof *e->relocs, cmp_reloc);
    if (status == GT_OK)
        status = read_debug_line(e);
    return status;
}

void gt_elf_close(gt_elf *e)
{
    if (!e)
        return;
    if (e->mapping)
        munmap(e->mapping, e->size);
    gt_free(e->secs);
    gt_free(e->syms);
    gt_free(e->by_name);
    gt_free(e->relocs);
    gt_free(e->rows);
    gt_free(e->files);
    gt_free(e);
}

static int open_common(const void *data, size_t size, void *mapping, gt_elf **out, char *err, size_t cap)
{
    gt_elf *e = gt_calloc(1, sizeof *e);
    if (!e) {
        if (mapping)
            munmap(mapping, size);
        return GT_ENOMEM;
    }
    e->data = data;
    e->size = size;
    e->mapping = mapping;
    int status = parse(e, err, cap);
    if (status != GT_OK) {
        if (status == GT_ENOMEM && err && cap)
            snprintf(err, cap, "out of memory while reading the object");
        gt_elf_close(e);
        return status;
    }
    *out = e;
    return GT_OK;
}

int gt_elf_open_mem(const void *data, size_t size, gt_elf **out, char *err, size_t cap)
{
    if (!out || (!data && size))
        return GT_EINVAL;
    *out = NULL;
    if (err && cap)
        err[0] = '\0';
    return open_common(data ? data : "", size, NULL, out, err, cap);
}

int gt_elf_open_file(const char *path, gt_elf **out, char *err, size_t cap)
{
    if (!path || !out)
        return GT_EINVAL;
    *out = NULL;
    if (err && cap)
        err[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (err && cap)
            snprintf(err, cap, "cannot open %s: %s", path, strerror(errno));
        return GT_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int saved = errno;
        close(fd);
        if (err && cap)
            snprintf(err, cap, "%s is not a regular file", path);
        errno = saved;
        return GT_EIO;
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return fail(err, cap, "%s is empty", path);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int saved = errno;
    close(fd);
    if (map == MAP_FAILED) {
        if (err && cap)
            snprintf(err, cap, "cannot map %s: %s", path, strerror(saved));
        errno = saved;
        return GT_EIO;
    }
    return open_common(map, size, map, out, err, cap);
}

int gt_elf_machine(const gt_elf *e) { return e->machine; }

uint64_t gt_elf_base_vaddr(const gt_elf *e)
{
    uint64_t lo = UINT64_MAX;
    for (size_t i = 0; i < e->nsegs; i++)
        if (e->segs[i].vaddr < lo)
            lo = e->segs[i].vaddr;
    return lo & ~(uint64_t)0xfff;
}

int gt_elf_code(const gt_elf *e, uint64_t vaddr, const uint8_t **code, size_t *avail)
{
    for (size_t i = 0; i < e->nsegs; i++) {
        const segment *s = &e->segs[i];
        if (s->exec && vaddr >= s->vaddr && vaddr - s->vaddr < s->filesz) {
            *code = e->data + s->offset + (vaddr - s->vaddr);
            *avail = (size_t)(s->filesz - (vaddr - s->vaddr));
            return GT_OK;
        }
    }
    return GT_EINVAL;
}

int gt_elf_read(const gt_elf *e, uint64_t vaddr, void *out, size_t n)
{
    for (size_t i = 0; i < e->nsegs; i++) {
        const segment *s = &e->segs[i];
        if (vaddr >= s->vaddr && vaddr - s->vaddr <= s->filesz && n <= s->filesz - (vaddr - s->vaddr)) {
            memcpy(out, e->data + s->offset + (vaddr - s->vaddr), n);
            return GT_OK;
        }
    }
    return GT_EINVAL;
}

/* Index of the first symbol with value > vaddr. */
static size_t upper_bound(const gt_elf *e, uint64_t vaddr)
{
    size_t lo = 0, hi = e->nsyms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->syms[mid].value <= vaddr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const gt_elf_symbol *gt_elf_function_at(const gt_elf *e, uint64_t vaddr)
{
    size_t i = upper_bound(e, vaddr);
    if (i == 0 || e->syms[i - 1].value != vaddr)
        return NULL;
    /* the first of the run at this address sorts globals first */
    while (i > 1 && e->syms[i - 2].value == vaddr)
        i--;
    return &e->syms[i - 1];
}

const gt_elf_symbol *gt_elf_symbolize(const gt_elf *e, uint64_t vaddr, uint64_t *offset)
{
    size_t i = upper_bound(e, vaddr);
    const gt_elf_symbol *best = NULL;
    /* walk down: the closest symbol whose size covers vaddr; else the closest one at all */
    for (size_t k = i; k > 0 && i - k < 64; k--) {
        const gt_elf_symbol *s = &e->syms[k - 1];
        if (s->size && vaddr - s->value < s->size) {
            best = s;
            break;
        }
        if (!best && s->size == 0)
            best = s;
    }
    if (!best && i > 0) {
        /* nothing covers it: name it after the closest symbol in the same segment */
        const gt_elf_symbol *s = &e->syms[i - 1];
        for (size_t j = 0; j < e->nsegs; j++) {
            const segment *g = &e->segs[j];
            if (g->exec && s->value >= g->vaddr && vaddr - g->vaddr < g->filesz && s->value - g->vaddr < g->filesz)
                best = s;
        }
    }
    if (best) {
        while (best > e->syms && best[-1].value == best->value)
            best--;
        if (offset)
            *offset = vaddr - best->value;
    }
    return best;
}

const gt_elf_symbol *gt_elf_lookup(const gt_elf *e, const char *name)
{
    size_t lo = 0, hi = e->nsyms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(e->by_name[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < e->nsyms && !strcmp(e->by_name[lo]->name, name))
        return e->by_name[lo];
    return NULL;
}

const gt_elf_reloc *gt_elf_reloc_at(const gt_elf *e, uint64_t vaddr)
{
    size_t lo = 0, hi = e->nrelocs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->relocs[mid].offset < vaddr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < e->nrelocs && e->relocs[lo].offset == vaddr ? &e->relocs[lo] : NULL;
}

const char *gt_elf_section_name(const gt_elf *e, uint64_t vaddr)
{
    for (size_t i = 0; i < e->nsecs; i++) {
        const section *s = &e->secs[i];
        if (s->alloc && s->size && vaddr >= s->addr && vaddr - s->addr < s->size)
            return s->name;
    }
    return NULL;
}

int gt_elf_in_plt(const gt_elf *e, uint64_t vaddr)
{
    for (size_t i = 0; i < e->nplt; i++)
        if (vaddr >= e->plt_lo[i] && vaddr < e->plt_hi[i])
            return 1;
    return 0;
}

size_t gt_elf_symbol_count(const gt_elf *e) { return e->nsyms; }
size_t gt_elf_reloc_count(const gt_elf *e) { return e->nrelocs; }

const gt_elf_symbol *gt_elf_symbol_get(const gt_elf *e, size_t i) { return i < e->nsyms ? &e->syms[i] : NULL; }
