/*
 * sigma_arrow._cencode: rows of Arrow columns -> JSON Lines, in one C pass.
 *
 * The native fast path of sigma_arrow.sinks.text.encode_jsonl. Python describes each column by its
 * Arrow buffers (sigma_arrow/sinks/text.py, ``_native_field``); this module writes one compact JSON
 * object per row, byte for byte what orjson writes for the same values:
 *
 *   STR/LSTR   UTF-8 strings (int32 / int64 offsets), escaped as orjson escapes them: \" \\ \b \t
 *              \n \f \r, other bytes below 0x20 as \u00xx (lowercase hex), everything else verbatim;
 *   RAW/LRAW   values Python or Arrow already wrote as JSON text (numbers, booleans, anything
 *              orjson had to encode), copied verbatim;
 *   LIST_STR   list<string> (int32 offsets) as a JSON array of strings (null items as null);
 *   NUL        every row null;
 *   STRUCT     a nested object whose null fields are left out (the match record's ``event``).
 *
 * A null value of a top-level field is written as ``null``; a null field of a STRUCT is left out.
 * Every offset is checked against its buffer: malformed input raises ValueError, never crashes.
 *
 * How a STRUCT is written: for each child, the rows holding a value are found a bitmap word at a
 * time, and each row gets the list of its non-null children (with their bytes), so null cells cost
 * nothing. A top-level STRUCT may ``take`` its rows from longer children (match records read their
 * events from the evaluated batch, without a struct being built), and a string/raw child may be
 * sparse (its values belong to a sorted list of rows: a SparseBatch column). A row equal to the one
 * written before it (an event that matched several rules) copies that row's bytes.
 *
 * Written for sigma-arrow; no third-party code. Needs only the CPython headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <unistd.h>
#endif

enum { K_STR = 0, K_LSTR = 1, K_RAW = 2, K_LRAW = 3, K_LIST_STR = 4, K_NUL = 5, K_STRUCT = 6 };

/* ------------------------------------------------------------------ growable buffer */

typedef struct {
    char *p;
    size_t len, cap;
    size_t base; /* bytes already written out to ``fd`` before p[0] (positions below are absolute) */
    int fd;      /* -1: the whole output stays in the buffer */
} Buf;

#define KEEP_BYTES ((size_t)64 << 20) /* a bigger output buffer or arena is freed after the call */

static Buf spare = {NULL, 0, 0, 0, -1}; /* the last call's output buffer (only touched with the GIL held) */

static int buf_reserve(Buf *b, size_t extra) {
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    char *p = (char *)realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

#define FLUSH_BYTES ((size_t)4 << 20) /* with a file descriptor: written out past this (at row ends) */
#define WRITE_FAILED (-3)

/* Write the buffer out to its file descriptor (all of it, retrying short writes); 0 or WRITE_FAILED
   (errno says why). Called without the GIL. */
static int buf_flush(Buf *b) {
#ifdef _WIN32
    errno = ENOSYS;
    return WRITE_FAILED;
#else
    size_t done = 0;
    while (done < b->len) {
        ssize_t n = write(b->fd, b->p + done, b->len - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            return WRITE_FAILED;
        }
        done += (size_t)n;
    }
    b->base += b->len;
    b->len = 0;
    return 0;
#endif
}

/* ------------------------------------------------------------------ columns */

typedef struct Field {
    const char *key; /* '"name":' (empty for none) */
    Py_ssize_t key_len;
    int kind;
    int64_t offset; /* the array's offset into its buffers */
    const uint8_t *valid; /* validity bitmap or NULL (all valid) */
    Py_ssize_t valid_len;
    /* A sparse string/raw child: its values belong to these rows (sorted, distinct), NULL: value i
       is row i's. */
    const uint8_t *sparse_rows; /* int64 */
    Py_ssize_t n_values;
    const uint8_t *offsets; /* int32 / int64 value offsets (list offsets for LIST_STR) */
    Py_ssize_t offsets_len;
    const char *data;
    Py_ssize_t data_len;
    /* LIST_STR: the child string array */
    int64_t c_offset;
    const uint8_t *c_valid;
    const uint8_t *c_offsets;
    Py_ssize_t c_offsets_len, c_valid_len;
    const char *c_data;
    Py_ssize_t c_data_len;
    /* STRUCT */
    struct Field *children;
    Py_ssize_t n_children;
    /* STRUCT, filled by index_struct: each row's non-null children, in field order (present[
       row_start[r] .. row_start[r + 1]]), and where the last written object is in the output (a
       row equal to the one before it copies those bytes instead of encoding them again). */
    int64_t *row_start;
    int32_t *present;
    const char **value; /* per entry of ``present``: a string/raw child's bytes (else unused) */
    int64_t *value_len;
    /* STRUCT of a top-level field: output row r is row take[r] of the children (take_len rows); NULL:
       row r. */
    const uint8_t *take; /* int64 */
    Py_ssize_t source_rows;
    Py_ssize_t prev_row;
    size_t prev_start, prev_len;
} Field;

/* What one call holds: buffer views, and its working memory (from an arena kept between calls, so
   the row indexes of a big batch do not cost fresh pages every time). */
typedef struct {
    Py_buffer *views;
    Py_ssize_t count, cap;
    void **allocated; /* freed by holder_release */
    Py_ssize_t n_allocated, cap_allocated;
    char *arena;
    size_t arena_used, arena_cap, arena_wanted;
} Holder;

static char *spare_arena = NULL; /* the last call's arena (only touched with the GIL held) */
static size_t spare_arena_cap = 0;

static void holder_init(Holder *h) {
    memset(h, 0, sizeof(*h));
    h->arena = spare_arena, h->arena_cap = spare_arena_cap;
    spare_arena = NULL, spare_arena_cap = 0;
}

static void holder_release(Holder *h) {
    for (Py_ssize_t i = 0; i < h->count; i++) PyBuffer_Release(&h->views[i]);
    free(h->views);
    for (Py_ssize_t i = 0; i < h->n_allocated; i++) free(h->allocated[i]);
    free(h->allocated);
    if (h->arena_wanted > h->arena_cap && h->arena_wanted <= KEEP_BYTES) { /* big enough next time */
        free(h->arena);
        h->arena = (char *)malloc(h->arena_wanted);
        h->arena_cap = h->arena != NULL ? h->arena_wanted : 0;
    }
    if (spare_arena == NULL && h->arena_cap <= KEEP_BYTES) {
        spare_arena = h->arena, spare_arena_cap = h->arena_cap;
    } else {
        free(h->arena);
    }
}

/* A block that lives until holder_release (zeroed when ``zero``); NULL when out of memory. */
static void *holder_alloc(Holder *h, size_t size, int zero) {
    size_t need = (size + 15) & ~(size_t)15;
    if (need == 0) need = 16;
    h->arena_wanted += need;
    if (h->arena_used + need <= h->arena_cap) {
        void *block = h->arena + h->arena_used;
        h->arena_used += need;
        if (zero) memset(block, 0, size);
        return block;
    }
    if (h->n_allocated == h->cap_allocated) {
        Py_ssize_t cap = h->cap_allocated ? h->cap_allocated * 2 : 8;
        void **allocated = (void **)realloc(h->allocated, (size_t)cap * sizeof(void *));
        if (allocated == NULL) return NULL;
        h->allocated = allocated;
        h->cap_allocated = cap;
    }
    void *block = zero ? calloc(1, need) : malloc(need);
    if (block != NULL) h->allocated[h->n_allocated++] = block;
    return block;
}

/* Take a contiguous read-only view of ``obj`` (None: NULL, length 0). */
static int take_buffer(Holder *h, PyObject *obj, const void **ptr, Py_ssize_t *len) {
    if (obj == Py_None) {
        *ptr = NULL;
        *len = 0;
        return 0;
    }
    if (h->count == h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 64;
        Py_buffer *views = (Py_buffer *)realloc(h->views, (size_t)cap * sizeof(Py_buffer));
        if (views == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        h->views = views;
        h->cap = cap;
    }
    if (PyObject_GetBuffer(obj, &h->views[h->count], PyBUF_SIMPLE) < 0) return -1;
    *ptr = h->views[h->count].buf;
    *len = h->views[h->count].len;
    h->count++;
    return 0;
}

static int bit(const uint8_t *bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

/* Item ``i`` of an int64 buffer (any alignment). */
static int64_t i64_at(const uint8_t *items, int64_t i) {
    int64_t value;
    memcpy(&value, items + i * 8, 8);
    return value;
}

static int parse_fields(Holder *h, PyObject *list, Py_ssize_t rows, Field **out, Py_ssize_t *n_out);

/* A field: (key, kind, offset, validity, offsets, data, child) where ``child`` is, for LIST_STR,
   (offset, validity, offsets, data) of the string values and, for STRUCT, a list of fields. */
static int parse_field(Holder *h, PyObject *item, Py_ssize_t rows, Field *f) {
    PyObject *key, *valid, *offsets, *data, *child;
    long long offset;
    const void *p;
    Py_ssize_t len;
    memset(f, 0, sizeof(*f));
    if (!PyTuple_Check(item) ||
        !PyArg_ParseTuple(item, "SiLOOOO", &key, &f->kind, &offset, &valid, &offsets, &data, &child))
        goto bad;
    if (offset < 0 || f->kind < K_STR || f->kind > K_STRUCT) goto bad;
    f->offset = offset;
    f->key = PyBytes_AS_STRING(key);
    f->key_len = PyBytes_GET_SIZE(key);
    Py_ssize_t values = rows; /* how many values the buffers hold */
    int simple = f->kind == K_STR || f->kind == K_LSTR || f->kind == K_RAW || f->kind == K_LRAW;
    if (simple && child != Py_None) { /* sparse: the rows that hold the values */
        if (take_buffer(h, child, &p, &len) < 0) return -1;
        if (len % 8 != 0) goto bad;
        f->sparse_rows = (const uint8_t *)p;
        values = len / 8;
        for (Py_ssize_t k = 0; k < values; k++) { /* sorted, distinct, within the rows */
            int64_t row = i64_at(f->sparse_rows, k);
            if (row < (k ? i64_at(f->sparse_rows, k - 1) + 1 : 0) || row >= rows) goto bad;
        }
    }
    f->n_values = values;
    if (take_buffer(h, valid, &p, &len) < 0) return -1;
    f->valid = (const uint8_t *)p;
    f->valid_len = len;
    if (p != NULL && len * 8 < offset + values) goto bad;
    if (f->kind == K_STRUCT) {
        if (!PyList_Check(child)) goto bad;
        f->source_rows = rows;
        if (offsets != Py_None) { /* (take, source rows): the children are longer than the output */
            if (valid != Py_None || !PyLong_Check(data)) goto bad;
            f->source_rows = PyLong_AsSsize_t(data);
            if (f->source_rows < 0 || f->source_rows > INT32_MAX) goto bad;
            if (take_buffer(h, offsets, &p, &len) < 0) return -1;
            if ((size_t)len < (size_t)rows * sizeof(int64_t)) goto bad;
            f->take = (const uint8_t *)p;
            for (Py_ssize_t r = 0; r < rows; r++) {
                int64_t row = i64_at(f->take, r);
                if (row < 0 || row >= f->source_rows) goto bad;
            }
        }
        if (parse_fields(h, child, f->source_rows, &f->children, &f->n_children) < 0) return -1;
        for (Py_ssize_t j = 0; j < f->n_children; j++)
            if (f->children[j].take != NULL) goto bad; /* a take only on top-level fields */
        return 0;
    }
    if (f->kind == K_NUL) return 0;
    if (take_buffer(h, offsets, &p, &len) < 0) return -1;
    f->offsets = (const uint8_t *)p;
    f->offsets_len = len;
    if (take_buffer(h, data, &p, &len) < 0) return -1;
    f->data = p != NULL ? (const char *)p : "";
    f->data_len = len;
    size_t width = (f->kind == K_LSTR || f->kind == K_LRAW) ? 8 : 4;
    if (values > 0 && (f->offsets == NULL || (size_t)f->offsets_len < (size_t)(offset + values + 1) * width))
        goto bad;
    if (f->kind == K_LIST_STR) {
        PyObject *c_valid, *c_offsets, *c_data;
        long long c_offset;
        if (!PyTuple_Check(child) || !PyArg_ParseTuple(child, "LOOO", &c_offset, &c_valid, &c_offsets, &c_data))
            goto bad;
        if (c_offset < 0) goto bad;
        f->c_offset = c_offset;
        if (take_buffer(h, c_valid, &p, &len) < 0) return -1;
        f->c_valid = (const uint8_t *)p;
        f->c_valid_len = len;
        if (take_buffer(h, c_offsets, &p, &len) < 0) return -1;
        f->c_offsets = (const uint8_t *)p;
        f->c_offsets_len = len;
        if (take_buffer(h, c_data, &p, &len) < 0) return -1;
        f->c_data = p != NULL ? (const char *)p : "";
        f->c_data_len = len;
    }
    return 0;
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "_cencode: malformed column description");
    return -1;
}

static int parse_fields(Holder *h, PyObject *list, Py_ssize_t rows, Field **out, Py_ssize_t *n_out) {
    Py_ssize_t n = PyList_GET_SIZE(list);
    Field *fields = (Field *)holder_alloc(h, (size_t)n * sizeof(Field), 1);
    if (fields == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *out = fields;
    *n_out = n;
    for (Py_ssize_t i = 0; i < n; i++)
        if (parse_field(h, PyList_GET_ITEM(list, i), rows, &fields[i]) < 0) return -1;
    return 0;
}

/* 64 bits of a bitmap from bit ``at`` on (bits past the buffer's end read as 0). */
static uint64_t bits64(const uint8_t *bits, Py_ssize_t len, int64_t at) {
    int64_t byte = at >> 3;
    int shift = (int)(at & 7);
    uint64_t lo = 0, hi = 0;
    if (byte + 9 <= len) {
        memcpy(&lo, bits + byte, 8);
        hi = bits[byte + 8];
    } else {
        for (int k = 0; k < 9 && byte + k < len; k++) {
            if (k < 8)
                lo |= (uint64_t)bits[byte + k] << (8 * k);
            else
                hi = bits[byte + k];
        }
    }
    return shift ? (lo >> shift) | (hi << (64 - shift)) : lo;
}

/* The rows (0 .. rows-1) where ``f`` holds a value, among the ``wanted`` ones (a bitmap; NULL: all),
   into ``out`` (and into ``index``, unless NULL, the position of each one's value); returns how many.
   Word by word: null and unwanted rows cost nothing. */
static Py_ssize_t set_rows(const Field *f, Py_ssize_t rows, const uint64_t *wanted, int32_t *out, int32_t *index) {
    Py_ssize_t n = 0;
    if (f->kind == K_NUL) return 0;
    if (f->sparse_rows != NULL) {
        for (Py_ssize_t k = 0; k < f->n_values; k++) {
            int64_t r = i64_at(f->sparse_rows, k);
            if (wanted != NULL && !((wanted[r >> 6] >> (r & 63)) & 1)) continue;
            if (f->valid != NULL && !bit(f->valid, f->offset + k)) continue;
            out[n] = (int32_t)r;
            if (index != NULL) index[n] = (int32_t)k;
            n++;
        }
        return n;
    }
    for (Py_ssize_t r = 0; r < rows; r += 64) {
        uint64_t word = wanted ? wanted[r >> 6] : ~(uint64_t)0;
        if (word && f->valid != NULL) word &= bits64(f->valid, f->valid_len, f->offset + r);
        if (rows - r < 64) word &= ((uint64_t)1 << (rows - r)) - 1;
        while (word) {
            int32_t row = (int32_t)(r + __builtin_ctzll(word));
            out[n] = row;
            if (index != NULL) index[n] = row;
            n++;
            word &= word - 1;
        }
    }
    return n;
}

#define BAD_OFFSETS (-2)

static int value_bounds(const uint8_t *offsets, int wide, int64_t i, Py_ssize_t data_len, int64_t *start,
                        int64_t *end);

/* Build the per-row lists of non-null children of a STRUCT field (and of nested ones): 0, -1 (out
   of memory) or BAD_OFFSETS. */
static int index_struct(Holder *h, Field *f, Py_ssize_t rows) {
    f->prev_row = -1;
    Py_ssize_t m = f->n_children;
    uint64_t *wanted = NULL;
    if (f->take != NULL) { /* only the rows the output takes */
        wanted = (uint64_t *)holder_alloc(h, (size_t)(f->source_rows / 64 + 1) * sizeof(uint64_t), 1);
        if (wanted == NULL) return -1;
        for (Py_ssize_t r = 0; r < rows; r++) {
            int64_t row = i64_at(f->take, r);
            wanted[row >> 6] |= (uint64_t)1 << (row & 63);
        }
        rows = f->source_rows;
    }
    int64_t *row_start = (int64_t *)holder_alloc(h, (size_t)(rows + 1) * sizeof(int64_t), 1);
    int32_t *scratch = (int32_t *)holder_alloc(h, (size_t)rows * sizeof(int32_t), 0);
    int32_t *scratch_index = (int32_t *)holder_alloc(h, (size_t)rows * sizeof(int32_t), 0);
    int64_t *fill = (int64_t *)holder_alloc(h, (size_t)rows * sizeof(int64_t), 0);
    if (row_start == NULL || scratch == NULL || scratch_index == NULL || fill == NULL) return -1;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (f->children[j].kind == K_STRUCT) {
            int status = index_struct(h, &f->children[j], rows);
            if (status < 0) return status;
        }
        Py_ssize_t n = set_rows(&f->children[j], rows, wanted, scratch, NULL);
        for (Py_ssize_t k = 0; k < n; k++) row_start[scratch[k] + 1]++;
    }
    for (Py_ssize_t r = 0; r < rows; r++) row_start[r + 1] += row_start[r];
    int64_t entries = row_start[rows];
    int32_t *present = (int32_t *)holder_alloc(h, (size_t)entries * sizeof(int32_t), 0);
    const char **value = (const char **)holder_alloc(h, (size_t)entries * sizeof(char *), 0);
    int64_t *value_len = (int64_t *)holder_alloc(h, (size_t)entries * sizeof(int64_t), 0);
    if (present == NULL || value == NULL || value_len == NULL) return -1;
    memcpy(fill, row_start, (size_t)rows * sizeof(int64_t));
    for (Py_ssize_t j = 0; j < m; j++) {
        /* Column by column, the values' bounds are read in row order (cache friendly); the rows are
           then written from these lists. */
        const Field *c = &f->children[j];
        int simple = c->kind == K_STR || c->kind == K_LSTR || c->kind == K_RAW || c->kind == K_LRAW;
        int wide = c->kind == K_LSTR || c->kind == K_LRAW;
        Py_ssize_t n = set_rows(c, rows, wanted, scratch, scratch_index);
        for (Py_ssize_t k = 0; k < n; k++) {
            int64_t entry = fill[scratch[k]]++, start, end;
            present[entry] = (int32_t)j;
            if (simple) {
                if (value_bounds(c->offsets, wide, c->offset + scratch_index[k], c->data_len, &start, &end) < 0)
                    return BAD_OFFSETS;
                value[entry] = c->data + start;
                value_len[entry] = end - start;
            }
        }
    }
    f->row_start = row_start;
    f->present = present;
    f->value = value;
    f->value_len = value_len;
    return 0;
}

static int index_fields(Holder *h, Field *fields, Py_ssize_t n, Py_ssize_t rows) {
    for (Py_ssize_t j = 0; j < n; j++) {
        if (fields[j].kind != K_STRUCT) continue;
        int status = index_struct(h, &fields[j], rows);
        if (status < 0) return status;
    }
    return 0;
}

/* ------------------------------------------------------------------ writing */

/* 0: verbatim; 1: two-character escape (table value); 2: \u00xx. */
static unsigned char escape_kind[256];
static char escape_char[256];

static void init_tables(void) {
    for (int c = 0; c < 0x20; c++) escape_kind[c] = 2;
    escape_kind['"'] = 1, escape_char['"'] = '"';
    escape_kind['\\'] = 1, escape_char['\\'] = '\\';
    escape_kind['\b'] = 1, escape_char['\b'] = 'b';
    escape_kind['\t'] = 1, escape_char['\t'] = 't';
    escape_kind['\n'] = 1, escape_char['\n'] = 'n';
    escape_kind['\f'] = 1, escape_char['\f'] = 'f';
    escape_kind['\r'] = 1, escape_char['\r'] = 'r';
}

/* Whether any of the 8 bytes of ``w`` needs escaping (< 0x20, '"' or '\\'); exact, not per byte. */
static int word_needs_escape(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
    uint64_t below = (w - ones * 0x20) & ~w;
    uint64_t zero_quote = (quote - ones) & ~quote, zero_slash = (slash - ones) & ~slash;
    return ((below | zero_quote | zero_slash) & highs) != 0;
}

static int write_string(Buf *b, const char *s, size_t n) {
    if (buf_reserve(b, n * 6 + 2) < 0) return -1; /* worst case: every byte \u00xx */
    char *o = b->p + b->len;
    *o++ = '"';
    size_t run = 0, i = 0;
    while (i < n) {
        if (i + 8 <= n) { /* skip clean words (most strings have nothing to escape) */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!word_needs_escape(w)) {
                i += 8;
                continue;
            }
        }
        size_t stop = i + 8 < n ? i + 8 : n;
        for (; i < stop; i++) {
            unsigned char c = (unsigned char)s[i];
            unsigned char kind = escape_kind[c];
            if (kind == 0) continue;
            memcpy(o, s + run, i - run);
            o += i - run;
            run = i + 1;
            *o++ = '\\';
            if (kind == 1) {
                *o++ = escape_char[c];
            } else {
                static const char hex[] = "0123456789abcdef";
                *o++ = 'u', *o++ = '0', *o++ = '0';
                *o++ = hex[c >> 4], *o++ = hex[c & 15];
            }
        }
    }
    memcpy(o, s + run, n - run);
    o += n - run;
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    return 0;
}

static int write_raw(Buf *b, const char *s, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* Value bounds [start, end) of row ``i`` (offsets already include the array offset); -1: bad. */
static int value_bounds(const uint8_t *offsets, int wide, int64_t i, Py_ssize_t data_len, int64_t *start,
                        int64_t *end) {
    if (wide) {
        int64_t s, e;
        memcpy(&s, offsets + i * 8, 8);
        memcpy(&e, offsets + (i + 1) * 8, 8);
        *start = s, *end = e;
    } else {
        int32_t s, e;
        memcpy(&s, offsets + i * 4, 4);
        memcpy(&e, offsets + (i + 1) * 4, 4);
        *start = s, *end = e;
    }
    return (*start < 0 || *end < *start || *end > data_len) ? -1 : 0;
}

static int is_null(const Field *f, Py_ssize_t row) {
    return f->kind == K_NUL || (f->valid != NULL && !bit(f->valid, f->offset + row));
}

static int write_value(Buf *b, Field *f, Py_ssize_t row);

static int write_key(Buf *b, const Field *f, int first) {
    if (buf_reserve(b, (size_t)f->key_len + 5) < 0) return -1;
    if (!first) b->p[b->len++] = ',';
    memcpy(b->p + b->len, f->key, (size_t)f->key_len);
    b->len += (size_t)f->key_len;
    return 0;
}

/* A top-level object: every field, nulls as null. */
static int write_object(Buf *b, Field *fields, Py_ssize_t n, Py_ssize_t row) {
    if (buf_reserve(b, 1) < 0) return -1;
    b->p[b->len++] = '{';
    for (Py_ssize_t j = 0; j < n; j++) {
        Field *f = &fields[j];
        if (write_key(b, f, j == 0) < 0) return -1;
        if (is_null(f, row)) {
            if (write_raw(b, "null", 4) < 0) return -1;
        } else {
            int status = write_value(b, f, row);
            if (status < 0) return status;
        }
    }
    if (buf_reserve(b, 1) < 0) return -1;
    b->p[b->len++] = '}';
    return 0;
}

/* Whether row ``row`` of a STRUCT holds exactly the values of row ``prev`` (string/raw fields only). */
static int same_object(const Field *f, Py_ssize_t row, Py_ssize_t prev) {
    int64_t a = f->row_start[row], n = f->row_start[row + 1] - a;
    int64_t p = f->row_start[prev];
    if (n != f->row_start[prev + 1] - p) return 0;
    if (memcmp(f->present + a, f->present + p, (size_t)n * sizeof(int32_t)) != 0) return 0;
    for (int64_t k = 0; k < n; k++) {
        int kind = f->children[f->present[a + k]].kind;
        if (kind != K_STR && kind != K_LSTR && kind != K_RAW && kind != K_LRAW) return 0;
        if (f->value_len[a + k] != f->value_len[p + k] ||
            memcmp(f->value[a + k], f->value[p + k], (size_t)f->value_len[a + k]) != 0)
            return 0;
    }
    return 1;
}

/* A STRUCT row as an object without its null fields; the same bytes again when the row equals the
   previous one written (a matched event repeats once per rule it matched). */
static int write_struct(Buf *b, Field *f, Py_ssize_t row) {
    /* (The previous row's bytes may already have been written out: then it is written again.) */
    if (f->prev_row >= 0 && f->prev_start >= b->base &&
        (row == f->prev_row || same_object(f, row, f->prev_row))) {
        if (buf_reserve(b, f->prev_len) < 0) return -1;
        memcpy(b->p + b->len, b->p + (f->prev_start - b->base), f->prev_len);
        b->len += f->prev_len;
        f->prev_row = row;
        f->prev_start = b->base + b->len - f->prev_len;
        return 0;
    }
    size_t start = b->base + b->len;
    if (buf_reserve(b, 1) < 0) return -1;
    b->p[b->len++] = '{';
    int64_t from = f->row_start[row], to = f->row_start[row + 1];
    for (int64_t k = from; k < to; k++) {
        Field *c = &f->children[f->present[k]];
        if (write_key(b, c, k == from) < 0) return -1;
        int status;
        if (c->kind == K_STR || c->kind == K_LSTR)
            status = write_string(b, f->value[k], (size_t)f->value_len[k]);
        else if (c->kind == K_RAW || c->kind == K_LRAW)
            status = write_raw(b, f->value[k], (size_t)f->value_len[k]);
        else
            status = write_value(b, c, row);
        if (status < 0) return status;
    }
    if (buf_reserve(b, 1) < 0) return -1;
    b->p[b->len++] = '}';
    f->prev_row = row;
    f->prev_start = start;
    f->prev_len = b->base + b->len - start;
    return 0;
}

static int write_value(Buf *b, Field *f, Py_ssize_t row) {
    int64_t start, end, i = f->offset + row;
    switch (f->kind) {
    case K_STR:
    case K_LSTR:
    case K_RAW:
    case K_LRAW: {
        int wide = f->kind == K_LSTR || f->kind == K_LRAW;
        if (value_bounds(f->offsets, wide, i, f->data_len, &start, &end) < 0) return BAD_OFFSETS;
        if (f->kind == K_STR || f->kind == K_LSTR) return write_string(b, f->data + start, (size_t)(end - start));
        return write_raw(b, f->data + start, (size_t)(end - start));
    }
    case K_LIST_STR: {
        if (value_bounds(f->offsets, 0, i, INT64_MAX, &start, &end) < 0) return BAD_OFFSETS;
        if (buf_reserve(b, 1) < 0) return -1;
        b->p[b->len++] = '[';
        for (int64_t k = start; k < end; k++) {
            int64_t c = f->c_offset + k, s, e;
            if (k > start) {
                if (buf_reserve(b, 1) < 0) return -1;
                b->p[b->len++] = ',';
            }
            if ((size_t)f->c_offsets_len < (size_t)(c + 2) * 4) return BAD_OFFSETS;
            if (f->c_valid != NULL) {
                if (f->c_valid_len * 8 <= c) return BAD_OFFSETS;
                if (!bit(f->c_valid, c)) {
                    if (write_raw(b, "null", 4) < 0) return -1;
                    continue;
                }
            }
            if (value_bounds(f->c_offsets, 0, c, f->c_data_len, &s, &e) < 0) return BAD_OFFSETS;
            if (write_string(b, f->c_data + s, (size_t)(e - s)) < 0) return -1;
        }
        if (buf_reserve(b, 1) < 0) return -1;
        b->p[b->len++] = ']';
        return 0;
    }
    case K_STRUCT:
        return write_struct(b, f, f->take != NULL ? (Py_ssize_t)i64_at(f->take, row) : row);
    default:
        return write_raw(b, "null", 4);
    }
}

/* ------------------------------------------------------------------ entry point */

PyDoc_STRVAR(encode_doc,
             "encode(rows, fields, skip_nulls, take=None, source_rows=-1, fd=-1, /) -> bytes | int\n\n"
             "One JSON object per row and a newline after each; ``fields`` describe the columns "
             "(see sigma_arrow/sinks/text.py). ``skip_nulls``: leave null fields out of the top-level "
             "object instead of writing null; then ``take`` (int64 buffer) may map each row to a row "
             "of the fields, which have ``source_rows`` rows. ``fd`` >= 0: the lines are written to "
             "that file descriptor as they are made (a few MB at a time, no bytes object) and the "
             "number of bytes written is returned; OSError if writing fails.");

static PyObject *encode(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t rows;
    PyObject *list;
    int skip_nulls;
    PyObject *take = Py_None;
    Py_ssize_t source_rows = -1;
    int fd = -1;
    if (!PyArg_ParseTuple(args, "nO!p|Oni", &rows, &PyList_Type, &list, &skip_nulls, &take, &source_rows, &fd))
        return NULL;
    if (rows < 0) {
        PyErr_SetString(PyExc_ValueError, "_cencode: negative row count");
        return NULL;
    }
    if (rows > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "_cencode: too many rows");
        return NULL;
    }
    Holder holder;
    holder_init(&holder);
    Field top = {0}; /* skip_nulls: the fields as one STRUCT without a key */
    top.kind = K_STRUCT;
    top.source_rows = rows;
    if (take != Py_None) {
        const void *p;
        Py_ssize_t len;
        if (!skip_nulls || source_rows < 0 || source_rows > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "_cencode: take needs skip_nulls and source_rows");
            return NULL;
        }
        if (take_buffer(&holder, take, &p, &len) < 0) {
            holder_release(&holder);
            return NULL;
        }
        top.take = (const uint8_t *)p;
        top.source_rows = source_rows;
        int bad = (size_t)len < (size_t)rows * sizeof(int64_t);
        for (Py_ssize_t r = 0; r < rows && !bad; r++) {
            int64_t row = i64_at(top.take, r);
            bad = row < 0 || row >= source_rows;
        }
        if (bad) {
            holder_release(&holder);
            PyErr_SetString(PyExc_ValueError, "_cencode: take out of bounds");
            return NULL;
        }
    }
    if (parse_fields(&holder, list, top.source_rows, &top.children, &top.n_children) < 0) {
        holder_release(&holder);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < top.n_children && !skip_nulls; j++) {
        if (top.children[j].sparse_rows != NULL) { /* sparse values only inside an object */
            holder_release(&holder);
            PyErr_SetString(PyExc_ValueError, "_cencode: malformed column description");
            return NULL;
        }
    }
    Buf b = spare; /* taken with the GIL held: another thread encoding meanwhile gets its own */
    spare.p = NULL, spare.len = spare.cap = 0;
    b.len = 0;
    b.base = 0;
    b.fd = fd;
    int status = 0, write_errno = 0;
    Py_BEGIN_ALLOW_THREADS
    status = skip_nulls ? index_struct(&holder, &top, rows) : index_fields(&holder, top.children, top.n_children, rows);
    for (Py_ssize_t row = 0; row < rows && status == 0; row++) {
        if (skip_nulls)
            status = write_struct(&b, &top, top.take != NULL ? (Py_ssize_t)i64_at(top.take, row) : row);
        else
            status = write_object(&b, top.children, top.n_children, row);
        if (status == 0) {
            if (buf_reserve(&b, 1) < 0)
                status = -1;
            else
                b.p[b.len++] = '\n';
        }
        if (status == 0 && fd >= 0 && b.len >= FLUSH_BYTES) status = buf_flush(&b);
    }
    if (status == 0 && fd >= 0) status = buf_flush(&b);
    write_errno = errno;
    Py_END_ALLOW_THREADS
    holder_release(&holder);
    PyObject *out = NULL;
    if (status == BAD_OFFSETS)
        PyErr_SetString(PyExc_ValueError, "_cencode: value offsets out of bounds");
    else if (status == WRITE_FAILED) {
        errno = write_errno;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if (status < 0)
        PyErr_NoMemory();
    else if (fd >= 0)
        out = PyLong_FromSize_t(b.base + b.len);
    else
        out = PyBytes_FromStringAndSize(b.p ? b.p : "", (Py_ssize_t)b.len);
    if (spare.p == NULL && b.cap <= KEEP_BYTES) {
        spare = b; /* reused by the next call: no page faults for a buffer the size of the output */
    } else {
        free(b.p);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, encode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cencode", "Native Arrow columns -> JSON Lines (see sinks/text.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__cencode(void) {
    init_tables();
    return PyModule_Create(&module);
}
