/* fuzz_elf.c: a seeded mutation fuzzer for the ELF reader and the analysis (tests/test_dispatch_fuzz.py
 * builds it through tests/_cbuild.py, with AddressSanitizer and UndefinedBehaviorSanitizer where
 * available).
 *
 * usage: fuzz_elf SEED ITERATIONS CAPSTONE_PATH|- FILE...
 * Each iteration picks a seed file, truncates it or flips/overwrites bytes (biased towards the ELF,
 * program and section headers and the tables they point to), parses the result from memory and,
 * when that succeeds, runs every query of elf_reader.h and the analysis (statically) from a few function
 * symbols. A crash or a sanitizer report fails the run; parse errors are the expected outcome. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "elf_reader.h"

static uint64_t rng_state;

static uint64_t next_rand(void)
{
    /* xorshift64*: deterministic for a given seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static int read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)n);
    if (!*data || fread(*data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        return -1;
    }
    fclose(f);
    *size = (size_t)n;
    return 0;
}

/* Overwrites a field-sized run at `off` with an interesting value. */
static void poke(uint8_t *buf, size_t size, size_t off)
{
    static const uint64_t values[] = {0, 1, 0x7f, 0x80, 0xff, 0xffff, 0xffffffffull, 0x7fffffffffffffffull,
                                      0xffffffffffffffffull, 64, 56, 24};
    uint64_t v = values[next_rand() % (sizeof values / sizeof values[0])];
    size_t width = (size_t)1 << (next_rand() % 4);
    for (size_t k = 0; k < width && off + k < size; k++)
        buf[off + k] = (uint8_t)(v >> (8 * k));
}

static void mutate(uint8_t *buf, size_t *size)
{
    int n = 1 + (int)(next_rand() % 8);
    for (int i = 0; i < n; i++) {
        size_t off;
        switch (next_rand() % 5) {
        case 0: /* the ELF header */
            off = next_rand() % 64;
            break;
        case 1: /* near the program headers */
            off = 64 + next_rand() % 512;
            break;
        case 2: /* the section headers at the end of a typical file */
            off = *size > 4096 ? *size - 1 - next_rand() % 4096 : next_rand() % *size;
            break;
        default:
            off = next_rand() % *size;
        }
        if (off >= *size)
            continue;
        if (next_rand() % 2)
            buf[off] ^= (uint8_t)(1u << (next_rand() % 8));
        else
            poke(buf, *size, off);
    }
    if (next_rand() % 4 == 0) /* truncate */
        *size = next_rand() % *size + 1;
}

static void exercise(gt_elf *e, gt_cs *cs)
{
    size_t n = gt_elf_symbol_count(e);
    volatile uint64_t sink = 0;
    const char *noreturn[] = {"abort", "exit"};
    gt_dispatch_options opt = {4, noreturn, 2};
    int analysed = 0;
    gt_dispatch_cache *cache = NULL;
    if (cs && gt_dispatch_cache_new(&cache) != GT_OK)
        return;
    sink += gt_elf_base_vaddr(e) + (uint64_t)gt_elf_machine(e) + gt_elf_reloc_count(e);
    for (size_t i = 0; i < n; i++) {
        const gt_elf_symbol *s = gt_elf_symbol_get(e, i);
        uint64_t off = 0;
        sink += strlen(s->name);
        sink += gt_elf_function_at(e, s->value) != NULL;
        sink += gt_elf_symbolize(e, s->value + 3, &off) != NULL;
        sink += gt_elf_lookup(e, s->name) != NULL;
        sink += gt_elf_in_plt(e, s->value);
        const char *sec = gt_elf_section_name(e, s->value);
        sink += sec ? strlen(sec) : 0;
        const uint8_t *code;
        size_t avail;
        if (gt_elf_code(e, s->value, &code, &avail) == GT_OK && avail)
            sink += code[0] + code[avail - 1];
        uint8_t tmp[8];
        sink += gt_elf_read(e, s->value, tmp, sizeof tmp) == GT_OK;
        sink += gt_elf_reloc_at(e, s->value) != NULL;
        const char *dir, *file;
        unsigned line;
        if (gt_elf_line(e, s->value + 1, &dir, &file, &line) == GT_OK)
            sink += strlen(dir) + strlen(file) + line;
        if (cs && analysed < 3 && (next_rand() % 4 == 0)) {
            gt_dispatch_module mod = {NULL, e};
            gt_dispatch_result res;
            char err[256];
            /* the shared cache replays summaries from the earlier analyses of this object */
            if (gt_dispatch_analyse(cs, &mod, 1, 0, s->value, &opt, cache, &res, err, sizeof err) == GT_OK) {
                for (size_t k = 0; k < res.n_events; k++)
                    sink += strlen(res.events[k].text);
                gt_dispatch_result_free(&res);
            }
            analysed++;
        }
    }
    gt_dispatch_cache_free(cache);
    (void)sink;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s SEED ITERATIONS CAPSTONE_PATH|- FILE...\n", argv[0]);
        return 2;
    }
    rng_state = strtoull(argv[1], NULL, 10) * 2654435761u + 1;
    long iterations = strtol(argv[2], NULL, 10);
    gt_cs *cs = NULL;
    char err[512];
    if (strcmp(argv[3], "-") != 0 && gt_cs_load(argv[3], &cs, err, sizeof err) != GT_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int nfiles = argc - 4;
    uint8_t **seeds = calloc((size_t)nfiles, sizeof *seeds);
    size_t *sizes = calloc((size_t)nfiles, sizeof *sizes);
    for (int i = 0; i < nfiles; i++)
        if (read_file(argv[4 + i], &seeds[i], &sizes[i]) != 0) {
            fprintf(stderr, "cannot read %s\n", argv[4 + i]);
            for (int k = 0; k <= i; k++)
                free(seeds[k]);
            free(seeds);
            free(sizes);
            gt_cs_unload(cs);
            return 2;
        }
    long parsed = 0, rejected = 0;
    for (long it = 0; it < iterations; it++) {
        int f = (int)(next_rand() % (uint64_t)nfiles);
        size_t size = sizes[f];
        /* an exactly sized heap copy, so that ASan sees any read past the end */
        uint8_t *buf = malloc(size);
        memcpy(buf, seeds[f], size);
        if (it > 0)
            mutate(buf, &size);
        uint8_t *exact = malloc(size);
        memcpy(exact, buf, size);
        free(buf);
        gt_elf *e = NULL;
        if (gt_elf_open_mem(exact, size, &e, err, sizeof err) == GT_OK) {
            parsed++;
            exercise(e, cs);
            gt_elf_close(e);
        } else {
            rejected++;
            if (!err[0]) {
                fprintf(stderr, "iteration %ld: rejected without a message\n", it);
                return 1;
            }
        }
        free(exact);
    }
    printf("iterations %ld parsed %ld rejected %ld\n", iterations, parsed, rejected);
    for (int i = 0; i < nfiles; i++)
        free(seeds[i]);
    free(seeds);
    free(sizes);
    gt_cs_unload(cs);
    return 0;
}
