/*
 * sigma_arrow._calgebra: the native rule algebra of the engine (sigma_arrow/engine/native.py).
 *
 * A (rule, route) unit's detection tree is compiled once per ruleset into a small prefix program
 * (int32 triples: op, argument, subtree size). Batch holds one batch's state: the columns the
 * programs read (sparse rows -> distinct-value codes), per-distinct-value masks of literal leaves
 * (built here, on first use, from the literal pass's hit lists) and the answer tables of kernel
 * leaves (regex, cidr, ...: int8 per distinct value, -1 while unknown, filled by Python).
 *
 * Batch.evaluate(program, rows) evaluates a program on some rows, node at a time over shrinking row
 * lists with short-circuit and/or in program order: exactly the rows (and so the distinct values)
 * that reach a leaf in the Python evaluator reach it here, so kernel leaves stay lazy. What the
 * batch does not hold yet is asked from Python when a leaf first needs it, through the resolver
 * given to Batch: resolver.load_column(slot) (which calls set_column), resolver.scan_literal(id) (a
 * literal the literal pass has not looked for yet), resolver.answer(slot, codes)
 * (fills the kernel slot's answers for those distinct values, after set_lazy) and
 * resolver.load_row_mask(slot) (calls set_row_mask). Results are exactly the Python evaluator's
 * (two-valued logic, every leaf a function of its row's value).
 *
 * Module functions serve the steps around it: row_groups (a column's rows grouped by value, the
 * index candidate rows are gathered from), gather_rows (a clause's candidate rows inside a route)
 * and group_rows (rows grouped by their route columns' values).
 *
 * Row -> code lookups on sparse columns go through a rank index (a bitmap of the set rows and the
 * count of set rows before each 64-bit word): a popcount per lookup, in any row order.
 *
 * Written for sigma-arrow; no third-party code. Needs only the CPython headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POPCOUNT(x) __builtin_popcountll(x)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* the evaluator in two builds, picked at load time: with the CPU's popcnt instruction, and without */
#define FAST_POPCOUNT __attribute__((target_clones("popcnt", "default")))
#else
#define FAST_POPCOUNT
#endif

enum { OP_AND = 0, OP_OR = 1, OP_NOT = 2, OP_CONST = 3, OP_MASK = 4, OP_EXISTS = 5, OP_ISNULL = 6, OP_LAZY = 7, OP_ROWS = 8 };
enum { COL_UNLOADED = 0, COL_ABSENT = 1, COL_LOADED = 2 };

typedef struct {
    int state;
    int wide;               /* valid rows are int64 (else int32) */
    const void *valid;      /* sorted rows holding a value; NULL: every row */
    Py_ssize_t n_valid;
    const int64_t *codes;   /* distinct-value code of each valid row (of each row when valid is NULL) */
    Py_ssize_t n_codes;
    int64_t n_distinct;
    uint64_t *bits;         /* sparse columns: bit r set when row r holds a value ... */
    int32_t *ranks;         /* ... and ranks[w]: set rows before word w (the index into valid) */
    int64_t n_words;
    Py_buffer valid_buf, codes_buf;
    int has_valid_buf, has_codes_buf;
} Column;

typedef struct {
    PyObject_HEAD
    int64_t n_rows;
    Py_ssize_t n_columns, n_masks, n_lazy, n_row_masks;
    Column *columns;
    uint8_t **masks;        /* per mask slot: n_distinct + 1 flags, built on first use */
    Py_buffer *lazy_bufs;   /* per kernel slot: int8 answers (-1 unknown) */
    char *lazy_set;
    Py_buffer *row_bufs;    /* per row-mask slot (keyword literals): one byte per row of the batch */
    char *row_set;
    PyObject *layout;       /* (mask_col, mask_ptr, mask_lits, lazy_col) bytes, kept alive */
    const int32_t *mask_col, *mask_ptr, *mask_lits, *lazy_col;
    PyObject *hit_map;      /* literal id -> distinct positions hit (the literal pass's dict) */
    PyObject *resolver;     /* provides columns, kernel answers and row masks on demand */
    Py_buffer done_buf;     /* one byte per literal: its hits are in hit_map (literal_done) */
    int has_done_buf;
} Batch;

static uint8_t NO_HITS[1]; /* marks a mask slot whose literals hit nothing: every answer is false */

static int get_buffer(PyObject *obj, Py_buffer *view, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous buffer", what);
        return -1;
    }
    return 0;
}

static void column_release(Column *c) {
    free(c->bits);
    free(c->ranks);
    c->bits = NULL;
    c->ranks = NULL;
    if (c->has_valid_buf) PyBuffer_Release(&c->valid_buf);
    if (c->has_codes_buf) PyBuffer_Release(&c->codes_buf);
    c->has_valid_buf = c->has_codes_buf = 0;
}

static void Batch_dealloc(Batch *self) {
    if (self->columns) {
        for (Py_ssize_t i = 0; i < self->n_columns; i++) column_release(&self->columns[i]);
        free(self->columns);
    }
    if (self->masks) {
        for (Py_ssize_t i = 0; i < self->n_masks; i++)
            if (self->masks[i] != NULL && self->masks[i] != NO_HITS) free(self->masks[i]);
        free(self->masks);
    }
    if (self->lazy_bufs && self->lazy_set) {
        for (Py_ssize_t i = 0; i < self->n_lazy; i++)
            if (self->lazy_set[i]) PyBuffer_Release(&self->lazy_bufs[i]);
        free(self->lazy_bufs);
    }
    free(self->lazy_set);
    if (self->row_bufs && self->row_set) {
        for (Py_ssize_t i = 0; i < self->n_row_masks; i++)
            if (self->row_set[i]) PyBuffer_Release(&self->row_bufs[i]);
        free(self->row_bufs);
    }
    free(self->row_set);
    Py_XDECREF(self->layout);
    Py_XDECREF(self->hit_map);
    Py_XDECREF(self->resolver);
    if (self->has_done_buf) PyBuffer_Release(&self->done_buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(Batch *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"n_rows",   "n_columns", "mask_col",    "mask_ptr", "mask_lits",    "lazy_col",
                             "hit_map", "n_row_masks", "resolver", "literal_done", NULL};
    long long n_rows;
    Py_ssize_t n_columns, n_row_masks = 0;
    PyObject *mask_col, *mask_ptr, *mask_lits, *lazy_col, *hit_map, *resolver, *done;
    if (self->columns != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Batch is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LnSSSSO!nOO", kwlist, &n_rows, &n_columns, &mask_col, &mask_ptr,
                                     &mask_lits, &lazy_col, &PyDict_Type, &hit_map, &n_row_masks, &resolver, &done))
        return -1;
    Py_ssize_t n_masks = PyBytes_GET_SIZE(mask_col) / 4, n_lazy = PyBytes_GET_SIZE(lazy_col) / 4;
    if (n_rows < 0 || n_columns < 0 || n_row_masks < 0 || PyBytes_GET_SIZE(mask_ptr) != 4 * (n_masks + 1)) {
        PyErr_SetString(PyExc_ValueError, "bad layout: mask_ptr must hold n_masks + 1 int32");
        return -1;
    }
    const int32_t *col = (const int32_t *)PyBytes_AS_STRING(mask_col);
    const int32_t *ptr = (const int32_t *)PyBytes_AS_STRING(mask_ptr);
    const int32_t *lz = (const int32_t *)PyBytes_AS_STRING(lazy_col);
    Py_ssize_t n_lits = PyBytes_GET_SIZE(mask_lits) / 4;
    for (Py_ssize_t i = 0; i < n_masks; i++) {
        if (col[i] < 0 || col[i] >= n_columns || ptr[i] < 0 || ptr[i] > ptr[i + 1] || ptr[i + 1] > n_lits) {
            PyErr_SetString(PyExc_ValueError, "bad layout: mask slot out of range");
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n_lazy; i++) {
        if (lz[i] < 0 || lz[i] >= n_columns) {
            PyErr_SetString(PyExc_ValueError, "bad layout: kernel slot column out of range");
            return -1;
        }
    }
    self->n_rows = n_rows;
    self->n_columns = n_columns;
    self->n_masks = n_masks;
    self->n_lazy = n_lazy;
    self->columns = (Column *)calloc((size_t)n_columns + 1, sizeof(Column));
    self->masks = (uint8_t **)calloc((size_t)n_masks + 1, sizeof(uint8_t *));
    self->lazy_bufs = (Py_buffer *)calloc((size_t)n_lazy + 1, sizeof(Py_buffer));
    self->lazy_set = (char *)calloc((size_t)n_lazy + 1, 1);
    self->n_row_masks = n_row_masks;
    self->row_bufs = (Py_buffer *)calloc((size_t)n_row_masks + 1, sizeof(Py_buffer));
    self->row_set = (char *)calloc((size_t)n_row_masks + 1, 1);
    if (!self->columns || !self->masks || !self->lazy_bufs || !self->lazy_set || !self->row_bufs || !self->row_set) {
        PyErr_NoMemory();
        return -1;
    }
    self->layout = PyTuple_Pack(4, mask_col, mask_ptr, mask_lits, lazy_col);
    if (self->layout == NULL) return -1;
    self->mask_col = col;
    self->mask_ptr = ptr;
    self->mask_lits = (const int32_t *)PyBytes_AS_STRING(mask_lits);
    self->lazy_col = lz;
    Py_INCREF(hit_map);
    self->hit_map = hit_map;
    Py_INCREF(resolver);
    self->resolver = resolver;
    if (get_buffer(done, &self->done_buf, "literal_done") < 0) return -1;
    self->has_done_buf = 1;
    return 0;
}

PyDoc_STRVAR(set_column_doc,
             "set_column(slot, valid_rows, codes, n_distinct)\n\n"
             "Load a column: valid_rows (sorted int32/int64 rows holding a value, None: every row) and\n"
             "each such row's int64 distinct-value code. valid_rows=codes=None, n_distinct=-1: the batch\n"
             "has no such column.");

static PyObject *Batch_set_column(Batch *self, PyObject *args) {
    Py_ssize_t slot;
    PyObject *valid_obj, *codes_obj;
    long long n_distinct;
    if (!PyArg_ParseTuple(args, "nOOL", &slot, &valid_obj, &codes_obj, &n_distinct)) return NULL;
    if (slot < 0 || slot >= self->n_columns) {
        PyErr_SetString(PyExc_IndexError, "column slot out of range");
        return NULL;
    }
    Column *c = &self->columns[slot];
    if (c->state != COL_UNLOADED) {
        PyErr_SetString(PyExc_ValueError, "column slot already set");
        return NULL;
    }
    if (n_distinct < 0) {
        c->state = COL_ABSENT;
        Py_RETURN_NONE;
    }
    Column fresh;
    memset(&fresh, 0, sizeof(fresh));
    fresh.n_distinct = n_distinct;
    if (get_buffer(codes_obj, &fresh.codes_buf, "codes") < 0) return NULL;
    fresh.has_codes_buf = 1;
    if (fresh.codes_buf.len % 8) {
        PyErr_SetString(PyExc_ValueError, "codes must be int64");
        goto fail;
    }
    fresh.codes = (const int64_t *)fresh.codes_buf.buf;
    fresh.n_codes = fresh.codes_buf.len / 8;
    if (valid_obj != Py_None) {
        if (PyObject_GetBuffer(valid_obj, &fresh.valid_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto fail;
        fresh.has_valid_buf = 1;
        if (fresh.valid_buf.itemsize != 4 && fresh.valid_buf.itemsize != 8) {
            PyErr_SetString(PyExc_ValueError, "valid_rows must be int32 or int64");
            goto fail;
        }
        fresh.wide = fresh.valid_buf.itemsize == 8;
        fresh.valid = fresh.valid_buf.buf;
        fresh.n_valid = fresh.valid_buf.len / fresh.valid_buf.itemsize;
        if (fresh.n_valid != fresh.n_codes) {
            PyErr_SetString(PyExc_ValueError, "valid_rows and codes differ in length");
            goto fail;
        }
    } else if (fresh.n_codes < self->n_rows) {
        PyErr_SetString(PyExc_ValueError, "a column of every row needs a code per row");
        goto fail;
    }
    if (fresh.valid != NULL) {
        /* a rank index: a row's place among the set rows is a popcount, no search */
        if (fresh.n_valid > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "too many set rows");
            goto fail;
        }
        fresh.n_words = (self->n_rows + 63) / 64;
        fresh.bits = (uint64_t *)calloc((size_t)fresh.n_words + 1, sizeof(uint64_t));
        fresh.ranks = (int32_t *)malloc(((size_t)fresh.n_words + 1) * sizeof(int32_t));
        if (fresh.bits == NULL || fresh.ranks == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        /* (rows must be increasing, as ColumnView keeps them: a rank is then the row's index) */
        int bad = 0;
        if (fresh.wide) {
            const int64_t *valid = (const int64_t *)fresh.valid;
            for (Py_ssize_t j = 0; j < fresh.n_valid; j++) {
                const uint64_t r = (uint64_t)valid[j];
                bad |= r >= (uint64_t)self->n_rows;
                fresh.bits[(r >> 6) < (uint64_t)fresh.n_words ? (r >> 6) : (uint64_t)fresh.n_words] |= (uint64_t)1 << (r & 63);
            }
        } else {
            const int32_t *valid = (const int32_t *)fresh.valid;
            for (Py_ssize_t j = 0; j < fresh.n_valid; j++) {
                const uint64_t r = (uint64_t)(int64_t)valid[j];
                bad |= r >= (uint64_t)self->n_rows;
                fresh.bits[(r >> 6) < (uint64_t)fresh.n_words ? (r >> 6) : (uint64_t)fresh.n_words] |= (uint64_t)1 << (r & 63);
            }
        }
        if (bad) {
            PyErr_SetString(PyExc_ValueError, "valid_rows beyond the batch's rows");
            goto fail;
        }
        int32_t before = 0;
        for (int64_t w = 0; w <= fresh.n_words; w++) {
            fresh.ranks[w] = before;
            before += (int32_t)__builtin_popcountll(fresh.bits[w]);
        }
    }
    fresh.state = COL_LOADED;
    *c = fresh;
    Py_RETURN_NONE;
fail:
    column_release(&fresh);
    return NULL;
}

PyDoc_STRVAR(set_lazy_doc,
             "set_lazy(slot, answers)\n\n"
             "A kernel slot's answer table: int8 per distinct value of its column plus the null slot\n"
             "(-1 unknown, 0 false, 1 true), kept by reference (the caller fills it in place).");

static PyObject *Batch_set_lazy(Batch *self, PyObject *args) {
    Py_ssize_t slot;
    PyObject *answers;
    if (!PyArg_ParseTuple(args, "nO", &slot, &answers)) return NULL;
    if (slot < 0 || slot >= self->n_lazy) {
        PyErr_SetString(PyExc_IndexError, "kernel slot out of range");
        return NULL;
    }
    Column *c = &self->columns[self->lazy_col[slot]];
    if (c->state != COL_LOADED) {
        PyErr_SetString(PyExc_ValueError, "load the kernel slot's column first");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(answers, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (view.len != c->n_distinct + 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "answers must hold n_distinct + 1 int8");
        return NULL;
    }
    if (self->lazy_set[slot]) PyBuffer_Release(&self->lazy_bufs[slot]);
    self->lazy_bufs[slot] = view;
    self->lazy_set[slot] = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_row_mask_doc,
             "set_row_mask(slot, mask)\n\n"
             "A row-mask slot's flags: one byte (0/1) per row of the batch, kept by reference.");

static PyObject *Batch_set_row_mask(Batch *self, PyObject *args) {
    Py_ssize_t slot;
    PyObject *mask;
    if (!PyArg_ParseTuple(args, "nO", &slot, &mask)) return NULL;
    if (slot < 0 || slot >= self->n_row_masks) {
        PyErr_SetString(PyExc_IndexError, "row-mask slot out of range");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(mask, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (view.len != self->n_rows) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a row mask holds one byte per row");
        return NULL;
    }
    if (self->row_set[slot]) PyBuffer_Release(&self->row_bufs[slot]);
    self->row_bufs[slot] = view;
    self->row_set[slot] = 1;
    Py_RETURN_NONE;
}

static inline int64_t checked(const Column *c, int64_t code) {
    return (uint64_t)code < (uint64_t)c->n_distinct ? code : c->n_distinct; /* a bad code reads as null */
}

/* Distinct-value code of a row (n_distinct when it has no value). */
static inline int64_t lookup(const Column *c, int64_t row) {
    if (c->valid == NULL) return ((uint64_t)row < (uint64_t)c->n_codes) ? checked(c, c->codes[row]) : c->n_distinct;
    const uint64_t word_at = (uint64_t)row >> 6;
    if (word_at >= (uint64_t)c->n_words) return c->n_distinct;
    const uint64_t word = c->bits[word_at], bit = (uint64_t)1 << (row & 63);
    if (!(word & bit)) return c->n_distinct;
    return checked(c, c->codes[c->ranks[word_at] + POPCOUNT(word & (bit - 1))]);
}

static int hit_positions(PyObject *hits, Py_buffer *view) {
    if (PyObject_GetBuffer(hits, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != 4 && view->itemsize != 8) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "hit positions must be int32 or int64");
        return -1;
    }
    return 0;
}

/* The flags of a literal mask slot (its literals' hits, united); NULL with an error set on failure. */
static int ask(Batch *self, const char *method, Py_ssize_t slot, PyObject *codes);

static uint8_t *build_mask(Batch *self, Py_ssize_t slot, const Column *c) {
    uint8_t *mask = NULL;
    for (int32_t k = self->mask_ptr[slot]; k < self->mask_ptr[slot + 1]; k++) {
        const int32_t literal = self->mask_lits[k];
        const uint8_t *done = (const uint8_t *)self->done_buf.buf;
        if (literal < 0 || literal >= self->done_buf.len) {
            PyErr_SetString(PyExc_ValueError, "literal id beyond literal_done");
            goto fail;
        }
        if (!done[literal] && ask(self, "scan_literal", literal, NULL) < 0) goto fail; /* not scanned yet */
        PyObject *key = PyLong_FromLong(literal);
        if (key == NULL) goto fail;
        PyObject *hits = PyDict_GetItemWithError(self->hit_map, key); /* borrowed */
        Py_DECREF(key);
        if (hits == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        Py_buffer view;
        if (hit_positions(hits, &view) < 0) goto fail;
        Py_ssize_t n = view.len / view.itemsize;
        if (n > 0 && mask == NULL) {
            mask = (uint8_t *)calloc((size_t)c->n_distinct + 1, 1);
            if (mask == NULL) {
                PyBuffer_Release(&view);
                PyErr_NoMemory();
                goto fail;
            }
        }
        int bad = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t p = view.itemsize == 8 ? ((const int64_t *)view.buf)[i] : ((const int32_t *)view.buf)[i];
            if ((uint64_t)p >= (uint64_t)c->n_distinct) {
                bad = 1;
                break;
            }
            mask[p] = 1;
        }
        PyBuffer_Release(&view);
        if (bad) {
            PyErr_SetString(PyExc_ValueError, "hit position beyond the column's distinct values");
            goto fail;
        }
    }
    return mask == NULL ? NO_HITS : mask;
fail:
    free(mask);
    return NULL;
}

/* Ask the resolver for something (method name, then a slot and optionally bytes); -1 on error. */
static int ask(Batch *self, const char *method, Py_ssize_t slot, PyObject *codes) {
    PyObject *answer = codes == NULL ? PyObject_CallMethod(self->resolver, method, "n", slot)
                                     : PyObject_CallMethod(self->resolver, method, "nO", slot, codes);
    if (answer == NULL) return -1;
    Py_DECREF(answer);
    return 0;
}

/* A column slot, loaded through the resolver on first use (NULL with an error set on failure). */
static Column *column_at(Batch *self, int32_t slot) {
    Column *c = &self->columns[slot];
    if (c->state == COL_UNLOADED) {
        if (ask(self, "load_column", slot, NULL) < 0) return NULL;
        if (c->state == COL_UNLOADED) {
            PyErr_SetString(PyExc_RuntimeError, "resolver.load_column did not set the column");
            return NULL;
        }
    }
    return c;
}

/* Evaluate node i of a program on n rows: res[k] = 1 when it holds on rows[k], else 0.
 * Node at a time over shrinking row lists (and: the rows still true, or: the rows still false):
 * the rows reaching each node are exactly those of a per-row short-circuit evaluation. Returns -1
 * with a Python error set on failure. */
FAST_POPCOUNT static int eval_rows(Batch *self, const int32_t *prog, Py_ssize_t i, const int64_t *rows, Py_ssize_t n, uint8_t *res) {
    const int32_t op = prog[3 * i], arg = prog[3 * i + 1];
    switch (op) {
    case OP_AND:
    case OP_OR: {
        /* survivors: rows whose outcome is still open (true so far for and, false so far for or) */
        const uint8_t keep = op == OP_AND;
        memset(res, keep, (size_t)n);
        if (arg == 0 || n == 0) return 0;
        /* one block: the surviving rows, their positions in this node's rows, and the answers */
        int64_t *block = (int64_t *)malloc((size_t)n * (2 * sizeof(int64_t) + 1));
        if (block == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        int64_t *live = block, *where = block + n;
        uint8_t *sub = (uint8_t *)(block + 2 * n);
        Py_ssize_t m = n, child = i + 1;
        const int64_t *current = rows;
        for (int32_t k = 0; k < arg && m > 0; k++) {
            if (eval_rows(self, prog, child, current, m, sub) < 0) {
                free(block);
                return -1;
            }
            Py_ssize_t j = 0;
            if (current == rows) {
                for (Py_ssize_t t = 0; t < m; t++) {
                    live[j] = current[t];
                    where[j] = t;
                    j += sub[t] == keep;
                }
            } else {
                for (Py_ssize_t t = 0; t < m; t++) {
                    live[j] = current[t];
                    where[j] = where[t];
                    j += sub[t] == keep;
                }
            }
            m = j;
            current = live;
            child += prog[3 * child + 2];
        }
        /* rows that left the list were settled: their answer is !keep; survivors keep keep */
        memset(res, !keep, (size_t)n);
        for (Py_ssize_t t = 0; t < m; t++) res[where[t]] = keep; /* (the first child ran: current is live) */
        free(block);
        return 0;
    }
    case OP_NOT: {
        if (eval_rows(self, prog, i + 1, rows, n, res) < 0) return -1;
        for (Py_ssize_t k = 0; k < n; k++) res[k] = !res[k];
        return 0;
    }
    case OP_CONST:
        memset(res, arg ? 1 : 0, (size_t)n);
        return 0;
    case OP_MASK: {
        Column *c = column_at(self, self->mask_col[arg]);
        if (c == NULL) return -1;
        if (c->state == COL_ABSENT) {
            memset(res, 0, (size_t)n);
            return 0;
        }
        uint8_t *mask = self->masks[arg];
        if (mask == NULL) {
            mask = build_mask(self, arg, c);
            if (mask == NULL) return -1;
            self->masks[arg] = mask;
        }
        if (mask == NO_HITS) {
            memset(res, 0, (size_t)n);
            return 0;
        }
        for (Py_ssize_t k = 0; k < n; k++) res[k] = mask[lookup(c, rows[k])];
        return 0;
    }
    case OP_EXISTS:
    case OP_ISNULL: {
        Column *c = column_at(self, arg);
        if (c == NULL) return -1;
        const uint8_t when_null = op == OP_ISNULL;
        if (c->state == COL_ABSENT) {
            memset(res, when_null, (size_t)n);
            return 0;
        }
        for (Py_ssize_t k = 0; k < n; k++) res[k] = lookup(c, rows[k]) == c->n_distinct ? when_null : !when_null;
        return 0;
    }
    case OP_LAZY: {
        Column *c = column_at(self, self->lazy_col[arg]);
        if (c == NULL) return -1;
        if (c->state == COL_ABSENT) {
            memset(res, 0, (size_t)n);
            return 0;
        }
        int64_t *codes = (int64_t *)malloc(((size_t)n + 1) * sizeof(int64_t));
        if (codes == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        /* the codes whose answer is unknown, asked at once (repeats allowed: Python drops them) */
        const int8_t *answers = self->lazy_set[arg] ? (const int8_t *)self->lazy_bufs[arg].buf : NULL;
        Py_ssize_t n_unknown = 0;
        for (Py_ssize_t k = 0; k < n; k++) {
            int64_t code = lookup(c, rows[k]);
            codes[k] = code;
            n_unknown += answers == NULL || answers[code] < 0;
        }
        if (n_unknown) {
            PyObject *asked = PyBytes_FromStringAndSize(NULL, n_unknown * 8);
            if (asked == NULL) {
                free(codes);
                return -1;
            }
            int64_t *out = (int64_t *)PyBytes_AS_STRING(asked);
            Py_ssize_t j = 0;
            for (Py_ssize_t k = 0; k < n; k++)
                if (answers == NULL || answers[codes[k]] < 0) out[j++] = codes[k];
            int failed = ask(self, "answer", arg, asked);
            Py_DECREF(asked);
            if (failed < 0) {
                free(codes);
                return -1;
            }
            answers = self->lazy_set[arg] ? (const int8_t *)self->lazy_bufs[arg].buf : NULL;
            int missing = answers == NULL;
            for (Py_ssize_t k = 0; k < n && !missing; k++) missing = answers[codes[k]] < 0;
            if (missing) {
                free(codes);
                PyErr_SetString(PyExc_RuntimeError, "resolver.answer left values unanswered");
                return -1;
            }
        }
        for (Py_ssize_t k = 0; k < n; k++) res[k] = answers[codes[k]] > 0;
        free(codes);
        return 0;
    }
    case OP_ROWS: {
        if (!self->row_set[arg]) {
            if (ask(self, "load_row_mask", arg, NULL) < 0) return -1;
            if (!self->row_set[arg]) {
                PyErr_SetString(PyExc_RuntimeError, "resolver.load_row_mask did not set the mask");
                return -1;
            }
        }
        const uint8_t *flags = (const uint8_t *)self->row_bufs[arg].buf;
        for (Py_ssize_t k = 0; k < n; k++) res[k] = (uint64_t)rows[k] < (uint64_t)self->n_rows && flags[rows[k]] != 0;
        return 0;
    }
    default:
        PyErr_SetString(PyExc_ValueError, "unknown program operation");
        return -1;
    }
}

static int check_program(const int32_t *prog, Py_ssize_t n, Batch *self) {
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t op = prog[3 * i], arg = prog[3 * i + 1], size = prog[3 * i + 2];
        if (size < 1 || i + size > n) return -1;
        switch (op) {
        case OP_AND:
        case OP_OR: {
            Py_ssize_t child = i + 1, end = i + size;
            for (int32_t k = 0; k < arg; k++) {
                if (child >= end || prog[3 * child + 2] < 1) return -1; /* children stay inside the node */
                child += prog[3 * child + 2];
            }
            if (arg < 0 || child != end) return -1;
            break;
        }
        case OP_NOT:
            if (size < 2 || 1 + prog[3 * (i + 1) + 2] != size) return -1;
            break;
        case OP_CONST:
            if (size != 1) return -1;
            break;
        case OP_MASK:
            if (size != 1 || arg < 0 || arg >= self->n_masks) return -1;
            break;
        case OP_EXISTS:
        case OP_ISNULL:
            if (size != 1 || arg < 0 || arg >= self->n_columns) return -1;
            break;
        case OP_LAZY:
            if (size != 1 || arg < 0 || arg >= self->n_lazy) return -1;
            break;
        case OP_ROWS:
            if (size != 1 || arg < 0 || arg >= self->n_row_masks) return -1;
            break;
        default:
            return -1;
        }
    }
    return n > 0 && prog[2] == n ? 0 : -1;
}

PyDoc_STRVAR(evaluate_doc,
             "evaluate(program, rows, wide_rows) -> bytes\n\n"
             "The rows (int32, or int64 when wide_rows) where a program (int32 triples op, argument,\n"
             "subtree size) holds, as bytes of int64 in input order.");

static PyObject *Batch_evaluate(Batch *self, PyObject *args) {
    PyObject *prog_obj, *rows_obj;
    int wide_rows;
    if (!PyArg_ParseTuple(args, "SOp", &prog_obj, &rows_obj, &wide_rows)) return NULL;
    if (self->columns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Batch not initialised");
        return NULL;
    }
    Py_INCREF(prog_obj); /* the resolver runs Python code meanwhile: keep the program alive */
    const int32_t *prog = (const int32_t *)PyBytes_AS_STRING(prog_obj);
    Py_ssize_t n_nodes = PyBytes_GET_SIZE(prog_obj) / 12;
    PyObject *matched = NULL;
    int64_t *wide = NULL;
    uint8_t *res = NULL;
    Py_buffer rows = {0};
    if (PyBytes_GET_SIZE(prog_obj) % 12 || check_program(prog, n_nodes, self) < 0) {
        PyErr_SetString(PyExc_ValueError, "malformed program");
        goto done;
    }
    if (get_buffer(rows_obj, &rows, "rows") < 0) goto done;
    Py_ssize_t n = rows.len / (wide_rows ? 8 : 4);
    const int64_t *row_at = (const int64_t *)rows.buf;
    if (!wide_rows) {
        wide = (int64_t *)malloc(((size_t)n + 1) * sizeof(int64_t));
        if (wide != NULL)
            for (Py_ssize_t k = 0; k < n; k++) wide[k] = ((const int32_t *)rows.buf)[k];
        row_at = wide;
    }
    res = (uint8_t *)malloc((size_t)n + 1);
    if (res == NULL || row_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (eval_rows(self, prog, 0, row_at, n, res) < 0) goto done;
    Py_ssize_t n_out = 0;
    for (Py_ssize_t k = 0; k < n; k++) n_out += res[k];
    matched = PyBytes_FromStringAndSize(NULL, n_out * 8);
    if (matched == NULL) goto done;
    int64_t *out = (int64_t *)PyBytes_AS_STRING(matched);
    for (Py_ssize_t k = 0, j = 0; k < n; k++)
        if (res[k]) out[j++] = row_at[k];
done:
    free(res);
    free(wide);
    if (rows.obj != NULL) PyBuffer_Release(&rows);
    Py_DECREF(prog_obj);
    return matched;
}

static int cmp_int64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static inline int64_t int_at(const Py_buffer *view, Py_ssize_t i) {
    return view->itemsize == 8 ? ((const int64_t *)view->buf)[i] : (int64_t)((const int32_t *)view->buf)[i];
}

static int get_ints(PyObject *obj, Py_buffer *view, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != 4 && view->itemsize != 8) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must be int32 or int64", what);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(gather_rows_doc,
             "gather_rows(n_rows, parts, group_of_row, selected_groups) -> bytes\n\n"
             "Sorted distinct rows (int64) of a batch of n_rows that hold one of some distinct values of\n"
             "some columns and whose group is selected. parts: (order, offsets, positions) per column:\n"
             "the column's rows grouped by value (order[offsets[v]:offsets[v+1]] hold value v) and the\n"
             "values wanted. group_of_row: int64 per row; selected_groups: one byte per group.");

static PyObject *calgebra_gather_rows(PyObject *module, PyObject *args) {
    (void)module;
    long long n_rows;
    PyObject *parts, *key_obj, *selected_obj;
    if (!PyArg_ParseTuple(args, "LO!OO", &n_rows, &PyList_Type, &parts, &key_obj, &selected_obj)) return NULL;
    Py_buffer key = {0}, selected = {0};
    PyObject *result = NULL;
    int64_t *found = NULL;
    uint64_t *bits = NULL;
    Py_ssize_t n_found = 0, cap = 0;
    if (n_rows < 0) {
        PyErr_SetString(PyExc_ValueError, "n_rows < 0");
        return NULL;
    }
    if (get_buffer(key_obj, &key, "group_of_row") < 0) return NULL;
    if (get_buffer(selected_obj, &selected, "selected_groups") < 0) goto done;
    if (key.len / 8 < n_rows) {
        PyErr_SetString(PyExc_ValueError, "group_of_row must hold an int64 per row");
        goto done;
    }
    const int64_t *group_of = (const int64_t *)key.buf;
    const uint8_t *chosen = (const uint8_t *)selected.buf;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(parts); k++) {
        PyObject *part = PyList_GET_ITEM(parts, k);
        PyObject *order_obj, *offsets_obj, *positions_obj;
        if (!PyArg_ParseTuple(part, "OOO", &order_obj, &offsets_obj, &positions_obj)) goto done;
        Py_buffer order, offsets, positions;
        if (get_ints(order_obj, &order, "order") < 0) goto done;
        if (get_ints(offsets_obj, &offsets, "offsets") < 0) {
            PyBuffer_Release(&order);
            goto done;
        }
        if (get_ints(positions_obj, &positions, "positions") < 0) {
            PyBuffer_Release(&order);
            PyBuffer_Release(&offsets);
            goto done;
        }
        Py_ssize_t n_order = order.len / order.itemsize, n_values = offsets.len / offsets.itemsize - 1;
        Py_ssize_t n_positions = positions.len / positions.itemsize;
        int bad = 0;
        for (Py_ssize_t i = 0; i < n_positions && !bad; i++) {
            int64_t v = int_at(&positions, i);
            if (v < 0 || v >= n_values) {
                bad = 1;
                break;
            }
            int64_t first = int_at(&offsets, v), last = int_at(&offsets, v + 1);
            if (first < 0 || last > n_order || first > last) {
                bad = 1;
                break;
            }
            if (n_found + (last - first) > cap) {
                Py_ssize_t grown_cap = cap ? cap : 256;
                while (grown_cap < n_found + (last - first)) grown_cap *= 2;
                int64_t *grown = (int64_t *)realloc(found, (size_t)grown_cap * sizeof(int64_t));
                if (grown == NULL) {
                    bad = 2;
                    break;
                }
                found = grown;
                cap = grown_cap;
            }
            for (int64_t j = first; j < last; j++) {
                int64_t row = int_at(&order, j);
                if ((uint64_t)row >= (uint64_t)n_rows || (uint64_t)group_of[row] >= (uint64_t)selected.len) {
                    bad = 1;
                    break;
                }
                found[n_found] = row;
                n_found += chosen[group_of[row]] != 0;
            }
        }
        PyBuffer_Release(&order);
        PyBuffer_Release(&offsets);
        PyBuffer_Release(&positions);
        if (bad == 2) {
            PyErr_NoMemory();
            goto done;
        }
        if (bad) {
            PyErr_SetString(PyExc_ValueError, "position, offset, row or group out of range");
            goto done;
        }
    }
    /* sorted and distinct: a sort for few rows, else a bitmap of the batch's rows read in order */
    Py_ssize_t n_words = (Py_ssize_t)((n_rows + 63) / 64), n_out = 0;
    if (n_found * 8 < n_words) {
        if (n_found > 1) qsort(found, (size_t)n_found, sizeof(int64_t), cmp_int64);
        for (Py_ssize_t i = 0; i < n_found; i++)
            if (i == 0 || found[i] != found[i - 1]) found[n_out++] = found[i];
    } else {
        bits = (uint64_t *)calloc((size_t)n_words + 1, sizeof(uint64_t));
        if (bits == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n_found; i++) bits[found[i] >> 6] |= (uint64_t)1 << (found[i] & 63);
        for (Py_ssize_t w = 0; w < n_words; w++) {
            uint64_t word = bits[w];
            while (word) {
                found[n_out++] = (int64_t)w * 64 + __builtin_ctzll(word);
                word &= word - 1;
            }
        }
    }
    result = PyBytes_FromStringAndSize((const char *)found, n_out * 8);
done:
    free(found);
    free(bits);
    PyBuffer_Release(&key);
    if (selected.obj != NULL) PyBuffer_Release(&selected);
    return result;
}

PyDoc_STRVAR(row_groups_doc,
             "row_groups(codes, valid_rows, n_distinct, n_rows) -> (order, offsets)\n\n"
             "A column's rows grouped by value (a counting sort): codes (int64) of the rows valid_rows\n"
             "(int32/int64, None: every row). order (bytes of int32, int64 when n_rows >= 2**31): the\n"
             "rows, value by value, ascending within a value; offsets (bytes of n_distinct + 1 int64):\n"
             "order[offsets[v]:offsets[v + 1]] hold value v.");

static PyObject *calgebra_row_groups(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *codes_obj, *valid_obj;
    Py_ssize_t n_distinct;
    long long n_rows;
    if (!PyArg_ParseTuple(args, "OOnL", &codes_obj, &valid_obj, &n_distinct, &n_rows)) return NULL;
    if (n_distinct < 0 || n_rows < 0) {
        PyErr_SetString(PyExc_ValueError, "n_distinct and n_rows must be >= 0");
        return NULL;
    }
    Py_buffer codes = {0}, valid = {0};
    PyObject *order = NULL, *offsets = NULL, *result = NULL;
    int64_t *next = NULL;
    if (get_buffer(codes_obj, &codes, "codes") < 0) return NULL;
    Py_ssize_t n = codes.len / 8;
    int has_valid = valid_obj != Py_None;
    if (has_valid) {
        if (get_ints(valid_obj, &valid, "valid_rows") < 0) goto done;
        if (valid.len / valid.itemsize != n) {
            PyErr_SetString(PyExc_ValueError, "valid_rows and codes differ in length");
            goto done;
        }
    }
    const int64_t *code = (const int64_t *)codes.buf;
    int wide = n_rows > INT32_MAX;
    offsets = PyBytes_FromStringAndSize(NULL, (n_distinct + 1) * 8);
    order = PyBytes_FromStringAndSize(NULL, n * (wide ? 8 : 4));
    next = (int64_t *)calloc((size_t)n_distinct + 1, sizeof(int64_t));
    if (offsets == NULL || order == NULL || next == NULL) {
        if (next == NULL) PyErr_NoMemory();
        goto done;
    }
    int64_t *offset = (int64_t *)PyBytes_AS_STRING(offsets);
    int bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint64_t v = (uint64_t)code[i];
        bad |= v >= (uint64_t)n_distinct;
        next[v < (uint64_t)n_distinct ? v : (uint64_t)n_distinct]++;
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "code out of range");
        goto done;
    }
    int64_t total = 0;
    for (Py_ssize_t v = 0; v < n_distinct; v++) {
        offset[v] = total;
        total += next[v];
        next[v] = offset[v];
    }
    offset[n_distinct] = total;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t row = has_valid ? int_at(&valid, i) : (int64_t)i;
        if ((uint64_t)row >= (uint64_t)n_rows) {
            bad = 1;
            break;
        }
        const int64_t at = next[code[i]]++;
        if (wide)
            ((int64_t *)PyBytes_AS_STRING(order))[at] = row;
        else
            ((int32_t *)PyBytes_AS_STRING(order))[at] = (int32_t)row;
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "row beyond n_rows");
        goto done;
    }
    result = PyTuple_Pack(2, order, offsets);
done:
    free(next);
    Py_XDECREF(order);
    Py_XDECREF(offsets);
    PyBuffer_Release(&codes);
    if (valid.obj != NULL) PyBuffer_Release(&valid);
    return result;
}

static inline uint64_t mix64(uint64_t x) { /* a 64-bit finaliser (splitmix64) */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

PyDoc_STRVAR(group_rows_doc,
             "group_rows(n_rows, columns) -> (group_of_row, first_rows, order, offsets) | None\n\n"
             "Rows grouped by their combination of values of some columns: columns holds (valid_rows\n"
             "(int32/int64, None: every row), codes (int64), n_distinct) each, a row without a value\n"
             "counting as value n_distinct. Groups are numbered by first row; all results are bytes of\n"
             "int64: each row's group, each group's first row, the rows group by group (ascending) and\n"
             "offsets per group. None when the combinations do not fit in 62 bits.");

static PyObject *calgebra_group_rows(PyObject *module, PyObject *args) {
    (void)module;
    long long n_rows;
    PyObject *columns;
    if (!PyArg_ParseTuple(args, "LO!", &n_rows, &PyList_Type, &columns)) return NULL;
    if (n_rows < 0) {
        PyErr_SetString(PyExc_ValueError, "n_rows < 0");
        return NULL;
    }
    /* the combination of a row's values as one mixed-radix number */
    double span = 1.0;
    for (Py_ssize_t c = 0; c < PyList_GET_SIZE(columns); c++) {
        PyObject *item = PyList_GET_ITEM(columns, c);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "columns holds (valid_rows, codes, n_distinct) tuples");
            return NULL;
        }
        long long n_distinct = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 2));
        if (n_distinct < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "n_distinct < 0");
            return NULL;
        }
        span *= (double)n_distinct + 1.0;
    }
    if (span > 4.0e18) Py_RETURN_NONE;
    PyObject *group_bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n_rows * 8);
    PyObject *result = NULL, *first_bytes = NULL, *order_bytes = NULL, *offset_bytes = NULL;
    int64_t *key = NULL, *table_key = NULL, *first = NULL, *next = NULL;
    int64_t *table_group = NULL;
    if (group_bytes == NULL) return NULL;
    int64_t *group = (int64_t *)PyBytes_AS_STRING(group_bytes);
    key = (int64_t *)calloc((size_t)n_rows + 1, sizeof(int64_t));
    if (key == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t c = 0; c < PyList_GET_SIZE(columns); c++) {
        PyObject *item = PyList_GET_ITEM(columns, c);
        int64_t n_distinct = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 2));
        int64_t width = n_distinct + 1;
        PyObject *valid_obj = PyTuple_GET_ITEM(item, 0);
        Py_buffer codes, valid = {0};
        if (get_buffer(PyTuple_GET_ITEM(item, 1), &codes, "codes") < 0) goto done;
        Py_ssize_t n_codes = codes.len / 8;
        const int64_t *code = (const int64_t *)codes.buf;
        int bad = 0;
        if (valid_obj == Py_None) {
            if (n_codes < n_rows) bad = 1;
            for (int64_t r = 0; r < n_rows && !bad; r++) {
                uint64_t v = (uint64_t)code[r];
                key[r] = key[r] * width + (int64_t)(v < (uint64_t)n_distinct ? v : (uint64_t)n_distinct);
            }
        } else {
            if (get_ints(valid_obj, &valid, "valid_rows") < 0) {
                PyBuffer_Release(&codes);
                goto done;
            }
            if (valid.len / valid.itemsize != n_codes) bad = 1;
            for (int64_t r = 0; r < n_rows && !bad; r++) key[r] = key[r] * width + n_distinct;
            for (Py_ssize_t j = 0; j < n_codes && !bad; j++) {
                int64_t r = int_at(&valid, j);
                uint64_t v = (uint64_t)code[j];
                if ((uint64_t)r >= (uint64_t)n_rows) {
                    bad = 1;
                    break;
                }
                key[r] += (int64_t)(v < (uint64_t)n_distinct ? v : (uint64_t)n_distinct) - n_distinct;
            }
            PyBuffer_Release(&valid);
        }
        PyBuffer_Release(&codes);
        if (bad) {
            PyErr_SetString(PyExc_ValueError, "codes or valid_rows do not fit the batch");
            goto done;
        }
    }
    /* groups by first row: an open-addressing table of keys */
    Py_ssize_t cap = 1024, n_groups = 0, first_cap = 256;
    table_key = (int64_t *)malloc((size_t)cap * sizeof(int64_t));
    table_group = (int64_t *)malloc((size_t)cap * sizeof(int64_t));
    first = (int64_t *)malloc((size_t)first_cap * sizeof(int64_t));
    if (table_key == NULL || table_group == NULL || first == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < cap; i++) table_group[i] = -1;
    for (int64_t r = 0; r < n_rows; r++) {
        const int64_t k = key[r];
        Py_ssize_t slot = (Py_ssize_t)(mix64((uint64_t)k) & (uint64_t)(cap - 1));
        while (table_group[slot] >= 0 && table_key[slot] != k) slot = (slot + 1) & (cap - 1);
        if (table_group[slot] < 0) {
            if (n_groups == first_cap) {
                first_cap *= 2;
                int64_t *grown = (int64_t *)realloc(first, (size_t)first_cap * sizeof(int64_t));
                if (grown == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
                first = grown;
            }
            first[n_groups] = r;
            table_key[slot] = k;
            table_group[slot] = n_groups++;
            if (2 * n_groups > cap) { /* grow: rehash every group's key */
                Py_ssize_t new_cap = cap * 2;
                int64_t *new_key = (int64_t *)malloc((size_t)new_cap * sizeof(int64_t));
                int64_t *new_group = (int64_t *)malloc((size_t)new_cap * sizeof(int64_t));
                if (new_key == NULL || new_group == NULL) {
                    free(new_key);
                    free(new_group);
                    PyErr_NoMemory();
                    goto done;
                }
                for (Py_ssize_t i = 0; i < new_cap; i++) new_group[i] = -1;
                for (Py_ssize_t i = 0; i < cap; i++) {
                    if (table_group[i] < 0) continue;
                    Py_ssize_t at = (Py_ssize_t)(mix64((uint64_t)table_key[i]) & (uint64_t)(new_cap - 1));
                    while (new_group[at] >= 0) at = (at + 1) & (new_cap - 1);
                    new_key[at] = table_key[i];
                    new_group[at] = table_group[i];
                }
                free(table_key);
                free(table_group);
                table_key = new_key;
                table_group = new_group;
                cap = new_cap;
            }
            group[r] = n_groups - 1;
        } else {
            group[r] = table_group[slot];
        }
    }
    first_bytes = PyBytes_FromStringAndSize((const char *)first, n_groups * 8);
    offset_bytes = PyBytes_FromStringAndSize(NULL, (n_groups + 1) * 8);
    order_bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n_rows * 8);
    next = (int64_t *)calloc((size_t)n_groups + 1, sizeof(int64_t));
    if (first_bytes == NULL || offset_bytes == NULL || order_bytes == NULL || next == NULL) {
        if (next == NULL && !PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    int64_t *offset = (int64_t *)PyBytes_AS_STRING(offset_bytes), *order = (int64_t *)PyBytes_AS_STRING(order_bytes);
    for (int64_t r = 0; r < n_rows; r++) next[group[r]]++;
    int64_t total = 0;
    for (Py_ssize_t g = 0; g < n_groups; g++) {
        offset[g] = total;
        total += next[g];
        next[g] = offset[g];
    }
    offset[n_groups] = total;
    for (int64_t r = 0; r < n_rows; r++) order[next[group[r]]++] = r;
    result = PyTuple_Pack(4, group_bytes, first_bytes, order_bytes, offset_bytes);
done:
    free(key);
    free(table_key);
    free(table_group);
    free(first);
    free(next);
    Py_XDECREF(group_bytes);
    Py_XDECREF(first_bytes);
    Py_XDECREF(order_bytes);
    Py_XDECREF(offset_bytes);
    return result;
}

static PyMethodDef module_methods[] = {
    {"gather_rows", calgebra_gather_rows, METH_VARARGS, gather_rows_doc},
    {"row_groups", calgebra_row_groups, METH_VARARGS, row_groups_doc},
    {"group_rows", calgebra_group_rows, METH_VARARGS, group_rows_doc},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Batch_methods[] = {
    {"set_column", (PyCFunction)Batch_set_column, METH_VARARGS, set_column_doc},
    {"set_lazy", (PyCFunction)Batch_set_lazy, METH_VARARGS, set_lazy_doc},
    {"set_row_mask", (PyCFunction)Batch_set_row_mask, METH_VARARGS, set_row_mask_doc},
    {"evaluate", (PyCFunction)Batch_evaluate, METH_VARARGS, evaluate_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Batch_doc,
             "Batch(n_rows, n_columns, mask_col, mask_ptr, mask_lits, lazy_col, hit_map, n_row_masks, resolver,\n"
             "      literal_done)\n\n"
             "One batch's algebra state. Layout (int32 bytes): mask slot k reads column mask_col[k] and\n"
             "unites the hits of literals mask_lits[mask_ptr[k]:mask_ptr[k+1]] (hit_map: literal id ->\n"
             "distinct positions; literal_done: one byte per literal, 0 until its hits are in hit_map,\n"
             "resolver.scan_literal(id) scans it); kernel slot j reads column lazy_col[j]; row-mask\n"
             "slots are set whole.");

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sigma_arrow._calgebra.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Batch_doc,
    .tp_methods = Batch_methods,
    .tp_init = (initproc)Batch_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_calgebra", "Native rule algebra (see engine/native.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__calgebra(void) {
    if (PyType_Ready(&BatchType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
