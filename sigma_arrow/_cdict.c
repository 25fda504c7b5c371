/* Native column dictionary encoding for the engine's column views (sigma_arrow/engine/columns.py).
 *
 * A batch of flattened logs has ~420 sparse string columns and the engine views every one of them
 * through its distinct values. Doing that with Arrow kernels costs five or six calls per column
 * (validity, non-null positions, compaction, dictionary_encode, index conversion) whose fixed
 * overhead dominates for sparse columns. `encode` does it in one pass over the column's buffers:
 * the rows holding a value, each such row's distinct-value code (first-occurrence order, like
 * Arrow's dictionary_encode) and the distinct values as Arrow string buffers. `ascii_lower`
 * lowercases a data buffer when it is pure ASCII (then byte lengths, hence offsets, are unchanged).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t read_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static const uint64_t P1 = 0x9e3779b185ebca87ULL, P2 = 0xc2b2ae3d27d4eb4fULL;

/* Four independent lanes over 32-byte stripes (the xxHash64 layout): long values such as command
 * lines and script blocks hash at memory speed instead of one multiply chain per 8 bytes. */
static uint64_t hash_bytes(const unsigned char *p, int64_t n) {
    uint64_t h;
    int64_t i = 0;
    if (n >= 32) {
        uint64_t a = P1 + P2, b = P2, c = 0, d = 0 - P1;
        for (; i + 32 <= n; i += 32) {
            a = rotl(a + read_u64(p + i) * P2, 31) * P1;
            b = rotl(b + read_u64(p + i + 8) * P2, 31) * P1;
            c = rotl(c + read_u64(p + i + 16) * P2, 31) * P1;
            d = rotl(d + read_u64(p + i + 24) * P2, 31) * P1;
        }
        h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);
    } else {
        h = P2;
    }
    h ^= (uint64_t)n * P1;
    for (; i + 8 <= n; i += 8) h = rotl(h ^ (read_u64(p + i) * P2), 27) * P1;
    uint64_t tail = 0;
    for (int64_t k = 0; i + k < n; k++) tail |= (uint64_t)p[i + k] << (8 * k);
    h ^= tail * P1;
    return mix(h);
}

static inline int64_t offset_at(const unsigned char *offsets, int wide, int64_t i) {
    if (wide) {
        int64_t v;
        memcpy(&v, offsets + 8 * i, 8);
        return v;
    }
    int32_t v;
    memcpy(&v, offsets + 4 * i, 4);
    return v;
}

/* encode(offsets, data, validity or None, offset, length, set rows, wide)
 *   -> (rows: bytes of int64 or None when every row is set, codes: bytes of int64,
 *       distinct_offsets: bytes of int32 (int64 when wide), distinct_data: bytes) */
static PyObject *encode(PyObject *self, PyObject *args) {
    Py_buffer offsets_view, data_view, validity_view;
    PyObject *validity_obj;
    Py_ssize_t offset, length, n_set;
    int wide;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*Onnnp", &offsets_view, &data_view, &validity_obj, &offset, &length,
                          &n_set, &wide))
        return NULL;
    int has_validity = validity_obj != Py_None;
    if (has_validity && PyObject_GetBuffer(validity_obj, &validity_view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&offsets_view);
        PyBuffer_Release(&data_view);
        return NULL;
    }
    PyObject *result = NULL, *rows_obj = NULL, *codes_obj = NULL, *doff_obj = NULL, *ddata_obj = NULL;
    int64_t *table = NULL;
    int64_t *rows = NULL, *codes = NULL;
    int64_t *value_start = NULL; /* per distinct value: start byte */
    uint64_t *value_end = NULL; /* per distinct value: end byte */
    const int width = wide ? 8 : 4;
    if ((offset + length + 1) * width > offsets_view.len ||
        (has_validity && (offset + length + 7) / 8 > validity_view.len)) {
        PyErr_SetString(PyExc_ValueError, "buffers shorter than the array");
        goto done;
    }
    const unsigned char *off = (const unsigned char *)offsets_view.buf + (size_t)offset * width;
    const unsigned char *data = (const unsigned char *)data_view.buf;
    const unsigned char *bits = has_validity ? (const unsigned char *)validity_view.buf : NULL;
    int64_t n = length;
    /* Sized by the rows holding a value (the caller's count; a sparse column has few). */
    int64_t m = (n_set >= 0 && n_set <= n) ? n_set : n;
    if (!bits) m = n;
    rows = PyMem_RawMalloc(sizeof(int64_t) * (m ? m : 1));
    codes = PyMem_RawMalloc(sizeof(int64_t) * (m ? m : 1));
    value_start = PyMem_RawMalloc(sizeof(int64_t) * (m ? m : 1));
    value_end = PyMem_RawMalloc(sizeof(uint64_t) * (m ? m : 1));
    int64_t capacity = 16;
    while (capacity < 2 * m) capacity <<= 1;
    table = PyMem_RawMalloc(2 * sizeof(int64_t) * capacity);
    if (!rows || !codes || !value_start || !value_end || !table) {
        PyErr_NoMemory();
        goto done;
    }
    int bad = 0;
    int64_t n_rows = 0, n_distinct = 0, distinct_bytes = 0;
    int64_t last_code = -1, last_start = 0, last_len = -1; /* the previous row's value */
    int64_t tries = 0, wins = 0;
    Py_BEGIN_ALLOW_THREADS
    memset(table, 0xff, 2 * sizeof(int64_t) * capacity);
    const uint64_t mask = (uint64_t)capacity - 1;
    const int64_t data_len = data_view.len;
    for (int64_t i = 0; i < n; i++) {
        if (bits) {
            int64_t bit = offset + i;
            if ((bit & 63) == 0 && i + 64 <= n && read_u64(bits + (bit >> 3)) == 0) {
                i += 63; /* 64 unset rows at once: sparse columns are mostly this */
                continue;
            }
            if (!((bits[bit >> 3] >> (bit & 7)) & 1)) continue;
        }
        if (n_rows >= m) {
            bad = 2;
            break;
        }
        int64_t start = offset_at(off, wide, i), end = offset_at(off, wide, i + 1);
        if (start < 0 || end < start || end > data_len) {
            bad = 1;
            break;
        }
        const unsigned char *p = data + start;
        int64_t len = end - start;
        /* Logs repeat a column's value in runs (a provider, a channel, an image): the previous
         * row's value settles those without hashing. */
        if (last_code >= 0 && (tries < 64 || wins * 8 >= tries)) { /* while it keeps paying */
            tries++;
            if (len == last_len && memcmp(data + last_start, p, (size_t)len) == 0) {
                wins++;
                rows[n_rows] = i;
                codes[n_rows] = last_code;
                n_rows++;
                continue;
            }
        }
        uint64_t h = hash_bytes(p, len);
        uint64_t slot = h & mask;
        int64_t code = -1;
        /* A slot holds (hash, code): most probes settle on the slot's own cache line. */
        for (;;) {
            int64_t entry = table[2 * slot + 1];
            if (entry < 0) break;
            if ((uint64_t)table[2 * slot] == h) {
                int64_t s2 = value_start[entry], e2 = (int64_t)value_end[entry];
                if (e2 - s2 == len && memcmp(data + s2, p, (size_t)len) == 0) {
                    code = entry;
                    break;
                }
            }
            slot = (slot + 1) & mask;
        }
        if (code < 0) {
            code = n_distinct++;
            table[2 * slot] = (int64_t)h;
            table[2 * slot + 1] = code;
            value_start[code] = start; /* the distinct value's bytes: [start, end) of data */
            value_end[code] = (uint64_t)end;
            distinct_bytes += len;
        }
        rows[n_rows] = i;
        codes[n_rows] = code;
        n_rows++;
        last_code = code;
        last_start = start;
        last_len = len;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError,
                        bad == 1 ? "string offsets out of range" : "more set rows than the count given");
        goto done;
    }
    if (!wide && distinct_bytes > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "distinct values exceed 2 GiB");
        goto done;
    }
    codes_obj = PyBytes_FromStringAndSize((const char *)codes, (Py_ssize_t)(sizeof(int64_t) * n_rows));
    doff_obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(width * (n_distinct + 1)));
    ddata_obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)distinct_bytes);
    if (!codes_obj || !doff_obj || !ddata_obj) goto done;
    {
        unsigned char *out_off = (unsigned char *)PyBytes_AS_STRING(doff_obj);
        unsigned char *out_data = (unsigned char *)PyBytes_AS_STRING(ddata_obj);
        int64_t position = 0;
        for (int64_t d = 0; d <= n_distinct; d++) {
            if (wide) {
                memcpy(out_off + 8 * d, &position, 8);
            } else {
                int32_t p32 = (int32_t)position;
                memcpy(out_off + 4 * d, &p32, 4);
            }
            if (d == n_distinct) break;
            int64_t s = value_start[d], e = (int64_t)value_end[d];
            memcpy(out_data + position, data + s, (size_t)(e - s));
            position += e - s;
        }
    }
    if (n_rows == n) {
        rows_obj = Py_None;
        Py_INCREF(rows_obj);
    } else {
        rows_obj = PyBytes_FromStringAndSize((const char *)rows, (Py_ssize_t)(sizeof(int64_t) * n_rows));
        if (!rows_obj) goto done;
    }
    result = PyTuple_Pack(4, rows_obj, codes_obj, doff_obj, ddata_obj);
done:
    Py_XDECREF(rows_obj);
    Py_XDECREF(codes_obj);
    Py_XDECREF(doff_obj);
    Py_XDECREF(ddata_obj);
    PyMem_RawFree(table);
    PyMem_RawFree(rows);
    PyMem_RawFree(codes);
    PyMem_RawFree(value_start);
    PyMem_RawFree(value_end);
    PyBuffer_Release(&offsets_view);
    PyBuffer_Release(&data_view);
    if (has_validity) PyBuffer_Release(&validity_view);
    return result;
}

/* ascii_lower(data) -> bytes lowercased, or None when data holds a non-ASCII byte. */
static PyObject *ascii_lower(PyObject *self, PyObject *args) {
    Py_buffer view;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    const unsigned char *in = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    int ascii = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = in[i];
        if (c >= 0x80) {
            ascii = 0;
            break;
        }
        dst[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (!ascii) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

/* group_order(codes, n_groups) -> int64 bytes: the positions of `codes` (native int64, each in
   [0, n_groups)) sorted by code, equal codes in position order: numpy's stable argsort of them, by
   one counting pass instead of a comparison sort. */
static PyObject *group_order(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t n_groups;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n", &view, &n_groups)) return NULL;
    if (view.len % (Py_ssize_t)sizeof(int64_t) != 0 || n_groups < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "group_order: codes must be int64 and n_groups >= 0");
        return NULL;
    }
    Py_ssize_t n = view.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *codes = (const int64_t *)view.buf;
    int64_t *next = (int64_t *)calloc((size_t)n_groups + 1, sizeof(int64_t));
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (next == NULL || out == NULL) {
        free(next);
        Py_XDECREF(out);
        PyBuffer_Release(&view);
        return next == NULL ? PyErr_NoMemory() : NULL;
    }
    int64_t *order = (int64_t *)PyBytes_AS_STRING(out);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t code = codes[i];
        if (code < 0 || code >= n_groups) {
            bad = 1;
            break;
        }
        next[code + 1]++;
    }
    if (!bad) {
        for (Py_ssize_t g = 0; g < n_groups; g++) next[g + 1] += next[g];
        for (Py_ssize_t i = 0; i < n; i++) order[next[codes[i]]++] = i;
    }
    Py_END_ALLOW_THREADS
    free(next);
    PyBuffer_Release(&view);
    if (bad) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, "group_order: a code is outside [0, n_groups)");
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(offsets, data, validity, offset, length, n_set, wide) -> (rows, codes, distinct_offsets, distinct_data)"},
    {"ascii_lower", ascii_lower, METH_VARARGS, "ascii_lower(data) -> lowercased bytes, or None if not ASCII"},
    {"group_order", group_order, METH_VARARGS,
     "group_order(codes, n_groups) -> int64 positions sorted by code (stable), as bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cdict", "Native column dictionary encoding.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cdict(void) { return PyModule_Create(&module); }
