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

/* dict_rows(validity, indices, offset, length, n_set)
 *   -> (rows: bytes of int32, codes: bytes of int32)
 * The rows of an Arrow dictionary column (int32 indices) that hold a value and their codes, in one
 * pass over the validity bitmap (64 rows per word: sparse columns are mostly zero words). This is
 * what a SparseBatch keeps of a Parquet scan's string column; `n_set` is the column's exact count
 * of set rows (length minus null count). */
static PyObject *dict_rows(PyObject *self, PyObject *args) {
    Py_buffer validity_view, indices_view;
    Py_ssize_t offset, length, n_set;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnn", &validity_view, &indices_view, &offset, &length, &n_set))
        return NULL;
    PyObject *rows_obj = NULL, *codes_obj = NULL, *result = NULL;
    if (offset < 0 || length < 0 || length > INT32_MAX || n_set < 0 || n_set > length ||
        (offset + length + 7) / 8 > validity_view.len ||
        (offset + length) * (Py_ssize_t)sizeof(int32_t) > indices_view.len) {
        PyErr_SetString(PyExc_ValueError, "dict_rows: buffers shorter than the array");
        goto done;
    }
    rows_obj = PyBytes_FromStringAndSize(NULL, n_set * (Py_ssize_t)sizeof(int32_t));
    codes_obj = PyBytes_FromStringAndSize(NULL, n_set * (Py_ssize_t)sizeof(int32_t));
    if (!rows_obj || !codes_obj) goto done;
    {
        const unsigned char *bits = (const unsigned char *)validity_view.buf;
        const unsigned char *indices = (const unsigned char *)indices_view.buf + 4 * (size_t)offset;
        int32_t *rows = (int32_t *)PyBytes_AS_STRING(rows_obj);
        int32_t *codes = (int32_t *)PyBytes_AS_STRING(codes_obj);
        int64_t n = length, k = 0, i = 0;
        int bad = 0;
        Py_BEGIN_ALLOW_THREADS
        while (i < n) {
            int64_t bit = offset + i;
            if ((bit & 63) == 0 && i + 64 <= n) {
                uint64_t word = read_u64(bits + (bit >> 3));
                if (word && k + __builtin_popcountll(word) > n_set) {
                    bad = 1;
                    break;
                }
                while (word) {
                    int64_t row = i + __builtin_ctzll(word);
                    rows[k] = (int32_t)row;
                    memcpy(codes + k, indices + 4 * row, 4);
                    k++;
                    word &= word - 1;
                }
                i += 64;
                continue;
            }
            if ((bits[bit >> 3] >> (bit & 7)) & 1) {
                if (k >= n_set) {
                    bad = 1;
                    break;
                }
                rows[k] = (int32_t)i;
                memcpy(codes + k, indices + 4 * i, 4);
                k++;
            }
            i++;
        }
        Py_END_ALLOW_THREADS
        if (bad || k != n_set) {
            PyErr_SetString(PyExc_ValueError, "dict_rows: the validity bitmap disagrees with n_set");
            goto done;
        }
    }
    result = PyTuple_Pack(2, rows_obj, codes_obj);
done:
    Py_XDECREF(rows_obj);
    Py_XDECREF(codes_obj);
    PyBuffer_Release(&validity_view);
    PyBuffer_Release(&indices_view);
    return result;
}

/* One part of `unify`: a string dictionary (int32 offsets from dict_offset, dict_length entries)
 * and int32 codes into it. */
#define UNIFY_AHEAD 8

typedef struct {
    Py_buffer offsets, data, codes;
    Py_ssize_t dict_offset, dict_length, codes_offset, codes_length;
} UnifyPart;

/* unify(parts) with parts a sequence of
 *     (dict_offsets, dict_data, dict_offset, dict_length, codes, codes_offset, codes_length)
 *   -> (offsets: bytes of int32, data: bytes, codes: bytes of int32), or None when the merged
 *      dictionary would pass 2 GiB of string data.
 * Concatenates dictionary-encoded string columns: one dictionary holding every part's entries once,
 * in order of first appearance (part by part, entry by entry: Arrow's DictionaryUnifier order), and
 * the parts' codes, one after another, remapped into it. */
static PyObject *unify(PyObject *self, PyObject *args) {
    PyObject *seq_obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &seq_obj)) return NULL;
    PyObject *seq = PySequence_Fast(seq_obj, "unify: parts must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n_parts = PySequence_Fast_GET_SIZE(seq), parsed = 0;
    UnifyPart *parts = PyMem_Calloc(n_parts ? (size_t)n_parts : 1, sizeof(UnifyPart));
    PyObject *result = NULL, *off_obj = NULL, *data_obj = NULL, *codes_obj = NULL;
    uint64_t *table = NULL; /* slots: hash tag (high 32 bits) | entry id + 1 (0: empty) */
    int32_t *map = NULL;
    if (!parts) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    int64_t total_entries = 0, total_codes = 0, max_map = 0, max_data = 0;
    for (; parsed < n_parts; parsed++) {
        UnifyPart *p = &parts[parsed];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, parsed), "y*y*nny*nn", &p->offsets, &p->data,
                              &p->dict_offset, &p->dict_length, &p->codes, &p->codes_offset,
                              &p->codes_length))
            goto done;
        if (p->dict_offset < 0 || p->dict_length < 0 || p->codes_offset < 0 || p->codes_length < 0 ||
            (p->dict_offset + p->dict_length + 1) * 4 > p->offsets.len ||
            (p->codes_offset + p->codes_length) * 4 > p->codes.len) {
            parsed++;
            PyErr_SetString(PyExc_ValueError, "unify: buffers shorter than the arrays");
            goto done;
        }
        const int32_t *o = (const int32_t *)p->offsets.buf + p->dict_offset;
        int32_t first, last;
        memcpy(&first, o, 4);
        memcpy(&last, o + p->dict_length, 4);
        if (first < 0 || last < first || last > p->data.len) {
            parsed++;
            PyErr_SetString(PyExc_ValueError, "unify: string offsets out of range");
            goto done;
        }
        total_entries += p->dict_length;
        total_codes += p->codes_length;
        max_data += last - first;
        if (p->dict_length > max_map) max_map = p->dict_length;
    }
    if (total_entries > INT32_MAX || total_codes > PY_SSIZE_T_MAX / 4) {
        PyErr_SetString(PyExc_OverflowError, "unify: too many entries");
        goto done;
    }
    if (max_data > INT32_MAX) { /* may need 64-bit offsets: the caller merges those another way */
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    int64_t data_cap = max_data;
    data_obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)data_cap);
    codes_obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(4 * total_codes));
    int32_t *out_off = PyMem_RawMalloc(sizeof(int32_t) * (size_t)(total_entries + 1));
    int64_t capacity = 16;
    while (capacity < 2 * total_entries) capacity <<= 1;
    table = PyMem_RawCalloc((size_t)capacity, sizeof(uint64_t));
    map = PyMem_RawMalloc(sizeof(int32_t) * (size_t)(max_map ? max_map : 1));
    if (!data_obj || !codes_obj || !out_off || !table || !map) {
        PyMem_RawFree(out_off);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    int bad = 0;
    int64_t n_unique = 0, used = 0;
    {
        unsigned char *out_data = (unsigned char *)PyBytes_AS_STRING(data_obj);
        int32_t *out_codes = (int32_t *)PyBytes_AS_STRING(codes_obj);
        int64_t written = 0;
        const uint64_t mask = (uint64_t)capacity - 1;
        Py_BEGIN_ALLOW_THREADS
        out_off[0] = 0;
        for (Py_ssize_t q = 0; q < n_parts && !bad; q++) {
            UnifyPart *p = &parts[q];
            const int32_t *o = (const int32_t *)p->offsets.buf + p->dict_offset;
            const unsigned char *data = (const unsigned char *)p->data.buf;
            for (Py_ssize_t j = 0; j < p->dict_length; j++) { /* offsets checked first: hashed ahead below */
                int32_t start, end;
                memcpy(&start, o + j, 4);
                memcpy(&end, o + j + 1, 4);
                if (start < 0 || end < start || end > p->data.len) {
                    bad = 1;
                    break;
                }
            }
            if (bad) break;
            /* Mostly-unique dictionaries (GUIDs, hashes, command lines) make every probe a cache miss:
             * entries are hashed UNIFY_AHEAD ahead and their slots prefetched. */
            uint64_t ahead[UNIFY_AHEAD];
            for (Py_ssize_t j = 0; j < p->dict_length && j < UNIFY_AHEAD; j++) {
                ahead[j] = hash_bytes(data + o[j], o[j + 1] - o[j]);
                __builtin_prefetch(table + (ahead[j] & mask));
            }
            for (Py_ssize_t j = 0; j < p->dict_length; j++) {
                int32_t start, end;
                memcpy(&start, o + j, 4);
                memcpy(&end, o + j + 1, 4);
                const unsigned char *s = data + start;
                int64_t len = end - start;
                uint64_t h = ahead[j % UNIFY_AHEAD];
                if (j + UNIFY_AHEAD < p->dict_length) {
                    Py_ssize_t next = j + UNIFY_AHEAD;
                    uint64_t later = hash_bytes(data + o[next], o[next + 1] - o[next]);
                    ahead[j % UNIFY_AHEAD] = later;
                    __builtin_prefetch(table + (later & mask));
                }
                uint64_t slot = h & mask;
                const uint64_t tag = h & 0xffffffff00000000ULL;
                int32_t id = -1;
                for (;;) {
                    uint64_t entry = table[slot];
                    if (entry == 0) break;
                    if ((entry & 0xffffffff00000000ULL) == tag) {
                        int32_t other = (int32_t)(entry & 0xffffffffULL) - 1;
                        if (out_off[other + 1] - out_off[other] == len &&
                            memcmp(out_data + out_off[other], s, (size_t)len) == 0) {
                            id = other;
                            break;
                        }
                    }
                    slot = (slot + 1) & mask;
                }
                if (id < 0) {
                    if (used + len > data_cap) {
                        bad = 2;
                        break;
                    }
                    id = (int32_t)n_unique++;
                    table[slot] = tag | (uint64_t)(uint32_t)(id + 1);
                    memcpy(out_data + used, s, (size_t)len);
                    used += len;
                    out_off[id + 1] = (int32_t)used;
                }
                map[j] = id;
            }
            if (bad) break;
            const int32_t *codes = (const int32_t *)p->codes.buf + p->codes_offset;
            for (Py_ssize_t c = 0; c < p->codes_length; c++) {
                int32_t code = codes[c];
                if (code < 0 || code >= p->dict_length) {
                    bad = 3;
                    break;
                }
                out_codes[written++] = map[code];
            }
        }
        Py_END_ALLOW_THREADS
    }
    if (bad == 2) {
        PyMem_RawFree(out_off);
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    if (bad) {
        PyMem_RawFree(out_off);
        PyErr_SetString(PyExc_ValueError,
                        bad == 1 ? "unify: string offsets out of range" : "unify: a code is outside its dictionary");
        goto done;
    }
    off_obj = PyBytes_FromStringAndSize((const char *)out_off, (Py_ssize_t)(4 * (n_unique + 1)));
    PyMem_RawFree(out_off);
    if (!off_obj || _PyBytes_Resize(&data_obj, (Py_ssize_t)used) < 0) goto done;
    result = PyTuple_Pack(3, off_obj, data_obj, codes_obj);
done:
    for (Py_ssize_t q = 0; q < parsed && q < n_parts; q++) {
        if (parts[q].offsets.obj) PyBuffer_Release(&parts[q].offsets);
        if (parts[q].data.obj) PyBuffer_Release(&parts[q].data);
        if (parts[q].codes.obj) PyBuffer_Release(&parts[q].codes);
    }
    PyMem_Free(parts);
    PyMem_RawFree(table);
    PyMem_RawFree(map);
    Py_XDECREF(off_obj);
    Py_XDECREF(data_obj);
    Py_XDECREF(codes_obj);
    Py_DECREF(seq);
    return result;
}

/* ---------------------------------------------------------------- Parquet column chunks
 *
 * decode_chunk reads one Parquet column chunk of a flat string column (dictionary page + data pages
 * v1, dictionary-encoded values, SNAPPY or no compression) straight into what a SparseBatch keeps:
 * the rows holding a value, their dictionary codes and the dictionary. Arrow's reader would build a
 * dense dictionary array first (indices and validity for every row, the dictionary hashed into a
 * memo table and copied twice); wide sparse logs spend most of their decoding there. Anything else
 * (other encodings or codecs, v2 pages, plain-encoded fallback pages, bad data) makes it return
 * None: the caller reads that column with Arrow instead, which also reports real errors. */

typedef struct {
    const unsigned char *p, *end;
    int bad;
} Reader;

/* ZSTD pages (what `sigma-arrow convert` writes) are decompressed by the system's libzstd, when the
 * caller found one: set_zstd gets its ZSTD_decompress and ZSTD_isError (through ctypes), so this
 * module neither links nor loads it itself. Without them ZSTD chunks are declined (Arrow reads them). */
typedef size_t (*ZstdDecompress)(void *, size_t, const void *, size_t);
typedef unsigned (*ZstdIsError)(size_t);
static ZstdDecompress zstd_decompress = NULL;
static ZstdIsError zstd_is_error = NULL;

/* set_zstd(address of ZSTD_decompress, address of ZSTD_isError) */
static PyObject *set_zstd(PyObject *self, PyObject *args) {
    unsigned long long decompress, is_error;
    (void)self;
    if (!PyArg_ParseTuple(args, "KK", &decompress, &is_error)) return NULL;
    if (!decompress || !is_error) {
        zstd_decompress = NULL;
        zstd_is_error = NULL;
    } else {
        zstd_decompress = (ZstdDecompress)(uintptr_t)decompress;
        zstd_is_error = (ZstdIsError)(uintptr_t)is_error;
    }
    Py_RETURN_NONE;
}

static uint64_t rd_varint(Reader *r) {
    uint64_t v = 0;
    int shift = 0;
    while (r->p < r->end && shift < 64) {
        unsigned char b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
        shift += 7;
    }
    r->bad = 1;
    return 0;
}

static int64_t rd_zigzag(Reader *r) {
    uint64_t v = rd_varint(r);
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static void skip_value(Reader *r, int type, int depth);

static void skip_struct(Reader *r, int depth) {
    if (depth > 32) {
        r->bad = 1;
        return;
    }
    while (!r->bad) {
        if (r->p >= r->end) {
            r->bad = 1;
            return;
        }
        unsigned char head = *r->p++;
        if (head == 0) return;
        if ((head >> 4) == 0) rd_zigzag(r); /* long-form field id */
        skip_value(r, head & 0x0f, depth + 1);
    }
}

static void skip_value(Reader *r, int type, int depth) {
    if (depth > 32) { /* nesting no page header has: a malformed one must not exhaust the stack */
        r->bad = 1;
        return;
    }
    switch (type) {
    case 1:
    case 2:
        return; /* booleans live in the field header */
    case 3:
        if (r->p >= r->end) r->bad = 1;
        else r->p++;
        return;
    case 4:
    case 5:
    case 6:
        rd_varint(r);
        return;
    case 7:
        if (r->end - r->p < 8) r->bad = 1;
        else r->p += 8;
        return;
    case 8: {
        uint64_t n = rd_varint(r);
        if ((uint64_t)(r->end - r->p) < n) r->bad = 1;
        else r->p += n;
        return;
    }
    case 9:
    case 10: {
        if (r->p >= r->end) {
            r->bad = 1;
            return;
        }
        unsigned char head = *r->p++;
        uint64_t n = head >> 4;
        if (n == 15) n = rd_varint(r);
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            if ((head & 0x0f) == 1 || (head & 0x0f) == 2) { /* list booleans take a byte each */
                skip_value(r, 3, depth + 1);
            } else {
                skip_value(r, head & 0x0f, depth + 1);
            }
        }
        return;
    }
    case 11: {
        uint64_t n = rd_varint(r);
        if (n == 0) return;
        if (r->p >= r->end) {
            r->bad = 1;
            return;
        }
        unsigned char kv = *r->p++;
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            skip_value(r, kv >> 4, depth + 1);
            skip_value(r, kv & 0x0f, depth + 1);
        }
        return;
    }
    case 12:
        skip_struct(r, depth);
        return;
    default:
        r->bad = 1;
    }
}

typedef struct {
    int32_t type, uncompressed, compressed, num_values, encoding, def_encoding, rep_encoding;
    int has_data, has_dict, has_v2;
} PageHeader;

/* The few fields of a nested header struct (DataPageHeader / DictionaryPageHeader) we read. */
static void read_sub_header(Reader *r, PageHeader *h, int dict) {
    int16_t field = 0;
    while (!r->bad) {
        if (r->p >= r->end) {
            r->bad = 1;
            return;
        }
        unsigned char head = *r->p++;
        if (head == 0) return;
        int type = head & 0x0f;
        field = (head >> 4) ? (int16_t)(field + (head >> 4)) : (int16_t)rd_zigzag(r);
        if (type == 5 && field == 1) h->num_values = (int32_t)rd_zigzag(r);
        else if (type == 5 && field == 2) h->encoding = (int32_t)rd_zigzag(r);
        else if (!dict && type == 5 && field == 3) h->def_encoding = (int32_t)rd_zigzag(r);
        else if (!dict && type == 5 && field == 4) h->rep_encoding = (int32_t)rd_zigzag(r);
        else skip_value(r, type, 1);
    }
}

static void read_page_header(Reader *r, PageHeader *h) {
    memset(h, 0, sizeof(*h));
    h->type = -1;
    int16_t field = 0;
    while (!r->bad) {
        if (r->p >= r->end) {
            r->bad = 1;
            return;
        }
        unsigned char head = *r->p++;
        if (head == 0) return;
        int type = head & 0x0f;
        field = (head >> 4) ? (int16_t)(field + (head >> 4)) : (int16_t)rd_zigzag(r);
        if (type == 5 && field == 1) h->type = (int32_t)rd_zigzag(r);
        else if (type == 5 && field == 2) h->uncompressed = (int32_t)rd_zigzag(r);
        else if (type == 5 && field == 3) h->compressed = (int32_t)rd_zigzag(r);
        else if (type == 12 && field == 5) {
            h->has_data = 1;
            read_sub_header(r, h, 0);
        } else if (type == 12 && field == 7) {
            h->has_dict = 1;
            read_sub_header(r, h, 1);
        } else {
            if (type == 12 && field == 8) h->has_v2 = 1;
            skip_value(r, type, 1);
        }
    }
}

/* Snappy raw block -> out (exactly out_len bytes); 0 on success. out has 8 bytes of slack. */
static int snappy_decompress(const unsigned char *in, int64_t in_len, unsigned char *out, int64_t out_len) {
    Reader r = {in, in + in_len, 0};
    uint64_t declared = rd_varint(&r);
    if (r.bad || (int64_t)declared != out_len) return 1;
    const unsigned char *p = r.p, *end = in + in_len;
    int64_t o = 0;
    while (p < end) {
        unsigned char tag = *p++;
        int64_t len, offset;
        switch (tag & 3) {
        case 0:
            len = tag >> 2;
            if (len >= 60) {
                int extra = (int)len - 59;
                if (end - p < extra) return 1;
                len = 0;
                for (int k = 0; k < extra; k++) len |= (int64_t)p[k] << (8 * k);
                p += extra;
            }
            len += 1;
            if (end - p < len || out_len - o < len) return 1;
            memcpy(out + o, p, (size_t)len);
            p += len;
            o += len;
            continue;
        case 1:
            if (p >= end) return 1;
            len = 4 + ((tag >> 2) & 7);
            offset = ((int64_t)(tag >> 5) << 8) | *p++;
            break;
        case 2:
            if (end - p < 2) return 1;
            len = 1 + (tag >> 2);
            offset = (int64_t)p[0] | ((int64_t)p[1] << 8);
            p += 2;
            break;
        default:
            if (end - p < 4) return 1;
            len = 1 + (tag >> 2);
            offset = (int64_t)p[0] | ((int64_t)p[1] << 8) | ((int64_t)p[2] << 16) | ((int64_t)p[3] << 24);
            p += 4;
            break;
        }
        if (offset <= 0 || offset > o || out_len - o < len) return 1;
        unsigned char *dst = out + o;
        const unsigned char *src = dst - offset;
        if (offset >= 8) {
            /* 8 bytes at a time (the slack absorbs the overrun; sources stay behind dst) */
            for (int64_t k = 0; k < len; k += 8) memcpy(dst + k, src + k, 8);
        } else {
            for (int64_t k = 0; k < len; k++) dst[k] = src[k];
        }
        o += len;
    }
    return o == out_len ? 0 : 1;
}

/* RLE / bit-packed hybrid decoding of `count` values of `width` bits into out (int32); 0 on success. */
static int rle_decode(Reader *r, int width, int64_t count, int32_t *out) {
    int64_t n = 0;
    const int bytes = (width + 7) / 8;
    const uint64_t mask = width >= 32 ? 0xffffffffULL : ((1ULL << width) - 1);
    while (n < count) {
        uint64_t header = rd_varint(r);
        if (r->bad) return 1;
        if (header & 1) {
            int64_t groups = (int64_t)(header >> 1);
            if (groups > (INT64_MAX / 64)) return 1;
            int64_t nbytes = groups * width;
            if (r->end - r->p < nbytes) return 1;
            int64_t take = groups * 8 < count - n ? groups * 8 : count - n;
            const unsigned char *q = r->p;
            uint64_t buf = 0;
            int bits = 0;
            for (int64_t k = 0; k < take; k++) {
                while (bits < width) { /* take * width <= nbytes * 8: stays inside the run */
                    buf |= (uint64_t)*q++ << bits;
                    bits += 8;
                }
                out[n + k] = (int32_t)(buf & mask);
                buf >>= width;
                bits -= width;
            }
            r->p += nbytes;
            n += take;
        } else {
            int64_t run = (int64_t)(header >> 1);
            if (r->end - r->p < bytes) return 1;
            uint32_t value = 0;
            for (int k = 0; k < bytes; k++) value |= (uint32_t)r->p[k] << (8 * k);
            r->p += bytes;
            int64_t take = run < count - n ? run : count - n;
            for (int64_t k = 0; k < take; k++) out[n + k] = (int32_t)value;
            n += take;
        }
    }
    return 0;
}

/* Definition levels (bit width 1: 1 set, 0 null) of `count` rows straight to the set rows (base +
 * position), a 64-row word at a time: sparse columns are mostly runs of nulls. Returns how many
 * rows are set, -1 on bad data. */
static int64_t def_level_rows(Reader *r, int64_t count, int64_t base, int32_t *rows) {
    int64_t n = 0, k = 0;
    while (n < count) {
        uint64_t header = rd_varint(r);
        if (r->bad) return -1;
        if (header & 1) {
            int64_t groups = (int64_t)(header >> 1);
            if (groups > (INT64_MAX / 64) || r->end - r->p < groups) return -1;
            int64_t take = groups * 8 < count - n ? groups * 8 : count - n;
            const unsigned char *p = r->p;
            int64_t i = 0;
            for (; i + 64 <= take; i += 64) {
                uint64_t word;
                memcpy(&word, p + (i >> 3), 8);
                while (word) {
                    rows[k++] = (int32_t)(base + n + i + __builtin_ctzll(word));
                    word &= word - 1;
                }
            }
            for (; i < take; i++)
                if ((p[i >> 3] >> (i & 7)) & 1) rows[k++] = (int32_t)(base + n + i);
            r->p += groups;
            n += take;
        } else {
            int64_t run = (int64_t)(header >> 1);
            if (r->p >= r->end || *r->p > 1) return -1;
            int set = *r->p++;
            int64_t take = run < count - n ? run : count - n;
            if (set)
                for (int64_t j = 0; j < take; j++) rows[k++] = (int32_t)(base + n + j);
            n += take;
        }
    }
    return k;
}

/* A chunk's dictionary as it grows: the dictionary page's entries, then (plain-encoded pages, which
 * writers fall back to when a dictionary gets big) each new value, once, in order of first
 * appearance, as Arrow's dictionary builder does. `table` (hash slots of entry ids) exists once a
 * plain page needs lookups. */
typedef struct {
    int32_t *off;
    unsigned char *data;
    int64_t n, bytes, off_cap, data_cap;
    int32_t *table;
    uint64_t *hashes;
    int64_t table_cap, hashes_cap, hashed; /* entries [0, hashed) have their hash in `hashes` */
} ChunkDict;

static void chunk_dict_free(ChunkDict *d) {
    PyMem_RawFree(d->off);
    PyMem_RawFree(d->data);
    PyMem_RawFree(d->table);
    PyMem_RawFree(d->hashes);
}

static int chunk_dict_grow(void **buffer, int64_t *capacity, int64_t needed, size_t item) {
    if (needed <= *capacity) return 0;
    int64_t cap = *capacity ? *capacity : 1024;
    while (cap < needed) cap *= 2;
    void *grown = PyMem_RawRealloc(*buffer, (size_t)cap * item);
    if (!grown) return 1;
    *buffer = grown;
    *capacity = cap;
    return 0;
}

/* Make room for one more entry in the hash table (built on first use, doubled at half full). */
static int chunk_dict_index(ChunkDict *d) {
    if (d->table && 2 * (d->n + 1) <= d->table_cap) return 0;
    int64_t cap = 1024;
    while (cap < 4 * (d->n + 1)) cap <<= 1;
    PyMem_RawFree(d->table);
    d->table = PyMem_RawMalloc(sizeof(int32_t) * (size_t)cap);
    if (!d->table || chunk_dict_grow((void **)&d->hashes, &d->hashes_cap, d->n + 1, sizeof(uint64_t))) return 1;
    d->table_cap = cap;
    memset(d->table, 0xff, sizeof(int32_t) * (size_t)cap);
    for (int64_t i = 0; i < d->n; i++) {
        uint64_t h = i < d->hashed ? d->hashes[i] : hash_bytes(d->data + d->off[i], d->off[i + 1] - d->off[i]);
        d->hashes[i] = h;
        /* an entry equal to an earlier one (a dictionary page never has any) stays unreachable */
        uint64_t mask = (uint64_t)cap - 1, slot = h & mask;
        int dup = 0;
        while (d->table[slot] >= 0) {
            int32_t other = d->table[slot];
            if (d->hashes[other] == h && d->off[other + 1] - d->off[other] == d->off[i + 1] - d->off[i] &&
                memcmp(d->data + d->off[other], d->data + d->off[i], (size_t)(d->off[i + 1] - d->off[i])) == 0) {
                dup = 1;
                break;
            }
            slot = (slot + 1) & mask;
        }
        if (!dup) d->table[slot] = (int32_t)i;
    }
    d->hashed = d->n;
    return 0;
}

/* The entry id of a value, added at the end when new; -1 when out of memory or past 2 GiB. */
static int64_t chunk_dict_code(ChunkDict *d, const unsigned char *p, int64_t len) {
    if (chunk_dict_index(d)) return -1;
    uint64_t h = hash_bytes(p, len);
    uint64_t mask = (uint64_t)d->table_cap - 1, slot = h & mask;
    for (;;) {
        int32_t id = d->table[slot];
        if (id < 0) break;
        if (d->hashes[id] == h && d->off[id + 1] - d->off[id] == len && memcmp(d->data + d->off[id], p, (size_t)len) == 0)
            return id;
        slot = (slot + 1) & mask;
    }
    if (d->bytes + len > INT32_MAX || d->n + 1 > INT32_MAX / 2 ||
        chunk_dict_grow((void **)&d->off, &d->off_cap, d->n + 2, sizeof(int32_t)) ||
        chunk_dict_grow((void **)&d->data, &d->data_cap, d->bytes + len, 1) ||
        chunk_dict_grow((void **)&d->hashes, &d->hashes_cap, d->n + 1, sizeof(uint64_t)))
        return -1;
    if (d->n == 0) d->off[0] = 0;
    memcpy(d->data + d->bytes, p, (size_t)len);
    d->bytes += len;
    int32_t id = (int32_t)d->n++;
    d->off[id + 1] = (int32_t)d->bytes;
    d->hashes[id] = h;
    d->hashed = d->n;
    d->table[slot] = id;
    return id;
}

/* decode_chunk(chunk, num_rows, max_def, compressed)
 *   -> (rows: bytes of int32 or None when every row is set, codes: bytes of int32,
 *       dictionary offsets: bytes of int32, dictionary data: bytes), or None (not handled here).
 * `chunk`: the column chunk's bytes from its first page on; `compressed`: 0 none, 1 SNAPPY, 2 ZSTD;
 * `max_def`: 0 (required) or 1 (optional, flat). The dictionary is what Arrow's reader builds: the
 * dictionary page's entries, then new values of plain-encoded pages in order of appearance. */
static PyObject *decode_chunk(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t num_rows;
    int max_def, compressed;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nii", &view, &num_rows, &max_def, &compressed)) return NULL;
    PyObject *result = NULL, *rows_obj = NULL, *codes_obj = NULL, *off_obj = NULL, *data_obj = NULL;
    unsigned char *scratch = NULL;
    int32_t *rows = NULL, *codes = NULL;
    ChunkDict dict;
    memset(&dict, 0, sizeof(dict));
    int64_t scratch_cap = 0, row = 0, n_set = 0;
    int ok = 0, seen_dict = 0;
    if (num_rows < 0 || num_rows > INT32_MAX || (max_def != 0 && max_def != 1)) goto unsupported;
    rows = PyMem_RawMalloc(sizeof(int32_t) * (size_t)(num_rows ? num_rows : 1));
    codes = PyMem_RawMalloc(sizeof(int32_t) * (size_t)(num_rows ? num_rows : 1));
    if (!rows || !codes) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    Reader r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len, 0};
    int failed = 0;
    while (row < num_rows && !failed) {
        PageHeader h;
        read_page_header(&r, &h);
        if (r.bad || h.compressed < 0 || h.uncompressed < 0 || r.end - r.p < h.compressed) {
            failed = 1;
            break;
        }
        const unsigned char *body = r.p;
        r.p += h.compressed;
        if (h.type == 1) continue; /* an index page */
        if (h.type != 0 && h.type != 2) { /* v2 data pages are not handled */
            failed = 1;
            break;
        }
        int64_t size = h.uncompressed;
        if (compressed == 2 && (!zstd_decompress || !zstd_is_error)) {
            failed = 1;
            break;
        }
        if (compressed) {
            if (scratch_cap < size + 8) {
                PyMem_RawFree(scratch);
                scratch_cap = size + 8 > 1 << 16 ? size + 8 : 1 << 16;
                scratch = PyMem_RawMalloc((size_t)scratch_cap);
                if (!scratch) {
                    failed = 2;
                    break;
                }
            }
            if (compressed == 2) {
                size_t got = zstd_decompress(scratch, (size_t)size, body, (size_t)h.compressed);
                if (zstd_is_error(got) || (int64_t)got != size) {
                    failed = 1;
                    break;
                }
            } else if (compressed != 1 || snappy_decompress(body, h.compressed, scratch, size)) {
                failed = 1;
                break;
            }
            body = scratch;
        } else if (h.compressed != h.uncompressed) {
            failed = 1;
            break;
        }
        if (h.type == 2) { /* the dictionary: PLAIN byte arrays, before any data page */
            if (!h.has_dict || seen_dict || row > 0 || (h.encoding != 0 && h.encoding != 2) ||
                h.num_values < 0 || (int64_t)h.num_values * 4 > size) { /* 4 length bytes per entry */
                failed = 1;
                break;
            }
            seen_dict = 1;
            if (chunk_dict_grow((void **)&dict.off, &dict.off_cap, (int64_t)h.num_values + 1, sizeof(int32_t)) ||
                chunk_dict_grow((void **)&dict.data, &dict.data_cap, size ? size : 1, 1)) {
                failed = 2;
                break;
            }
            const unsigned char *p = body, *end = body + size;
            dict.off[0] = 0;
            for (int64_t k = 0; k < h.num_values; k++) {
                uint32_t len;
                if (end - p < 4) {
                    failed = 1;
                    break;
                }
                memcpy(&len, p, 4);
                p += 4;
                if ((uint64_t)(end - p) < len) {
                    failed = 1;
                    break;
                }
                memcpy(dict.data + dict.bytes, p, len);
                p += len;
                dict.bytes += len;
                dict.off[k + 1] = (int32_t)dict.bytes;
            }
            dict.n = h.num_values;
            continue;
        }
        /* a v1 data page: [definition levels] then the values of the set rows */
        int plain = h.encoding == 0;
        if (!h.has_data || (!plain && (!seen_dict || (h.encoding != 8 && h.encoding != 2))) || h.num_values < 0 ||
            h.num_values > num_rows - row) {
            failed = 1;
            break;
        }
        Reader page = {body, body + size, 0};
        int64_t values = h.num_values, set_here = values;
        if (max_def == 1) {
            uint32_t len;
            if (h.def_encoding != 3 || size < 4) {
                failed = 1;
                break;
            }
            memcpy(&len, body, 4);
            if ((uint64_t)len > (uint64_t)(size - 4)) {
                failed = 1;
                break;
            }
            Reader lv = {body + 4, body + 4 + len, 0};
            set_here = def_level_rows(&lv, values, row, rows + n_set);
            if (set_here < 0) {
                failed = 1;
                break;
            }
            page.p = body + 4 + len;
        } else {
            for (int64_t k = 0; k < values; k++) rows[n_set + k] = (int32_t)(row + k);
        }
        if (set_here && plain) {
            for (int64_t k = 0; k < set_here; k++) {
                uint32_t len;
                if (page.end - page.p < 4) {
                    failed = 1;
                    break;
                }
                memcpy(&len, page.p, 4);
                page.p += 4;
                if ((uint64_t)(page.end - page.p) < len) {
                    failed = 1;
                    break;
                }
                int64_t code = chunk_dict_code(&dict, page.p, len);
                if (code < 0) {
                    failed = 1; /* out of memory or 2 GiB of values: Arrow reads it */
                    break;
                }
                codes[n_set + k] = (int32_t)code;
                page.p += len;
            }
        } else if (set_here) {
            if (page.p >= page.end) {
                failed = 1;
                break;
            }
            int width = *page.p++;
            if (width > 32 || rle_decode(&page, width, set_here, codes + n_set)) {
                failed = 1;
                break;
            }
            for (int64_t k = 0; k < set_here; k++) {
                if ((uint32_t)codes[n_set + k] >= (uint64_t)dict.n) {
                    failed = 1;
                    break;
                }
            }
        }
        n_set += set_here;
        row += values;
    }
    if (!failed && row != num_rows) failed = 1;
    ok = !failed;
    if (failed == 2) ok = -1;
    Py_END_ALLOW_THREADS
    if (ok < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (!ok) goto unsupported;
    if (n_set == num_rows) {
        rows_obj = Py_None;
        Py_INCREF(rows_obj);
    } else {
        rows_obj = PyBytes_FromStringAndSize((const char *)rows, (Py_ssize_t)(4 * n_set));
    }
    codes_obj = PyBytes_FromStringAndSize((const char *)codes, (Py_ssize_t)(4 * n_set));
    if (dict.n == 0) {
        off_obj = PyBytes_FromStringAndSize("\0\0\0\0", 4);
    } else {
        off_obj = PyBytes_FromStringAndSize((const char *)dict.off, (Py_ssize_t)(4 * (dict.n + 1)));
    }
    data_obj = PyBytes_FromStringAndSize((const char *)dict.data, (Py_ssize_t)dict.bytes);
    if (!rows_obj || !codes_obj || !off_obj || !data_obj) goto done;
    result = PyTuple_Pack(4, rows_obj, codes_obj, off_obj, data_obj);
    goto done;
unsupported:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(rows_obj);
    Py_XDECREF(codes_obj);
    Py_XDECREF(off_obj);
    Py_XDECREF(data_obj);
    PyMem_RawFree(scratch);
    PyMem_RawFree(rows);
    PyMem_RawFree(codes);
    chunk_dict_free(&dict);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(offsets, data, validity, offset, length, n_set, wide) -> (rows, codes, distinct_offsets, distinct_data)"},
    {"ascii_lower", ascii_lower, METH_VARARGS, "ascii_lower(data) -> lowercased bytes, or None if not ASCII"},
    {"group_order", group_order, METH_VARARGS,
     "group_order(codes, n_groups) -> int64 positions sorted by code (stable), as bytes"},
    {"dict_rows", dict_rows, METH_VARARGS,
     "dict_rows(validity, indices, offset, length, n_set) -> (int32 rows, int32 codes) of the set rows"},
    {"decode_chunk", decode_chunk, METH_VARARGS,
     "decode_chunk(chunk, num_rows, max_def, codec) -> (int32 rows or None, int32 codes, dictionary offsets, "
     "data), or None"},
    {"set_zstd", set_zstd, METH_VARARGS, "set_zstd(ZSTD_decompress address, ZSTD_isError address) -> None"},
    {"unify", unify, METH_VARARGS,
     "unify(parts) -> (int32 offsets, data, int32 codes) of dictionary columns merged, or None past 2 GiB"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cdict", "Native column dictionary encoding.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cdict(void) { return PyModule_Create(&module); }
