/* _dispatch.c: the CPython glue of the dispatch checks (csrc/core/elf_reader.c, disasm.c, dispatch.h).
 *
 * Types: Capstone (a loaded libcapstone), Elf (a parsed object file). Functions: analyse (the opt
 * check's machine-code analysis, run with the GIL released), locate (runtime address -> object
 * file and virtual address) and call (the guarded call of the call check). Policy, such as which
 * names count as allocation, lives in gradtest/dispatch/ (_policy.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "dispatch.h"
#include "gt_glue.h"
#include "guard.h"

/* ---------- Capstone ---------- */

typedef struct {
    PyObject_HEAD
    gt_cs *cs;
} CapstoneObject;

static int Capstone_init(CapstoneObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *path_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:Capstone", kwlist, PyUnicode_FSConverter, &path_obj))
        return -1;
    if (self->cs) {
        gt_cs_unload(self->cs);
        self->cs = NULL;
    }
    char err[512] = "";
    int status = gt_cs_load(PyBytes_AS_STRING(path_obj), &self->cs, err, sizeof err);
    Py_DECREF(path_obj);
    if (status != GT_OK) {
        gt_raise_message(status, err);
        return -1;
    }
    return 0;
}

static void Capstone_dealloc(CapstoneObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    gt_cs_unload(self->cs);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot capstone_slots[] = {
    {Py_tp_init, Capstone_init},
    {Py_tp_dealloc, Capstone_dealloc},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Capstone(path): the capstone shared library at path, loaded for decoding."},
    {0, NULL},
};

static PyType_Spec capstone_spec = {"gradtest._dispatch.Capstone", sizeof(CapstoneObject), 0,
                                    Py_TPFLAGS_DEFAULT, capstone_slots};

/* ---------- Cache ---------- */

typedef struct {
    PyObject_HEAD
    gt_dispatch_cache *cache;
    PyThread_type_lock lock; /* analyses sharing the cache run one at a time */
} CacheObject;

static PyObject *Cache_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Cache() takes no arguments");
        return NULL;
    }
    CacheObject *self = (CacheObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->lock = PyThread_allocate_lock();
    if (!self->lock || gt_dispatch_cache_new(&self->cache) != GT_OK) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void Cache_dealloc(CacheObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    gt_dispatch_cache_free(self->cache);
    if (self->lock)
        PyThread_free_lock(self->lock);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static Py_ssize_t Cache_len(CacheObject *self) { return (Py_ssize_t)gt_dispatch_cache_size(self->cache); }

static PyType_Slot cache_slots[] = {
    {Py_tp_new, Cache_new},
    {Py_tp_dealloc, Cache_dealloc},
    {Py_sq_length, Cache_len},
    {Py_tp_doc, "Cache(): per-function summaries reused by analyse() calls over the same module list;\n"
                "len() is the number of functions summarised."},
    {0, NULL},
};

static PyType_Spec cache_spec = {"gradtest._dispatch.Cache", sizeof(CacheObject), 0, Py_TPFLAGS_DEFAULT, cache_slots};

/* ---------- Elf ---------- */

typedef struct {
    PyObject_HEAD
    gt_elf *elf;
    Py_buffer view; /* when parsed from memory: the exporter stays alive and unchanged */
    int has_view;
} ElfObject;

static int elf_fail(int status, const char *err)
{
    gt_raise_message(status, err);
    return -1;
}

static int Elf_init(ElfObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"source", NULL};
    PyObject *source;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Elf", kwlist, &source))
        return -1;
    if (self->elf) {
        PyErr_SetString(PyExc_RuntimeError, "Elf objects cannot be re-initialised");
        return -1;
    }
    char err[512] = "";
    int status;
    if (PyObject_CheckBuffer(source) && !PyUnicode_Check(source)) {
        if (PyObject_GetBuffer(source, &self->view, PyBUF_SIMPLE) != 0)
            return -1;
        self->has_view = 1;
        Py_BEGIN_ALLOW_THREADS
        status = gt_elf_open_mem(self->view.buf, (size_t)self->view.len, &self->elf, err, sizeof err);
        Py_END_ALLOW_THREADS
    } else {
        PyObject *path_obj;
        if (!PyUnicode_FSConverter(source, &path_obj))
            return -1;
        Py_BEGIN_ALLOW_THREADS
        status = gt_elf_open_file(PyBytes_AS_STRING(path_obj), &self->elf, err, sizeof err);
        Py_END_ALLOW_THREADS
        Py_DECREF(path_obj);
    }
    if (status != GT_OK)
        return elf_fail(status, err);
    return 0;
}

static void Elf_dealloc(ElfObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    gt_elf_close(self->elf);
    if (self->has_view)
        PyBuffer_Release(&self->view);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int elf_ready(ElfObject *self)
{
    if (!self->elf) {
        PyErr_SetString(PyExc_ValueError, "Elf object was not initialised");
        return 0;
    }
    return 1;
}

/* A name read from the object as str; bytes that are not UTF-8 (a damaged file) become U+FFFD.
 * NULL gives None. New reference. */
static PyObject *name_str(const char *s)
{
    if (!s)
        Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *symbol_tuple(const gt_elf_symbol *s)
{
    return Py_BuildValue("(NKKO)", name_str(s->name), (unsigned long long)s->value, (unsigned long long)s->size,
                         s->global ? Py_True : Py_False);
}

static PyObject *Elf_lookup(ElfObject *self, PyObject *arg)
{
    if (!elf_ready(self))
        return NULL;
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    const gt_elf_symbol *s = gt_elf_lookup(self->elf, name);
    if (!s)
        Py_RETURN_NONE;
    return symbol_tuple(s);
}

static PyObject *Elf_symbolize(ElfObject *self, PyObject *arg)
{
    if (!elf_ready(self))
        return NULL;
    unsigned long long vaddr = PyLong_AsUnsignedLongLong(arg);
    if (vaddr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    uint64_t off = 0;
    const gt_elf_symbol *s = gt_elf_symbolize(self->elf, vaddr, &off);
    if (!s)
        Py_RETURN_NONE;
    return Py_BuildValue("(NK)", name_str(s->name), (unsigned long long)off);
}

static PyObject *Elf_function_at(ElfObject *self, PyObject *arg)
{
    if (!elf_ready(self))
        return NULL;
    unsigned long long vaddr = PyLong_AsUnsignedLongLong(arg);
    if (vaddr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    const gt_elf_symbol *s = gt_elf_function_at(self->elf, vaddr);
    if (!s)
        Py_RETURN_NONE;
    return symbol_tuple(s);
}

static PyObject *Elf_section(ElfObject *self, PyObject *arg)
{
    if (!elf_ready(self))
        return NULL;
    unsigned long long vaddr = PyLong_AsUnsignedLongLong(arg);
    if (vaddr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    const char *name = gt_elf_section_name(self->elf, vaddr);
    if (!name)
        Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "replace");
}

static PyObject *Elf_reloc(ElfObject *self, PyObject *arg)
{
    if (!elf_ready(self))
        return NULL;
    unsigned long long vaddr = PyLong_AsUnsignedLongLong(arg);
    if (vaddr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    const gt_elf_reloc *r = gt_elf_reloc_at(self->elf, vaddr);
    if (!r)
        Py_RETURN_NONE;
    return Py_BuildValue("(NOKO)", name_str(r->name), r->defined ? Py_True : Py_False, (unsigned long long)r->value,
                         r->jump_slot ? Py_True : Py_False);
}

static PyObject *Elf_line(ElfObject *self, PyObject *arg)
{
    if (!elf_ready(self))
        return NULL;
    unsigned long long vaddr = PyLong_AsUnsignedLongLong(arg);
    if (vaddr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    const char *dir, *file;
    unsigned line;
    if (gt_elf_line(self->elf, vaddr, &dir, &file, &line) != GT_OK)
        Py_RETURN_NONE;
    return Py_BuildValue("(NNI)", name_str(dir), name_str(file), line);
}

static PyObject *Elf_symbols(ElfObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!elf_ready(self))
        return NULL;
    size_t n = gt_elf_symbol_count(self->elf);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *t = symbol_tuple(gt_elf_symbol_get(self->elf, i));
        if (!t) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

static PyObject *Elf_get_machine(ElfObject *self, void *Py_UNUSED(closure))
{
    if (!elf_ready(self))
        return NULL;
    return PyLong_FromLong(gt_elf_machine(self->elf));
}

static PyObject *Elf_get_base_vaddr(ElfObject *self, void *Py_UNUSED(closure))
{
    if (!elf_ready(self))
        return NULL;
    return PyLong_FromUnsignedLongLong(gt_elf_base_vaddr(self->elf));
}

static PyObject *Elf_get_reloc_count(ElfObject *self, void *Py_UNUSED(closure))
{
    if (!elf_ready(self))
        return NULL;
    return PyLong_FromSize_t(gt_elf_reloc_count(self->elf));
}

static PyMethodDef elf_methods[] = {
    {"lookup", (PyCFunction)Elf_lookup, METH_O, "lookup(name) -> (name, vaddr, size, global) or None"},
    {"symbolize", (PyCFunction)Elf_symbolize, METH_O, "symbolize(vaddr) -> (name, offset) or None"},
    {"function_at", (PyCFunction)Elf_function_at, METH_O, "function_at(vaddr) -> (name, vaddr, size, global) or None"},
    {"section", (PyCFunction)Elf_section, METH_O, "section(vaddr) -> section name or None"},
    {"reloc", (PyCFunction)Elf_reloc, METH_O, "reloc(slot_vaddr) -> (name, defined, value, jump_slot) or None"},
    {"line", (PyCFunction)Elf_line, METH_O, "line(vaddr) -> (directory, file, line) from .debug_line, or None"},
    {"symbols", (PyCFunction)Elf_symbols, METH_NOARGS, "symbols() -> list of function symbols in address order"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef elf_getset[] = {
    {"machine", (getter)Elf_get_machine, NULL, "ELF e_machine (62 x86-64, 183 aarch64)", NULL},
    {"base_vaddr", (getter)Elf_get_base_vaddr, NULL, "lowest loadable address, page-aligned", NULL},
    {"reloc_count", (getter)Elf_get_reloc_count, NULL, "pointer relocations read", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot elf_slots[] = {
    {Py_tp_init, Elf_init},
    {Py_tp_dealloc, Elf_dealloc},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, elf_methods},
    {Py_tp_getset, elf_getset},
    {Py_tp_doc, "Elf(source): an ELF object read from a path or from a bytes-like object (kept alive)."},
    {0, NULL},
};

static PyType_Spec elf_spec = {"gradtest._dispatch.Elf", sizeof(ElfObject), 0, Py_TPFLAGS_DEFAULT, elf_slots};

/* ---------- module state ---------- */

typedef struct {
    PyObject *capstone_type;
    PyObject *elf_type;
    PyObject *cache_type;
} module_state;

static module_state *get_state(PyObject *module) { return (module_state *)PyModule_GetState(module); }

/* ---------- analyse ---------- */

static PyObject *event_kind_name(int kind)
{
    const char *name = kind == GT_DK_EXTERNAL_CALL   ? "external_call"
                       : kind == GT_DK_INDIRECT_CALL ? "indirect_call"
                       : kind == GT_DK_INDIRECT_JUMP ? "indirect_jump"
                                                     : "unresolved";
    return PyUnicode_FromString(name);
}

static PyObject *result_to_dict(const gt_dispatch_result *r)
{
    PyObject *events = PyList_New((Py_ssize_t)r->n_events), *functions = NULL, *dict = NULL;
    if (!events)
        return NULL;
    for (size_t i = 0; i < r->n_events; i++) {
        const gt_dispatch_event *e = &r->events[i];
        PyObject *kind = event_kind_name(e->kind);
        PyObject *t = kind ? Py_BuildValue("(NiKnOONNN)", kind, e->module, (unsigned long long)e->address,
                                           (Py_ssize_t)e->function, e->tail ? Py_True : Py_False,
                                           e->error_path ? Py_True : Py_False, name_str(e->callee),
                                           name_str(e->provider), name_str(e->text))
                           : NULL;
        if (!t)
            goto error;
        PyList_SET_ITEM(events, (Py_ssize_t)i, t);
    }
    functions = PyList_New((Py_ssize_t)r->n_functions);
    if (!functions)
        goto error;
    for (size_t i = 0; i < r->n_functions; i++) {
        const gt_dispatch_function *f = &r->functions[i];
        PyObject *t = Py_BuildValue("(iKNnKiOn)", f->module, (unsigned long long)f->entry, name_str(f->name), (Py_ssize_t)f->parent,
                                    (unsigned long long)f->callsite, f->depth, f->noreturn ? Py_True : Py_False,
                                    (Py_ssize_t)f->instructions);
        if (!t)
            goto error;
        PyList_SET_ITEM(functions, (Py_ssize_t)i, t);
    }
    dict = Py_BuildValue("{sNsNsnsnsnsO}", "events", events, "functions", functions, "instructions",
                         (Py_ssize_t)r->instructions, "jump_tables", (Py_ssize_t)r->jump_tables, "plt_calls",
                         (Py_ssize_t)r->plt_calls, "depth_limited", r->depth_limited ? Py_True : Py_False);
    return dict; /* N consumed events and functions, also on failure */
error:
    Py_XDECREF(events);
    Py_XDECREF(functions);
    return NULL;
}

PyDoc_STRVAR(analyse_doc,
"analyse(capstone, modules, entry_module, entry, max_depth, noreturn, cache=None) -> dict\n\n"
"modules: sequence of (path or None, Elf); entry: virtual address in modules[entry_module];\n"
"noreturn: fnmatch patterns of external functions that never return; cache: a Cache used only\n"
"with this module list and these patterns.");

static PyObject *py_analyse(PyObject *module, PyObject *args)
{
    module_state *st = get_state(module);
    PyObject *cs_obj, *mods_obj, *noret_obj, *cache_obj = Py_None;
    Py_ssize_t entry_module;
    unsigned long long entry;
    int max_depth;
    if (!PyArg_ParseTuple(args, "O!OnKiO|O:analyse", (PyTypeObject *)st->capstone_type, &cs_obj, &mods_obj,
                          &entry_module, &entry, &max_depth, &noret_obj, &cache_obj))
        return NULL;
    CacheObject *cache = NULL;
    if (cache_obj != Py_None) {
        if (!PyObject_TypeCheck(cache_obj, (PyTypeObject *)st->cache_type)) {
            PyErr_SetString(PyExc_TypeError, "cache: expected a Cache or None");
            return NULL;
        }
        cache = (CacheObject *)cache_obj;
    }
    PyObject *mods = PySequence_Fast(mods_obj, "modules: expected a sequence of (path, Elf) pairs");
    PyObject *noret = NULL, *result = NULL;
    PyObject **path_bytes = NULL;
    gt_dispatch_module *cmods = NULL;
    const char **patterns = NULL;
    Py_ssize_t n = 0, npat = 0;
    if (!mods)
        return NULL;
    n = PySequence_Fast_GET_SIZE(mods);
    if (n < 1 || n > GT_DISPATCH_MAX_MODULES) {
        PyErr_Format(PyExc_ValueError, "modules: expected 1 to %d modules, got %zd", GT_DISPATCH_MAX_MODULES, n);
        goto cleanup;
    }
    if (entry_module < 0 || entry_module >= n) {
        PyErr_Format(PyExc_ValueError, "entry_module: %zd is not an index of the %zd modules", entry_module, n);
        goto cleanup;
    }
    if (max_depth < 0) {
        PyErr_SetString(PyExc_ValueError, "max_depth: expected a non-negative integer");
        goto cleanup;
    }
    cmods = PyMem_Calloc((size_t)n, sizeof *cmods);
    path_bytes = PyMem_Calloc((size_t)n, sizeof *path_bytes);
    if (!cmods || !path_bytes) {
        PyErr_NoMemory();
        goto cleanup;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(mods, i), *path, *elf;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError, "modules[%zd]: expected a (path, Elf) pair", i);
            goto cleanup;
        }
        path = PyTuple_GET_ITEM(item, 0);
        elf = PyTuple_GET_ITEM(item, 1);
        if (!PyObject_TypeCheck(elf, (PyTypeObject *)st->elf_type) || !((ElfObject *)elf)->elf) {
            PyErr_Format(PyExc_TypeError, "modules[%zd]: expected an Elf object", i);
            goto cleanup;
        }
        cmods[i].elf = ((ElfObject *)elf)->elf;
        if (path != Py_None) {
            if (!PyUnicode_FSConverter(path, &path_bytes[i]))
                goto cleanup;
            cmods[i].path = PyBytes_AS_STRING(path_bytes[i]);
        }
    }
    noret = PySequence_Fast(noret_obj, "noreturn: expected a sequence of patterns");
    if (!noret)
        goto cleanup;
    npat = PySequence_Fast_GET_SIZE(noret);
    patterns = PyMem_Calloc((size_t)npat + 1, sizeof *patterns);
    if (!patterns) {
        PyErr_NoMemory();
        goto cleanup;
    }
    for (Py_ssize_t i = 0; i < npat; i++) {
        patterns[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(noret, i));
        if (!patterns[i])
            goto cleanup;
    }
    gt_dispatch_options opt = {max_depth, patterns, (size_t)npat};
    gt_dispatch_result res;
    char err[512] = "";
    int status;
    /* the Elf objects, the pattern strings and the Capstone object are referenced by the argument
     * tuple and `mods`/`noret` for the whole call */
    Py_BEGIN_ALLOW_THREADS
    if (cache)
        PyThread_acquire_lock(cache->lock, WAIT_LOCK);
    status = gt_dispatch_analyse(((CapstoneObject *)cs_obj)->cs, cmods, (size_t)n, (size_t)entry_module, entry, &opt,
                                 cache ? cache->cache : NULL, &res, err, sizeof err);
    if (cache)
        PyThread_release_lock(cache->lock);
    Py_END_ALLOW_THREADS
    if (status != GT_OK) {
        gt_raise_message(status, err);
        goto cleanup;
    }
    result = result_to_dict(&res);
    gt_dispatch_result_free(&res);
cleanup:
    if (path_bytes)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(path_bytes[i]);
    PyMem_Free(path_bytes);
    PyMem_Free(cmods);
    PyMem_Free(patterns);
    Py_XDECREF(noret);
    Py_DECREF(mods);
    return result;
}

/* ---------- locate ---------- */

static PyObject *py_locate(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long addr = PyLong_AsUnsignedLongLong(arg);
    if (addr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    char path[4096];
    uint64_t base = 0;
    if (gt_dispatch_locate(addr, path, sizeof path, &base) != GT_OK)
        Py_RETURN_NONE;
    PyObject *p = PyUnicode_DecodeFSDefault(path);
    if (!p)
        return NULL;
    return Py_BuildValue("(NK)", p, (unsigned long long)base);
}

static PyObject *py_is_loaded(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *path_obj;
    if (!PyUnicode_FSConverter(arg, &path_obj))
        return NULL;
    int loaded = gt_dispatch_is_loaded(PyBytes_AS_STRING(path_obj));
    Py_DECREF(path_obj);
    return PyBool_FromLong(loaded);
}

/* ---------- call ---------- */

PyDoc_STRVAR(call_doc,
"call(address, classes, bits, ret_class, timeout, buffers=None) -> dict\n\n"
"Calls the C function at address in a forked child. classes: per argument 0 int/pointer, 1 double,\n"
"2 float; bits: the integer value or IEEE bits of each; ret_class: 0 int, 1 double, 2 float, 3 void.\n"
"buffers: None, or per argument None or (nbytes, name, is_const): bits is then the address of\n"
"nbytes that the caller keeps alive, handed to the function as a copy fenced by guard pages.\n"
"how is 'overrun' (with 'overrun' saying what it did) when it accessed memory outside one.");

/* Fills spec's buffer fields from call()'s `buffers` (see call_doc); -1 with an exception set. */
static int parse_buffers(PyObject *bufs_obj, gt_call_spec *spec)
{
    PyObject *bufs = PySequence_Fast(bufs_obj, "buffers: expected a sequence");
    if (!bufs)
        return -1;
    int rc = -1;
    if (PySequence_Fast_GET_SIZE(bufs) != spec->nargs) {
        PyErr_SetString(PyExc_ValueError, "buffers: expected one entry per argument");
        goto done;
    }
    for (int k = 0; k < spec->nargs; k++) {
        PyObject *item = PySequence_Fast_GET_ITEM(bufs, k);
        if (item == Py_None)
            continue;
        Py_ssize_t nbytes;
        const char *name;
        int is_const;
        if (!PyArg_ParseTuple(item, "nsp:buffers", &nbytes, &name, &is_const))
            goto done;
        if (nbytes <= 0 || spec->cls[k] != GT_CALL_INT) {
            PyErr_Format(PyExc_ValueError, "buffers[%d]: expected a pointer argument of > 0 bytes", k);
            goto done;
        }
        spec->buf_len[k] = (size_t)nbytes;
        snprintf(spec->buf_name[k], sizeof spec->buf_name[k], "%s", name);
        spec->buf_const[k] = is_const;
    }
    rc = 0;
done:
    Py_DECREF(bufs);
    return rc;
}

static PyObject *py_call(PyObject *Py_UNUSED(module), PyObject *args)
{
    unsigned long long addr;
    PyObject *cls_obj, *bits_obj, *bufs_obj = Py_None;
    int ret_class;
    double timeout;
    if (!PyArg_ParseTuple(args, "KOOid|O:call", &addr, &cls_obj, &bits_obj, &ret_class, &timeout, &bufs_obj))
        return NULL;
    if (addr == 0) {
        PyErr_SetString(PyExc_ValueError, "address: the function pointer is NULL");
        return NULL;
    }
    gt_call_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.fn = (void *)(uintptr_t)addr;
    spec.ret = ret_class;
    PyObject *cls = PySequence_Fast(cls_obj, "classes: expected a sequence"), *bits = NULL;
    if (!cls)
        return NULL;
    bits = PySequence_Fast(bits_obj, "bits: expected a sequence");
    if (!bits) {
        Py_DECREF(cls);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(cls);
    if (n != PySequence_Fast_GET_SIZE(bits) || n > GT_CALL_MAX_ARGS) {
        PyErr_Format(PyExc_ValueError, "expected matching classes and bits, at most %d arguments", GT_CALL_MAX_ARGS);
        goto cleanup;
    }
    if (ret_class < GT_CALL_INT || ret_class > GT_CALL_VOID) {
        PyErr_SetString(PyExc_ValueError, "ret_class: expected 0 to 3");
        goto cleanup;
    }
    spec.nargs = (int)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        long c = PyLong_AsLong(PySequence_Fast_GET_ITEM(cls, i));
        if (c == -1 && PyErr_Occurred())
            goto cleanup;
        spec.cls[i] = (int)c;
        spec.bits[i] = PyLong_AsUnsignedLongLongMask(PySequence_Fast_GET_ITEM(bits, i));
        if (PyErr_Occurred())
            goto cleanup;
    }
    if (bufs_obj != Py_None && parse_buffers(bufs_obj, &spec) < 0)
        goto cleanup;
    gt_call_outcome out;
    char err[256] = "";
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = gt_dispatch_call(&spec, timeout, &out, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (status != GT_OK) {
        gt_raise_message(status, err);
        goto cleanup;
    }
    const char *how = out.status == GT_OK ? "returned" : out.status == GT_ETIMEOUT ? "timeout"
                      : out.status == GT_EOVERRUN ? "overrun"
                      : out.status == GT_ECRASH ? (out.signal ? "signal" : "exit") : "error";
    char sigbuf[32];
    const char *signame = out.signal ? gt_signal_name(out.signal, sigbuf, sizeof sigbuf) : NULL;
    result = Py_BuildValue("{sssisiszsssKss}", "how", how, "signal", out.signal, "exit_code", out.exit_code,
                           "signal_name", signame, "stage", out.stage, "ret_bits", (unsigned long long)out.ret_bits,
                           "overrun", out.overrun);
cleanup:
    Py_DECREF(cls);
    Py_DECREF(bits);
    return result;
}

static PyObject *py_probe_load(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *path_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "O&d:probe_load", PyUnicode_FSConverter, &path_obj, &timeout))
        return NULL;
    int loadable = 0, status;
    gt_call_outcome out;
    char err[1024];
    Py_BEGIN_ALLOW_THREADS
    status = gt_dispatch_probe_load(PyBytes_AS_STRING(path_obj), timeout, &loadable, &out, err, sizeof err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (status == GT_EINVAL || status == GT_EIO)
        return gt_raise_message(status, "could not fork a child to load the library");
    if (status != GT_OK) {
        char sigbuf[32];
        const char *signame = out.signal ? gt_signal_name(out.signal, sigbuf, sizeof sigbuf) : "no signal";
        return Py_BuildValue("(Os)", Py_False, status == GT_ETIMEOUT ? "timed out" : signame);
    }
    return Py_BuildValue("(Oz)", loadable ? Py_True : Py_False, loadable ? NULL : err);
}

/* ---------- module ---------- */

static PyMethodDef module_methods[] = {
    {"analyse", py_analyse, METH_VARARGS, analyse_doc},
    {"locate", py_locate, METH_O, "locate(address) -> (path, base) of the loaded object holding it, or None;\n"
                                  "the file virtual address is address - base + Elf(path).base_vaddr"},
    {"call", py_call, METH_VARARGS, call_doc},
    {"is_loaded", py_is_loaded, METH_O, "is_loaded(path) -> whether the object is loaded in this process"},
    {"probe_load", py_probe_load, METH_VARARGS,
     "probe_load(path, timeout) -> (loadable, message): dlopen in a forked child first, since the\n"
     "dynamic loader can crash on a damaged file; message is dlerror's text or the signal's name"},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module)
{
    module_state *st = get_state(module);
    st->capstone_type = PyType_FromModuleAndSpec(module, &capstone_spec, NULL);
    if (!st->capstone_type || PyModule_AddObjectRef(module, "Capstone", st->capstone_type) < 0)
        return -1;
    st->elf_type = PyType_FromModuleAndSpec(module, &elf_spec, NULL);
    if (!st->elf_type || PyModule_AddObjectRef(module, "Elf", st->elf_type) < 0)
        return -1;
    st->cache_type = PyType_FromModuleAndSpec(module, &cache_spec, NULL);
    if (!st->cache_type || PyModule_AddObjectRef(module, "Cache", st->cache_type) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "MAX_INT_ARGS", GT_CALL_MAX_INT) < 0 ||
        PyModule_AddIntConstant(module, "MAX_FP_ARGS", GT_CALL_MAX_FP) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_state(module);
    Py_VISIT(st->capstone_type);
    Py_VISIT(st->elf_type);
    Py_VISIT(st->cache_type);
    return 0;
}

static int module_clear(PyObject *module)
{
    module_state *st = get_state(module);
    Py_CLEAR(st->capstone_type);
    Py_CLEAR(st->elf_type);
    Py_CLEAR(st->cache_type);
    return 0;
}

static void module_free(void *module) { module_clear((PyObject *)module); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "gradtest._dispatch",
    "Machine-code analysis and guarded calls of C functions (the dispatch checks).",
    sizeof(module_state),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free,
};

PyMODINIT_FUNC PyInit__dispatch(void) { return PyModuleDef_Init(&module_def); }
