/*
 * sigma_arrow._cscan: an Aho-Corasick automaton over bytes, scanning Arrow string arrays in place.
 *
 * The native fast path of the engine's literal pass (sigma_arrow/engine/literals.py). An Automaton
 * is built once from patterns (bytes, optionally anchored at the value's start and/or end, each
 * standing for one or more literal numbers). Automaton.scan walks the values of an Arrow string or
 * large_string array straight from its buffers (offsets, data, validity) with the GIL released and
 * returns every distinct (literal, value position) hit, sorted by literal then value.
 *
 * Anchors are two extra symbols, START (256) and END (257), fed before and after each value, so
 * one automaton settles contains / startswith / endswith / equals exactly: bytes 0x01 / 0x02 in a
 * value are plain bytes here, never anchors.
 *
 * Case folding: an automaton built with fold=True (lowercase patterns) reads ASCII letters
 * case-insensitively (uppercase letters share their lowercase symbol class; the skip tables hold
 * every case variant), so uncased columns are scanned as they are, with no lowercased copy.
 * That equals Python's str.lower only for ASCII text: Automaton.scan_folded leaves every value
 * holding a non-ASCII byte unscanned and lists it, and the caller scans those lowercased by Python.
 *
 * Layout (measured on SigmaHQ's ~11.6k CommandLine literals, 84k states, 4 MB):
 *  - states up to DENSE_DEPTH deep, and states with more than DENSE_CHILDREN children, get a complete
 *    transition row over the symbol classes (a DFA row: no failure walk); a small automaton (all
 *    rows within DENSE_ALL_BYTES) gets rows for every state. Symbols used by no pattern form class
 *    0 and lead straight to the root. A row entry leading to a dense state that reports nothing is
 *    that state's row offset, so the scan's common case is one load per byte;
 *  - the other states keep their children (a contiguous id range, the first child's symbol inline)
 *    and a failure link. States are numbered depth first with siblings kept together, so the tail
 *    of a long pattern is a run of neighbouring 16-byte records, and a chain of single children
 *    that report nothing (`run`) is matched by comparing bytes with their consecutive symbols;
 *  - each state knows the first state on its failure chain that reports literals (`emit`), so
 *    reporting costs O(hits); repeats within a value are dropped with a per-literal stamp, and a
 *    counting sort by literal returns the hits sorted (values are walked in order);
 *  - one-byte unanchored patterns stay out of the automaton (every occurrence of such a byte would
 *    report): one pass per value ORs their bit masks (`byte_mask`).
 * At the root the scan skips text where no pattern can start, by the cheapest of (measured on the
 * SigmaHQ literal groups over log values):
 *  - a nibble-mask prefilter (Teddy-like, AVX2 when the CPU has it: 32 positions per step, 8 or 16
 *    buckets over a 4- or 6-byte window) for unanchored literal sets that rarely pass on random
 *    bytes (keywords): it runs over a column's whole data buffer, across value boundaries
 *    ("buffered"), and only the values where it stops are walked;
 *  - Wu-Manber shifts over the last two bytes of a window of m bytes (m = the shortest pattern that
 *    may start mid-value, >= WM_MIN; when no pattern may, the rest of the value is skipped);
 *  - for many long unanchored patterns (hashes, whose 2-byte blocks fill Wu-Manber's table), a
 *    long window shifted by the hash of its last 6 bytes over the whole buffer, the trie followed
 *    from each possible start;
 *  - else a 64 Kbit table of the patterns' first two bytes.
 * Interleaving several values to overlap cache misses was tried twice and lost (1.4-2x).
 *
 * Automaton.scan_many scans many arrays (a keyword view's columns) in one call, value positions
 * running on; rows_at counts a column's rows per hit value in one pass.
 *
 * Written for sigma-arrow; no third-party code. Needs only the CPython headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#else
#define HAVE_AVX2_PATH 0
#endif

#define SYM_START 256
#define SYM_END 257
#define N_SYMBOLS 258
#define DENSE_DEPTH 3 /* default: states this shallow get a complete transition row, and ... */
#ifndef DENSE_ALL_BYTES
#define DENSE_ALL_BYTES (256 * 1024) /* ... every state does when all rows take at most this */
#endif
#ifndef DENSE_CHILDREN
#define DENSE_CHILDREN 2 /* ... states with more children than this */
#endif
#define WM_MIN 4 /* Wu-Manber skipping needs every pattern this long at least */
#define WM_SIZE 4096
#define WM_HASH(b0, b1) ((((unsigned)(b0) << 4) ^ (unsigned)(b1)) & (WM_SIZE - 1))
#define TEDDY_WIDTH 6 /* most bytes of a pattern's start the nibble prefilter tests (4 or 6) */
#define LWM_MIN 16   /* patterns at least this long (all of them) allow the long-window skip ... */
#define LWM_BLOCK 6  /* ... which hashes the window's last 6 bytes ... */
#define LWM_BITS 20  /* ... into a table of 2^20 shifts */
#define TEDDY_WM_LONG 16 /* Wu-Manber windows this long skip faster than the prefilter */
#define TEDDY_SMALL 32 /* patterns up to this many share 8 buckets (one set), more get 16 (two) */
#ifndef TEDDY_MAX_RATE
#define TEDDY_MAX_RATE 0.02 /* use the prefilter when under this share of random positions pass */
#endif

/* Whether the CPU runs AVX2 (set once at import). */
static int have_avx2 = 0;

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

/* ------------------------------------------------------------------ the automaton */

typedef struct {
    int32_t fail;   /* failure link (root: 0) */
    int32_t emit;   /* first state on the failure chain (this one included) with literals, or -1 */
    int32_t child;  /* sparse: id of the first child (children are contiguous); dense: row index */
    int16_t nchild; /* children count; -1: dense state */
    uint16_t sym0;  /* symbol of the first child (saves a memory access on chains of states) */
} State;

typedef struct {
    PyObject_HEAD
    State *states;
    uint16_t *symbol;  /* symbol leading into each state (sparse child search) */
    int32_t *dense;    /* dense rows, width entries each: one per class, then the row's state id */
    int32_t *out_start; /* per state: first index into out_lits (n_states + 1 entries) */
    int32_t *out_lits;  /* literal numbers each state reports */
    int32_t *every;     /* literals hitting every value (the empty unanchored pattern) */
    int32_t *run;       /* per sparse state: how many next states form a chain of single children
                         * (ids s+1, s+2, ...) reporting nothing: matched by a byte compare */
    uint64_t *bigram;   /* 65536 bits: (first byte, second byte) of some pattern */
    uint16_t classes[N_SYMBOLS];
    int32_t n_states, n_classes, width, n_dense, n_out, n_every, n_literals;
    int32_t start_state; /* the state after START */
    int use_skip;
    int32_t wm_m;             /* Wu-Manber window (0: off; INT32_MAX: nothing starts mid-value) */
    uint8_t wm_shift[WM_SIZE]; /* Wu-Manber shift by hashed last two bytes of the window */
    int use_teddy;             /* skip with the nibble-mask prefilter (see teddy_find) */
    int teddy_sets;            /* bucket sets in use: 1 (8 buckets) or 2 (16) */
    int teddy_width;           /* window bytes tested: 4, or 6 for many patterns (fewer false passes) */
    double teddy_rate;         /* its estimated share of positions passing on random bytes */
    /* per bucket set (buckets 0-7, 8-15), byte of the window and bucket bit: which low / high
     * nibbles the bucket's patterns may hold there; 16 entries, repeated for both 128-bit lanes of
     * an AVX2 shuffle */
    uint8_t teddy_lo[2][TEDDY_WIDTH][32], teddy_hi[2][TEDDY_WIDTH][32];
    int buffered;              /* contains-only, no empty pattern: skips may run across values */
    int allow_buffered;        /* build parameter: whether `buffered` may be set */
    int32_t min_mid;           /* fewest bytes of a pattern that may start mid-value (INT32_MAX: none) */
    /* the long-window skip (see scan_buffer_long): a window of lwm_m bytes, shifted by its last
     * LWM_BLOCK bytes' hash; where it stops, the patterns starting there are followed in the trie */
    int32_t lwm_m;             /* 0: off */
    uint8_t *lwm_shift;
    uint64_t *lwm_seen;        /* 2^LWM_BITS bits: the hash of some block of a pattern (stays cached) */
    int32_t *depth;            /* per state (with the long-window skip) */
    /* one-byte unanchored patterns are kept out of the automaton (every occurrence of such a byte
     * would take the slow, reporting path): one pass per value ORs byte_mask over its bytes */
    int split_bytes;           /* build parameter: whether to */
    int32_t n_byte_pats;       /* at most 64 */
    uint64_t byte_mask[256];   /* bit k: the byte is (folded: a case of) one-byte pattern k */
    int32_t byte_owner_start[65];
    int32_t *byte_owners;      /* literals of each one-byte pattern (CSR by byte_owner_start) */
    int dense_depth; /* build parameter */
    int renumber;    /* build parameter: depth-first state ids */
    int32_t *row_of; /* while building: dense row of each state, -1 for sparse ones */
    int skip_mode;   /* build parameter: -1 auto, 0 none, 1 bigram table only, 2 Wu-Manber if it applies */
    int fold;        /* build parameter: ASCII letters match case-insensitively (lowercase patterns) */
    int scanning;    /* scans running (GIL released): the tables must not be rebuilt meanwhile */
    Py_ssize_t nbytes;
} Automaton;

/* ASCII letters folded to lowercase (what a folding automaton reads). */
static uint8_t ascii_fold[256];

/* Hash of a long-window block (LWM_BLOCK bytes, already folded when the automaton folds). */
static inline uint32_t lwm_hash(const uint8_t *block) {
    uint64_t word = 0;
    for (int b = 0; b < LWM_BLOCK; b++) word |= (uint64_t)block[b] << (8 * b);
    return (uint32_t)((word * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - LWM_BITS));
}

/* The state after reading `sym` in state `s` (any state), by failure links down to a dense state. */
static inline int32_t step(const Automaton *a, int32_t s, int sym) {
    int cls = a->classes[sym];
    if (cls == 0) return 0;
    if (a->fold && sym < 256) sym = ascii_fold[sym]; /* uppercase letters share their lowercase class */
    for (;;) {
        const State *st = &a->states[s];
        if (st->nchild < 0) {
            int32_t v = a->dense[(size_t)st->child * (size_t)a->width + (size_t)cls];
            return v >= 0 ? a->dense[(size_t)v + (size_t)a->n_classes] : ~v;
        }
        if (st->nchild > 0) {
            if (st->sym0 == sym) return st->child;
            const uint16_t *syms = a->symbol + st->child;
            for (int32_t k = 1; k < st->nchild; k++) {
                if (syms[k] == sym) return st->child + k;
            }
        }
        s = st->fail;
    }
}

/* ------------------------------------------------------------------ building */

typedef struct {
    uint16_t *syms;
    int32_t len;
    int32_t index; /* position in the input list */
} Pattern;

typedef struct {
    int32_t first_child, last_child, next_sibling;
    int32_t depth;
    uint16_t sym;
    int32_t out_first; /* first pattern ending here (index into the pattern order), -1 */
} TrieNode;

static int compare_patterns(const void *x, const void *y) {
    const Pattern *p = (const Pattern *)x, *q = (const Pattern *)y;
    int32_t n = p->len < q->len ? p->len : q->len;
    for (int32_t i = 0; i < n; i++) {
        if (p->syms[i] != q->syms[i]) return p->syms[i] < q->syms[i] ? -1 : 1;
    }
    if (p->len != q->len) return p->len < q->len ? -1 : 1;
    return p->index < q->index ? -1 : (p->index > q->index);
}

static void automaton_free_arrays(Automaton *a) {
    free(a->states);
    free(a->symbol);
    free(a->dense);
    free(a->out_start);
    free(a->out_lits);
    free(a->every);
    free(a->run);
    a->run = NULL;
    free(a->lwm_shift);
    a->lwm_shift = NULL;
    free(a->lwm_seen);
    a->lwm_seen = NULL;
    free(a->depth);
    a->depth = NULL;
    free(a->bigram);
    free(a->byte_owners);
    a->byte_owners = NULL;
    free(a->row_of);
    a->row_of = NULL;
    a->states = NULL;
    a->symbol = NULL;
    a->dense = NULL;
    a->out_start = NULL;
    a->out_lits = NULL;
    a->every = NULL;
    a->bigram = NULL;
}

/* Parsed input: per pattern its symbols and owner literals (CSR). */
typedef struct {
    Pattern *patterns;
    uint16_t *sym_pool;
    int32_t *owner_start; /* by input index, n + 1 entries */
    int32_t *owners;
    Py_ssize_t n;
} Input;

static void input_free(Input *in) {
    free(in->patterns);
    free(in->sym_pool);
    free(in->owner_start);
    free(in->owners);
}

/* patterns: sequence of (body: bytes, flags: int (1 start-anchored, 2 end-anchored), owners: seq[int]). */
static int parse_input(PyObject *seq_obj, int32_t n_literals, Input *in) {
    memset(in, 0, sizeof(*in));
    PyObject *seq = PySequence_Fast(seq_obj, "patterns must be a sequence");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    in->n = n;
    size_t total_syms = 0, total_owners = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))) {
            PyErr_SetString(PyExc_TypeError, "each pattern must be a (bytes, int, sequence of int) tuple");
            Py_DECREF(seq);
            return -1;
        }
        total_syms += (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 0)) + 2;
        Py_ssize_t owners = PyObject_Length(PyTuple_GET_ITEM(item, 2));
        if (owners < 0) {
            Py_DECREF(seq);
            return -1;
        }
        total_owners += (size_t)owners;
    }
    if (total_syms > INT32_MAX / 2 || total_owners > INT32_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "too many patterns");
        Py_DECREF(seq);
        return -1;
    }
    in->patterns = (Pattern *)calloc((size_t)n + 1, sizeof(Pattern));
    in->sym_pool = (uint16_t *)malloc((total_syms + 1) * sizeof(uint16_t));
    in->owner_start = (int32_t *)malloc(((size_t)n + 1) * sizeof(int32_t));
    in->owners = (int32_t *)malloc((total_owners + 1) * sizeof(int32_t));
    if (!in->patterns || !in->sym_pool || !in->owner_start || !in->owners) {
        PyErr_NoMemory();
        Py_DECREF(seq);
        return -1;
    }
    size_t sym_used = 0, owner_used = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *body = PyTuple_GET_ITEM(item, 0);
        long flags = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        if (flags == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        Pattern *p = &in->patterns[i];
        p->syms = in->sym_pool + sym_used;
        p->index = (int32_t)i;
        if (flags & 1) p->syms[p->len++] = SYM_START;
        const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(body);
        for (Py_ssize_t k = 0; k < PyBytes_GET_SIZE(body); k++) p->syms[p->len++] = bytes[k];
        if (flags & 2) p->syms[p->len++] = SYM_END;
        sym_used += (size_t)p->len;
        in->owner_start[i] = (int32_t)owner_used;
        PyObject *owners = PySequence_Fast(PyTuple_GET_ITEM(item, 2), "owners must be a sequence");
        if (owners == NULL) {
            Py_DECREF(seq);
            return -1;
        }
        for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(owners); k++) {
            long lit = PyLong_AsLong(PySequence_Fast_GET_ITEM(owners, k));
            if (lit < 0 || lit >= n_literals) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "literal number out of range");
                Py_DECREF(owners);
                Py_DECREF(seq);
                return -1;
            }
            in->owners[owner_used++] = (int32_t)lit;
        }
        Py_DECREF(owners);
    }
    in->owner_start[n] = (int32_t)owner_used;
    Py_DECREF(seq);
    return 0;
}

/* A transition while building: dense rows hold plain state ids (row_of marks the dense states). */
static int32_t build_step(const Automaton *a, int32_t s, int sym) {
    int cls = a->classes[sym];
    if (cls == 0) return 0;
    for (;;) {
        if (a->row_of[s] >= 0) return a->dense[(size_t)a->row_of[s] * (size_t)a->width + (size_t)cls];
        const State *st = &a->states[s];
        for (int32_t k = 0; k < st->nchild; k++) {
            if (a->symbol[st->child + k] == sym) return st->child + k;
        }
        s = st->fail;
    }
}

/* Scan encoding of the dense rows: an entry leading to a dense state that reports nothing is that
 * state's row offset (>= 0), so the scan's inner loop is one load per byte; any other target t
 * (a sparse state, or one that reports literals) is ~t (< 0) and takes the slow path. */
static void encode_rows(Automaton *a) {
    for (int32_t r = 0; r < a->n_dense; r++) {
        int32_t *row = a->dense + (size_t)r * (size_t)a->width;
        for (int32_t cls = 0; cls < a->n_classes; cls++) {
            int32_t t = row[cls];
            const State *st = &a->states[t];
            row[cls] = st->nchild < 0 && st->emit < 0 ? st->child * a->width : ~t;
        }
    }
}

/* Renumber the states depth first, each state's children still given consecutive ids: a chain of
 * states (the tail of a long pattern) then lies in consecutive memory, where breadth-first ids
 * scatter it over the whole table. Dense rows keep their order. Returns -1 when out of memory. */
static int renumber(Automaton *a) {
    int32_t n = a->n_states;
    int32_t *new_of = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    int32_t *stack = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    State *states = (State *)malloc((size_t)n * sizeof(State));
    uint16_t *symbol = (uint16_t *)malloc((size_t)n * sizeof(uint16_t));
    int32_t *out_start = (int32_t *)malloc(((size_t)n + 1) * sizeof(int32_t));
    int32_t *out_lits = (int32_t *)malloc(((size_t)a->n_out + 1) * sizeof(int32_t));
    int32_t *row_of = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    if (!new_of || !stack || !states || !symbol || !out_start || !out_lits || !row_of) {
        free(new_of);
        free(stack);
        free(states);
        free(symbol);
        free(out_start);
        free(out_lits);
        free(row_of);
        return -1;
    }
    int32_t next = 1, top = 0;
    new_of[0] = 0;
    stack[top++] = 0;
    while (top > 0) {
        int32_t u = stack[--top];
        int32_t first = a->states[u].child, count = a->states[u].nchild;
        for (int32_t k = 0; k < count; k++) new_of[first + k] = next++;
        for (int32_t k = count - 1; k >= 0; k--) stack[top++] = first + k;
    }
    for (int32_t s = 0; s < n; s++) {
        State st = a->states[s];
        st.fail = new_of[st.fail];
        if (st.emit >= 0) st.emit = new_of[st.emit];
        if (st.nchild > 0) st.child = new_of[st.child];
        states[new_of[s]] = st;
        symbol[new_of[s]] = a->symbol[s];
        row_of[new_of[s]] = a->row_of[s];
    }
    int32_t used = 0;
    for (int32_t s = 0; s < n; s++) stack[new_of[s]] = s; /* old id of each new id */
    for (int32_t t = 0; t < n; t++) {
        int32_t s = stack[t];
        out_start[t] = used;
        for (int32_t o = a->out_start[s]; o < a->out_start[s + 1]; o++) out_lits[used++] = a->out_lits[o];
    }
    out_start[n] = used;
    size_t cells = (size_t)a->n_dense * (size_t)a->width;
    for (size_t c = 0; c < cells; c++) a->dense[c] = new_of[a->dense[c]];
    a->start_state = new_of[a->start_state];
    free(a->states);
    free(a->symbol);
    free(a->out_start);
    free(a->out_lits);
    a->states = states;
    a->symbol = symbol;
    a->out_start = out_start;
    a->out_lits = out_lits;
    free(a->row_of);
    a->row_of = row_of;
    free(new_of);
    free(stack);
    return 0;
}

/* Build the automaton from parsed input; returns -1 with a Python error set. GIL held. */
static int build(Automaton *a, Input *in) {
    Py_ssize_t n = in->n;
    qsort(in->patterns, (size_t)n, sizeof(Pattern), compare_patterns);

    /* 0. one-byte unanchored patterns leave the list (see byte_mask); the rest stay in order */
    memset(a->byte_mask, 0, sizeof(a->byte_mask));
    a->n_byte_pats = 0;
    a->byte_owner_start[0] = 0;
    a->byte_owners = (int32_t *)malloc(((size_t)in->owner_start[n] + 1) * sizeof(int32_t));
    if (a->byte_owners == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    {
        Py_ssize_t kept = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            const Pattern *p = &in->patterns[i];
            /* (an uppercase letter in a folding automaton stays, to be refused below) */
            if (a->split_bytes && p->len == 1 && p->syms[0] < 256 && a->n_byte_pats < 64 &&
                !(a->fold && p->syms[0] >= 'A' && p->syms[0] <= 'Z')) {
                int32_t k = a->n_byte_pats++, used = a->byte_owner_start[k];
                unsigned b = p->syms[0];
                a->byte_mask[b] |= (uint64_t)1 << k;
                if (a->fold && b >= 'a' && b <= 'z') a->byte_mask[b - ('a' - 'A')] |= (uint64_t)1 << k;
                for (int32_t o = in->owner_start[p->index]; o < in->owner_start[p->index + 1]; o++) {
                    a->byte_owners[used++] = in->owners[o];
                }
                a->byte_owner_start[k + 1] = used;
                continue;
            }
            in->patterns[kept++] = *p;
        }
        n = kept;
    }

    /* 1. trie, from the sorted patterns (children come out in symbol order) */
    size_t total = 1;
    int32_t max_len = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        total += (size_t)in->patterns[i].len;
        if (in->patterns[i].len > max_len) max_len = in->patterns[i].len;
    }
    TrieNode *trie = (TrieNode *)malloc(total * sizeof(TrieNode));
    int32_t *path = (int32_t *)malloc(((size_t)max_len + 1) * sizeof(int32_t));
    int32_t *next_out = (int32_t *)malloc(((size_t)n + 1) * sizeof(int32_t)); /* by sorted position */
    if (!trie || !path || !next_out) {
        free(trie);
        free(path);
        free(next_out);
        PyErr_NoMemory();
        return -1;
    }
    int32_t n_nodes = 1;
    trie[0] = (TrieNode){-1, -1, -1, 0, 0, -1};
    path[0] = 0;
    int32_t every_count = 0;
    const Pattern *previous = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Pattern *p = &in->patterns[i];
        next_out[i] = -1;
        if (p->len == 0) {
            every_count += in->owner_start[p->index + 1] - in->owner_start[p->index];
            continue;
        }
        int32_t common = 0;
        if (previous != NULL) {
            int32_t limit = previous->len < p->len ? previous->len : p->len;
            while (common < limit && previous->syms[common] == p->syms[common]) common++;
        }
        for (int32_t d = common; d < p->len; d++) {
            int32_t parent = path[d], node = n_nodes++;
            trie[node] = (TrieNode){-1, -1, -1, d + 1, p->syms[d], -1};
            if (trie[parent].last_child < 0) {
                trie[parent].first_child = node;
            } else {
                trie[trie[parent].last_child].next_sibling = node;
            }
            trie[parent].last_child = node;
            path[d + 1] = node;
        }
        /* chain this pattern onto its end node's output list */
        int32_t end = path[p->len];
        next_out[i] = trie[end].out_first;
        trie[end].out_first = (int32_t)i;
        previous = p;
    }
    free(path);

    /* 2. breadth-first numbering: a state's children get consecutive ids */
    int32_t *order = (int32_t *)malloc((size_t)n_nodes * sizeof(int32_t)); /* bfs id -> trie node */
    int32_t *bfs_of = (int32_t *)malloc((size_t)n_nodes * sizeof(int32_t));
    a->states = (State *)calloc((size_t)n_nodes, sizeof(State));
    a->symbol = (uint16_t *)calloc((size_t)n_nodes, sizeof(uint16_t));
    a->out_start = (int32_t *)malloc(((size_t)n_nodes + 1) * sizeof(int32_t));
    a->out_lits = (int32_t *)malloc(((size_t)in->owner_start[in->n] + 1) * sizeof(int32_t));
    a->every = (int32_t *)malloc(((size_t)every_count + 1) * sizeof(int32_t));
    a->bigram = (uint64_t *)calloc(1024, sizeof(uint64_t));
    if (!order || !bfs_of || !a->states || !a->symbol || !a->out_start || !a->out_lits || !a->every ||
        !a->bigram) {
        free(order);
        free(bfs_of);
        free(trie);
        free(next_out);
        PyErr_NoMemory();
        return -1;
    }
    a->n_states = n_nodes;
    a->row_of = (int32_t *)malloc((size_t)n_nodes * sizeof(int32_t));
    if (a->row_of == NULL) {
        free(order);
        free(bfs_of);
        free(trie);
        free(next_out);
        PyErr_NoMemory();
        return -1;
    }
    order[0] = 0;
    bfs_of[0] = 0;
    int32_t tail = 1;
    for (int32_t head = 0; head < tail; head++) {
        int32_t node = order[head];
        State *st = &a->states[head];
        st->child = tail;
        st->nchild = 0;
        for (int32_t c = trie[node].first_child; c >= 0; c = trie[c].next_sibling) {
            bfs_of[c] = tail;
            a->symbol[tail] = trie[c].sym;
            order[tail++] = c;
            st->nchild++;
        }
        a->row_of[head] = -1;
    }

    /* 3. outputs per state (literal numbers), the literals of the empty pattern, symbol classes */
    int32_t used = 0;
    for (int32_t s = 0; s < n_nodes; s++) {
        a->out_start[s] = used;
        for (int32_t k = trie[order[s]].out_first; k >= 0; k = next_out[k]) {
            int32_t index = in->patterns[k].index;
            for (int32_t o = in->owner_start[index]; o < in->owner_start[index + 1]; o++) {
                a->out_lits[used++] = in->owners[o];
            }
        }
    }
    a->out_start[n_nodes] = used;
    a->n_out = used;
    a->n_every = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Pattern *p = &in->patterns[i];
        if (p->len != 0) continue;
        for (int32_t o = in->owner_start[p->index]; o < in->owner_start[p->index + 1]; o++) {
            a->every[a->n_every++] = in->owners[o];
        }
    }
    memset(a->classes, 0, sizeof(a->classes));
    int32_t n_classes = 1;
    uint16_t class_symbol[N_SYMBOLS + 1];
    class_symbol[0] = 0;
    for (int32_t s = 1; s < n_nodes; s++) {
        uint16_t sym = a->symbol[s];
        if (a->classes[sym] == 0) {
            a->classes[sym] = (uint16_t)n_classes;
            class_symbol[n_classes++] = sym;
        }
    }
    a->n_classes = n_classes;
    free(trie);
    free(next_out);

    /* 4. which states are dense (root, shallow, many children) */
    int32_t n_dense = 0;
    int32_t *depth = (int32_t *)malloc((size_t)n_nodes * sizeof(int32_t));
    if (depth == NULL) {
        free(order);
        free(bfs_of);
        PyErr_NoMemory();
        return -1;
    }
    depth[0] = 0;
    for (int32_t s = 0; s < n_nodes; s++) {
        State *st = &a->states[s];
        for (int32_t k = 0; k < st->nchild; k++) depth[st->child + k] = depth[s] + 1;
    }
    if (a->dense_depth < 0) {
        /* auto: a small automaton is a DFA all through (one load per byte: long matches, as in
         * call traces full of DLL paths, walk deep states all the time); a big one keeps complete
         * rows for its shallow states only (rows for all would not stay in the caches) */
        a->dense_depth = (size_t)n_nodes * (size_t)(n_classes + 1) * sizeof(int32_t) <= DENSE_ALL_BYTES ? INT32_MAX
                                                                                                 : DENSE_DEPTH;
    }
    for (int32_t s = 0; s < n_nodes; s++) {
        if (s == 0 || depth[s] <= a->dense_depth || a->states[s].nchild > DENSE_CHILDREN) n_dense++;
    }
    a->width = n_classes + 1;
    if ((size_t)n_dense * (size_t)a->width >= (size_t)INT32_MAX) {
        free(order);
        free(bfs_of);
        free(depth);
        PyErr_SetString(PyExc_ValueError, "automaton too big");
        return -1;
    }
    a->dense = (int32_t *)malloc((size_t)n_dense * (size_t)a->width * sizeof(int32_t));
    if (a->dense == NULL) {
        free(order);
        free(bfs_of);
        free(depth);
        PyErr_NoMemory();
        return -1;
    }
    a->n_dense = n_dense;

    /* 5. failure links, emit links and dense rows, breadth first (everything shallower is done) */
    int32_t row = 0;
    for (int32_t s = 0; s < n_nodes; s++) {
        State *st = &a->states[s]; /* its failure link was set when its parent was done (root: 0) */
        int is_dense = s == 0 || depth[s] <= a->dense_depth || st->nchild > DENSE_CHILDREN;
        /* children's failure links: step from this state's failure link (all shallower states are done) */
        for (int32_t k = 0; k < st->nchild; k++) {
            int32_t c = st->child + k;
            a->states[c].fail = s == 0 ? 0 : build_step(a, st->fail, a->symbol[c]);
        }
        st->emit = a->out_start[s + 1] > a->out_start[s] ? s : (s == 0 ? -1 : a->states[st->fail].emit);
        if (is_dense) {
            int32_t *r = a->dense + (size_t)row * (size_t)a->width;
            r[0] = 0;
            r[n_classes] = s;
            for (int32_t cls = 1; cls < n_classes; cls++) {
                uint16_t sym = class_symbol[cls];
                int32_t target = -1;
                for (int32_t k = 0; k < st->nchild; k++) {
                    if (a->symbol[st->child + k] == sym) {
                        target = st->child + k;
                        break;
                    }
                }
                if (target < 0) target = s == 0 ? 0 : build_step(a, st->fail, sym);
                r[cls] = target;
            }
            a->row_of[s] = row++;
        }
    }
    free(depth);
    free(order);
    free(bfs_of);
    a->start_state = build_step(a, 0, SYM_START);
    if (a->renumber && renumber(a) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    /* depths (children have larger ids than their parent, either numbering) */
    a->depth = (int32_t *)calloc((size_t)n_nodes + 1, sizeof(int32_t));
    if (a->depth == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int32_t s = 0; s < n_nodes; s++) {
        const State *st = &a->states[s];
        for (int32_t k = 0; k < st->nchild; k++) a->depth[st->child + k] = a->depth[s] + 1;
    }
    /* final state records: dense states point at their row, sparse ones carry their first symbol */
    for (int32_t s = 0; s < n_nodes; s++) {
        State *st = &a->states[s];
        if (a->row_of[s] >= 0) {
            st->child = a->row_of[s];
            st->nchild = -1;
        } else {
            st->sym0 = st->nchild > 0 ? a->symbol[st->child] : 0;
        }
    }
    free(a->row_of);
    a->row_of = NULL;
    encode_rows(a);
    /* chains: depth-first ids give a single child the next id, so a chain's symbols are
     * consecutive in `symbol`; from the deepest ids up, each state's run extends its child's */
    a->run = (int32_t *)calloc((size_t)n_nodes + 1, sizeof(int32_t));
    if (a->run == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int32_t s = n_nodes - 2; s >= 0 && a->renumber; s--) {
        const State *st = &a->states[s];
        if (st->nchild == 1 && st->child == s + 1 && a->states[s + 1].emit < 0 && a->symbol[s + 1] < 256) {
            a->run[s] = 1 + (a->states[s + 1].nchild >= 0 ? a->run[s + 1] : 0);
        }
    }

    /* 6. the root skip table: first two bytes of every pattern that may start mid-value */
    for (Py_ssize_t i = 0; i < n; i++) {
        const Pattern *p = &in->patterns[i];
        if (p->len == 0 || p->syms[0] >= 256) continue;
        for (int variant = 0; variant < 4; variant++) {
            /* folding: the bytes as they may occur in the text (variant bit 0/1: first/second uppercase) */
            unsigned first = p->syms[0];
            if (variant & 1) {
                if (!a->fold || first < 'a' || first > 'z') continue;
                first -= 'a' - 'A';
            }
            if (p->len == 1 || p->syms[1] >= 256) {
                if (variant & 2) continue;
                /* a one-byte pattern (or one ending at END): every second byte may follow */
                for (unsigned second = 0; second < 256; second++) {
                    unsigned bit = (first << 8) | second;
                    a->bigram[bit >> 6] |= (uint64_t)1 << (bit & 63);
                }
            } else {
                unsigned second = p->syms[1];
                if (variant & 2) {
                    if (!a->fold || second < 'a' || second > 'z') continue;
                    second -= 'a' - 'A';
                }
                unsigned bit = (first << 8) | second;
                a->bigram[bit >> 6] |= (uint64_t)1 << (bit & 63);
            }
        }
    }
    size_t set_bits = 0;
    for (int i = 0; i < 1024; i++) set_bits += (size_t)__builtin_popcountll(a->bigram[i]);
    /* a dense table stops the skip loop at nearly every byte: then it only costs */
    a->use_skip = a->skip_mode < 0 ? set_bits < 65536 / 4 : a->skip_mode != 0;

    /* 7. Wu-Manber shifts: m = fewest bytes of a pattern that may start mid-value; a window of m
     * bytes whose last two bytes occur in no pattern's first m bytes cannot hold the start of a
     * match at any of its first m - 1 positions */
    int64_t m = INT32_MAX; /* INT32_MAX: no pattern can start mid-value */
    for (Py_ssize_t i = 0; i < n; i++) {
        const Pattern *p = &in->patterns[i];
        if (p->len == 0 || p->syms[0] == SYM_START) continue;
        int64_t real = p->len - (p->syms[p->len - 1] == SYM_END ? 1 : 0);
        if (real < m) m = real;
    }
    a->min_mid = (int32_t)m;
    a->wm_m = 0;
    if (m >= WM_MIN && a->skip_mode != 0 && a->skip_mode != 1) {
        int64_t window = m > 256 ? 256 : m; /* shifts are bytes: a shorter window is as exact */
        memset(a->wm_shift, (int)(window - 1), sizeof(a->wm_shift));
        size_t small = 0;
        if (m != INT32_MAX) {
            for (Py_ssize_t i = 0; i < n; i++) {
                const Pattern *p = &in->patterns[i];
                if (p->len == 0 || p->syms[0] == SYM_START) continue;
                for (int64_t j = 1; j < window; j++) {
                    uint8_t shift = (uint8_t)(window - 1 - j);
                    for (int variant = 0; variant < 4; variant++) {
                        /* folding: every case variant of the two bytes shifts as little */
                        unsigned b0 = p->syms[j - 1], b1 = p->syms[j];
                        if (variant & 1) {
                            if (!a->fold || b0 < 'a' || b0 > 'z') continue;
                            b0 -= 'a' - 'A';
                        }
                        if (variant & 2) {
                            if (!a->fold || b1 < 'a' || b1 > 'z') continue;
                            b1 -= 'a' - 'A';
                        }
                        unsigned h = WM_HASH(b0, b1);
                        if (shift < a->wm_shift[h]) a->wm_shift[h] = shift;
                    }
                }
            }
            for (size_t h = 0; h < sizeof(a->wm_shift); h++) small += a->wm_shift[h] < window / 2;
        }
        /* most windows must shift far, else the byte-by-byte automaton is as cheap */
        if (a->skip_mode == 2 || small * 4 < sizeof(a->wm_shift)) a->wm_m = (int32_t)window;
        if (m == INT32_MAX) a->wm_m = INT32_MAX;
    }

    /* 8. the nibble-mask prefilter (Teddy-like): the patterns that may start mid-value, in sorted
     * order, split into 8 or 16 buckets of neighbours (shared first bytes keep a bucket's masks narrow);
     * a position passes when, for some bucket, each of its next 4 (or 6) bytes has both nibbles allowed
     * at that offset by the bucket. Bytes past a pattern's end (or at END) allow anything. */
    memset(a->teddy_lo, 0, sizeof(a->teddy_lo));
    memset(a->teddy_hi, 0, sizeof(a->teddy_hi));
    a->use_teddy = 0;
    a->teddy_rate = 1.0;
    {
        Py_ssize_t n_mid = 0, seen = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            const Pattern *p = &in->patterns[i];
            if (p->len > 0 && p->syms[0] < 256) n_mid++;
        }
        a->teddy_sets = n_mid <= TEDDY_SMALL ? 1 : 2;
        a->teddy_width = n_mid <= TEDDY_SMALL ? 4 : 6;
        for (Py_ssize_t i = 0; i < n && n_mid > 0; i++) {
            const Pattern *p = &in->patterns[i];
            if (p->len == 0 || p->syms[0] >= 256) continue;
            int bucket = (int)(seen++ * 8 * a->teddy_sets / n_mid);
            uint8_t(*lo)[32] = a->teddy_lo[bucket >> 3], (*hi)[32] = a->teddy_hi[bucket >> 3];
            uint8_t bit = (uint8_t)(1u << (bucket & 7));
            for (int j = 0; j < a->teddy_width; j++) {
                if (j >= p->len || p->syms[j] >= 256) {
                    for (int k = 0; k < 16; k++) {
                        lo[j][k] |= bit;
                        hi[j][k] |= bit;
                    }
                    continue;
                }
                unsigned b = p->syms[j];
                lo[j][b & 15] |= bit;
                hi[j][b >> 4] |= bit;
                if (a->fold && b >= 'a' && b <= 'z') {
                    b -= 'a' - 'A';
                    lo[j][b & 15] |= bit;
                    hi[j][b >> 4] |= bit;
                }
            }
        }
        double rate = 0.0;
        for (int bucket = 0; bucket < 8 * a->teddy_sets && n_mid > 0; bucket++) {
            const uint8_t(*lo)[32] = a->teddy_lo[bucket >> 3], (*hi)[32] = a->teddy_hi[bucket >> 3];
            double pass = 1.0;
            for (int j = 0; j < a->teddy_width; j++) {
                int allowed = 0;
                for (int b = 0; b < 256; b++) allowed += (lo[j][b & 15] & hi[j][b >> 4]) >> (bucket & 7) & 1;
                pass *= allowed / 256.0;
            }
            rate += pass;
        }
        for (int set = 0; set < 2; set++) {
            for (int j = 0; j < a->teddy_width; j++) {
                memcpy(a->teddy_lo[set][j] + 16, a->teddy_lo[set][j], 16);
                memcpy(a->teddy_hi[set][j] + 16, a->teddy_hi[set][j], 16);
            }
        }
        a->teddy_rate = rate;
        /* measured on SigmaHQ's literals over log values: the prefilter wins only when it may run
         * over the data buffer as a whole (per value, its setup costs more than Wu-Manber's), and
         * Wu-Manber wins on long patterns (its window shifts as far as the shortest pattern) */
        int unanchored = a->allow_buffered && a->n_every == 0 && a->classes[SYM_START] == 0 && a->classes[SYM_END] == 0;
        if (n_mid > 0 && a->wm_m != INT32_MAX) {
            a->use_teddy = a->skip_mode == 3 || (a->skip_mode < 0 && have_avx2 && unanchored &&
                                                 rate < TEDDY_MAX_RATE && (a->wm_m == 0 || a->wm_m < TEDDY_WM_LONG));
        }
        /* only unanchored patterns, none empty: nothing happens at a value's start or end, so the root
         * skip may run over the data buffer as a whole (see scan_buffer); Wu-Manber skips the last
         * bytes of each value for free when it runs value by value, so it does */
        a->buffered = unanchored && a->n_byte_pats == 0 && (a->use_teddy || (a->wm_m == 0 && a->use_skip));
        /* many long patterns only (hashes): their 2-byte blocks fill Wu-Manber's table (and in hex
         * all occur), so it shifts little; 6-byte blocks do, over the buffer. A few long patterns
         * keep Wu-Manber: text full of their own blocks (call traces) would stop the long window
         * at every byte. */
        a->lwm_m = 0;
        if (unanchored && a->n_byte_pats == 0 && a->min_mid >= LWM_MIN && a->min_mid != INT32_MAX &&
            (a->skip_mode == 4 ||
             (a->skip_mode < 0 && !a->use_teddy && (size_t)n_mid * (size_t)a->min_mid > WM_SIZE))) {
            int32_t window = a->min_mid > 255 ? 255 : a->min_mid;
            a->lwm_shift = (uint8_t *)malloc((size_t)1 << LWM_BITS);
            a->lwm_seen = (uint64_t *)calloc(((size_t)1 << LWM_BITS) / 64, sizeof(uint64_t));
            if (a->lwm_shift == NULL || a->lwm_seen == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            memset(a->lwm_shift, window - LWM_BLOCK + 1, (size_t)1 << LWM_BITS);
            for (Py_ssize_t i = 0; i < n; i++) {
                const Pattern *p = &in->patterns[i];
                for (int32_t j = LWM_BLOCK - 1; j < window; j++) {
                    uint8_t block[LWM_BLOCK];
                    for (int b = 0; b < LWM_BLOCK; b++) block[b] = (uint8_t)p->syms[j - LWM_BLOCK + 1 + b];
                    uint32_t h = lwm_hash(block);
                    uint8_t shift = (uint8_t)(window - 1 - j);
                    if (shift < a->lwm_shift[h]) a->lwm_shift[h] = shift;
                    a->lwm_seen[h >> 6] |= (uint64_t)1 << (h & 63);
                }
            }
            a->lwm_m = window;
            a->use_teddy = 0;
            a->buffered = 1;
        }
    }
    if (a->fold) {
        /* patterns are lowercase: an uppercase letter reads as its lowercase one (same class) */
        for (int b = 'A'; b <= 'Z'; b++) {
            if (a->classes[b] != 0) {
                PyErr_SetString(PyExc_ValueError, "a folding automaton's patterns must not hold uppercase ASCII");
                return -1;
            }
            a->classes[b] = a->classes[b + ('a' - 'A')];
        }
    }
    a->nbytes = (Py_ssize_t)(sizeof(a->byte_mask) + (size_t)a->byte_owner_start[a->n_byte_pats] * sizeof(int32_t) +
                             (size_t)n_nodes * (sizeof(State) + sizeof(uint16_t) + sizeof(int32_t)) +
                             (size_t)n_dense * (size_t)a->width * sizeof(int32_t) +
                             (size_t)(a->n_out + a->n_every) * sizeof(int32_t) + 1024 * sizeof(uint64_t));
    return 0;
}

static int Automaton_init(Automaton *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"patterns",  "n_literals", "dense_depth", "skip", "renumber",
                             "fold",      "buffered",   "split_bytes", NULL};
    PyObject *patterns;
    int n_literals, dense_depth = -1, skip = -1, renumber_states = 1, fold = 0, buffered = 1, split_bytes = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|iipppp", kwlist, &patterns, &n_literals, &dense_depth, &skip,
                                     &renumber_states, &fold, &buffered, &split_bytes)) {
        return -1;
    }
    self->allow_buffered = buffered;
    self->split_bytes = split_bytes;
    self->fold = fold;
    self->renumber = renumber_states;
    self->dense_depth = dense_depth;
    self->skip_mode = skip;
    if (n_literals < 0) {
        PyErr_SetString(PyExc_ValueError, "n_literals must be >= 0");
        return -1;
    }
    if (self->scanning) {
        PyErr_SetString(PyExc_RuntimeError, "automaton in use by a scan");
        return -1;
    }
    automaton_free_arrays(self);
    self->n_literals = n_literals;
    Input in;
    int rc = parse_input(patterns, n_literals, &in);
    if (rc == 0) rc = build(self, &in);
    input_free(&in);
    if (rc < 0) automaton_free_arrays(self);
    return rc;
}

static void Automaton_dealloc(Automaton *self) {
    automaton_free_arrays(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------------ scanning */

typedef struct {
    int32_t *lit, *val;
    size_t len, cap;
} Hits;

static int hits_grow(Hits *h) {
    size_t cap = h->cap ? h->cap * 2 : 4096;
    int32_t *l = (int32_t *)realloc(h->lit, cap * sizeof(int32_t));
    if (l == NULL) return -1;
    h->lit = l;
    int32_t *v = (int32_t *)realloc(h->val, cap * sizeof(int32_t));
    if (v == NULL) return -1;
    h->val = v;
    h->cap = cap;
    return 0;
}

static void hits_free(Hits *h) {
    free(h->lit);
    free(h->val);
    h->lit = h->val = NULL;
    h->len = h->cap = 0;
}

/* What one scan call reads (read-only while scanning). */
typedef struct {
    const Automaton *a;
    const int32_t *relabel; /* literal -> reported number (< 0: not reported), or NULL */
    const uint8_t *bytes, *valid, *offsets;
    const uint8_t *limit; /* end of the data buffer */
    int wide;
    Py_ssize_t offset; /* of the array: value j is element offset + j */
    int32_t base;      /* reported value numbers: j + base (arrays scanned one after the other) */
    int failed;
    Hits skipped; /* folding scans: values holding a non-ASCII byte (left to the caller), in .val */
} Scan;

/* The prefilter's last 32-position block with passes, kept while its passes are taken one by one
 * (the walk from each returns to the root soon, most of the time within the block). */
typedef struct {
    const uint8_t *base; /* NULL: none */
    uint32_t mask;       /* bit i: the prefilter passes at base + i */
} TeddyCursor;

/* The walk through the values: where it is, and what it found. */
typedef struct {
    const uint8_t *p, *e; /* the rest of the current value */
    int32_t s;            /* current state (when v < 0) */
    int32_t v;            /* current state's dense row offset, or -1 while the state is sparse */
    int32_t value;        /* current value (relative position) */
    int32_t end;          /* one past the last value */
    int32_t *stamp;       /* reported number -> last value reported (+1): drops repeats in a value */
    Hits hits;
    TeddyCursor teddy;    /* the prefilter's block of passes being taken */
} Stream;

static inline void push(Scan *sc, Stream *x, int32_t lit, int32_t value) {
    if (sc->relabel != NULL) {
        lit = sc->relabel[lit];
        if (lit < 0) return;
    }
    value += sc->base;
    if (x->stamp[lit] == value + 1) return;
    x->stamp[lit] = value + 1;
    Hits *h = &x->hits;
    if (UNLIKELY(h->len == h->cap) && hits_grow(h) < 0) {
        sc->failed = 1;
        return;
    }
    h->lit[h->len] = lit;
    h->val[h->len] = value;
    h->len++;
}

/* Report the literals of state t and of every state on its failure chain that has some. */
static inline void report(Scan *sc, Stream *x, int32_t t, int32_t value) {
    const Automaton *a = sc->a;
    while (t >= 0) {
        for (int32_t o = a->out_start[t]; o < a->out_start[t + 1]; o++) push(sc, x, a->out_lits[o], value);
        t = a->states[a->states[t].fail].emit;
    }
}

/* The dense row offset of a state, or -1 when it is sparse. */
static inline int32_t row_offset(const Automaton *a, int32_t s) {
    const State *st = &a->states[s];
    return st->nchild < 0 ? st->child * a->width : -1;
}

/* Whether the prefilter passes at p (bytes at or past `limit`, the buffer's end, allow all). */
static inline int teddy_at(const Automaton *a, const uint8_t *p, const uint8_t *limit) {
    unsigned pass = 0;
    for (int set = 0; set < a->teddy_sets; set++) {
        unsigned m = 0xff;
        for (int j = 0; j < a->teddy_width && p + j < limit; j++) {
            m &= a->teddy_lo[set][j][p[j] & 15] & a->teddy_hi[set][j][p[j] >> 4];
        }
        pass |= m;
    }
    return pass != 0;
}

/* First position in [p, e) where the prefilter passes (e when none does), one byte at a time. */
static const uint8_t *teddy_find_scalar(const Automaton *a, const uint8_t *p, const uint8_t *e,
                                        const uint8_t *limit) {
    for (; p < e; p++) {
        if (teddy_at(a, p, limit)) return p;
    }
    return e;
}

#if HAVE_AVX2_PATH
/* teddy_find_scalar 32 positions at a time: per window byte j, the nibbles of the 32 bytes at
 * p + j pick each position's bucket bits (two 16-entry shuffles per bucket set); their AND over
 * the window's bytes is nonzero where a pattern of some bucket may start. Reads up to 31 + width
 * bytes past p, never past `limit`; bytes past the value's end (the next value's) may only add
 * passes: a pattern at least `width` long that starts at p lies inside the value, and shorter ones
 * allow any byte past their end. A block with passes is left in the cursor. */
__attribute__((target("avx2"), always_inline)) static inline const uint8_t *teddy_find_avx2_with(
    const Automaton *a, TeddyCursor *cursor, const uint8_t *p, const uint8_t *e, const uint8_t *limit,
    const int sets, const int width) {
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    __m256i lo[2][TEDDY_WIDTH], hi[2][TEDDY_WIDTH];
    for (int set = 0; set < sets; set++) {
        for (int j = 0; j < width; j++) {
            lo[set][j] = _mm256_loadu_si256((const __m256i *)a->teddy_lo[set][j]);
            hi[set][j] = _mm256_loadu_si256((const __m256i *)a->teddy_hi[set][j]);
        }
    }
    while (p < e && limit - p >= 31 + width) {
        __m256i m0 = _mm256_set1_epi8(-1), m1 = m0;
        for (int j = 0; j < width; j++) {
            __m256i t = _mm256_loadu_si256((const __m256i *)(p + j));
            __m256i low = _mm256_and_si256(t, nibble);
            __m256i high = _mm256_and_si256(_mm256_srli_epi16(t, 4), nibble);
            m0 = _mm256_and_si256(
                m0, _mm256_and_si256(_mm256_shuffle_epi8(lo[0][j], low), _mm256_shuffle_epi8(hi[0][j], high)));
            if (sets > 1) {
                m1 = _mm256_and_si256(m1, _mm256_and_si256(_mm256_shuffle_epi8(lo[1][j], low),
                                                           _mm256_shuffle_epi8(hi[1][j], high)));
            }
        }
        __m256i m = sets > 1 ? _mm256_or_si256(m0, m1) : m0;
        uint32_t pass = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(m, zero));
        if (pass) {
            cursor->base = p;
            cursor->mask = pass;
            const uint8_t *q = p + __builtin_ctz(pass);
            return q < e ? q : e;
        }
        p += 32;
    }
    return teddy_find_scalar(a, p, e, limit);
}

#define TEDDY_VARIANT(sets, width)                                                                            \
    __attribute__((target("avx2"))) static const uint8_t *teddy_find_avx2_##sets##_##width(                  \
        const Automaton *a, TeddyCursor *cursor, const uint8_t *p, const uint8_t *e, const uint8_t *limit) { \
        return teddy_find_avx2_with(a, cursor, p, e, limit, sets, width);                                     \
    }
TEDDY_VARIANT(1, 4)
TEDDY_VARIANT(1, 6)
TEDDY_VARIANT(2, 4)
TEDDY_VARIANT(2, 6)
#undef TEDDY_VARIANT
#endif

/* First position in [p, e) where a pattern may start by the prefilter (e when none may): first
 * from the cursor's block, then from blocks computed anew. */
static inline const uint8_t *teddy_find(const Automaton *a, TeddyCursor *cursor, const uint8_t *p,
                                        const uint8_t *e, const uint8_t *limit) {
    if (p >= e) return e;
    if (cursor->base != NULL && p >= cursor->base && p < cursor->base + 32) {
        uint32_t left = cursor->mask & (UINT32_C(0xffffffff) << (p - cursor->base));
        if (left) {
            const uint8_t *q = cursor->base + __builtin_ctz(left);
            return q < e ? q : e;
        }
        p = cursor->base + 32;
        if (p >= e) return e;
    }
#if HAVE_AVX2_PATH
    if (have_avx2) {
        if (a->teddy_sets > 1) {
            return a->teddy_width > 4 ? teddy_find_avx2_2_6(a, cursor, p, e, limit)
                                      : teddy_find_avx2_2_4(a, cursor, p, e, limit);
        }
        return a->teddy_width > 4 ? teddy_find_avx2_1_6(a, cursor, p, e, limit)
                                  : teddy_find_avx2_1_4(a, cursor, p, e, limit);
    }
#endif
    return teddy_find_scalar(a, p, e, limit);
}

/* While at the root: skip to the first position where a pattern may start (e when none may).
 * `limit` is the end of the data buffer (the prefilter may look past e, up to it). */
static inline const uint8_t *skip_at_root(const Automaton *a, const uint8_t *p, const uint8_t *e,
                                          const uint8_t *limit, TeddyCursor *cursor) {
    if (a->use_teddy) {
        /* a pattern starting at the position found must fit before e */
        if (e - p < a->min_mid) return e;
        const uint8_t *last = e - (a->min_mid - 1), *q = teddy_find(a, cursor, p, last, limit);
        return q < last ? q : e;
    }
    int32_t m = a->wm_m;
    if (m) {
        if (m == INT32_MAX || e - p < m) return e;
        const uint8_t *last = e - m;
        for (;;) {
            unsigned shift = a->wm_shift[WM_HASH(p[m - 2], p[m - 1])];
            if (shift == 0) return p;
            p += shift;
            if (p > last) return e;
        }
    }
    if (a->use_skip) {
        const uint64_t *bigram = a->bigram;
        while (p + 1 < e) {
            unsigned bit = ((unsigned)p[0] << 8) | p[1];
            if (bigram[bit >> 6] & ((uint64_t)1 << (bit & 63))) break;
            p++;
        }
    }
    return p;
}

/* Whether bytes [p, e) hold a byte >= 0x80 (32 at a time, stopping at the first block with one). */
static inline int has_high_byte(const uint8_t *p, const uint8_t *e) {
    const uint64_t high = UINT64_C(0x8080808080808080);
    while (e - p >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8);
        memcpy(&w1, p + 8, 8);
        memcpy(&w2, p + 16, 8);
        memcpy(&w3, p + 24, 8);
        if ((w0 | w1 | w2 | w3) & high) return 1;
        p += 32;
    }
    uint64_t any = 0;
    while (e - p >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        any |= word;
        p += 8;
    }
    while (p < e) any |= *p++;
    return (any & high) != 0;
}

/* Move a stream to its next non-null value (start state entered); 0 when it has none left. */
static inline int stream_start(Scan *sc, Stream *x, const int fold) {
    const Automaton *a = sc->a;
    for (; x->value < x->end; x->value++) {
        Py_ssize_t at = sc->offset + x->value;
        if (sc->valid != NULL && !(sc->valid[at >> 3] & (1u << (at & 7)))) continue;
        int64_t start, end;
        if (sc->wide) {
            start = ((const int64_t *)sc->offsets)[at];
            end = ((const int64_t *)sc->offsets)[at + 1];
        } else {
            start = ((const int32_t *)sc->offsets)[at];
            end = ((const int32_t *)sc->offsets)[at + 1];
        }
        x->p = sc->bytes + start;
        x->e = sc->bytes + end;
        if (fold && has_high_byte(x->p, x->e)) {
            /* str.lower of non-ASCII text is not a byte map (it may even yield ASCII): the caller
             * lowercases these values in Python and scans them without folding */
            Hits *h = &sc->skipped;
            if (UNLIKELY(h->len == h->cap) && hits_grow(h) < 0) {
                sc->failed = 1;
                return 0;
            }
            h->val[h->len++] = x->value + sc->base;
            continue;
        }
        for (int32_t k = 0; k < a->n_every; k++) push(sc, x, a->every[k], x->value);
        x->s = a->start_state;
        if (a->states[x->s].emit >= 0) report(sc, x, a->states[x->s].emit, x->value);
        x->v = row_offset(a, x->s);
        return 1;
    }
    return 0;
}

/* The end of a stream's current value: the END symbol. */
static inline void stream_finish(Scan *sc, Stream *x) {
    const Automaton *a = sc->a;
    int32_t s = x->v >= 0 ? a->dense[x->v + a->n_classes] : x->s;
    s = step(a, s, SYM_END);
    if (a->states[s].emit >= 0) report(sc, x, a->states[s].emit, x->value);
    x->value++;
}

/* Step the automaton over [p, e) from the stream's state (x->v, or x->s while sparse), reporting
 * hits; return where it stopped. Value by value (`until_root` 0): at the root, skip ahead to where
 * a pattern may start (with `skips`), and stop at e. Buffered (`until_root` 1): stop as soon as
 * the walk is back at the root (the caller skips over the buffer). The position and the state stay
 * in locals (in the Stream, every byte's store would lengthen the chain of dependent loads). */
static inline const uint8_t *walk(Scan *sc, Stream *x, const uint8_t *p, const uint8_t *e, const int skips,
                                  const int until_root) {
    const Automaton *a = sc->a;
    const int32_t *dense = a->dense;
    const uint16_t *classes = a->classes;
    int32_t v = x->v, s = x->s;
    if (v == 0 && skips && !until_root) p = skip_at_root(a, p, e, sc->limit, &x->teddy);
    while (p < e) {
        if (LIKELY(v >= 0)) {
            int32_t next = dense[v + classes[*p++]];
            if (LIKELY(next > 0)) {
                v = next;
                continue;
            }
            if (next == 0) { /* the root */
                v = 0;
                if (until_root) break;
                if (skips) p = skip_at_root(a, p, e, sc->limit, &x->teddy);
                continue;
            }
            s = ~next;
        } else {
            int32_t chain = a->run[s];
            if (chain > 0) {
                /* a chain of single children: compare the bytes (no state is visited, none reports) */
                int32_t matched = 0;
                if (chain > e - p) chain = (int32_t)(e - p);
                const uint16_t *want = a->symbol + s + 1;
                if (a->fold) {
                    while (matched < chain && ascii_fold[p[matched]] == want[matched]) matched++;
                } else {
                    while (matched < chain && p[matched] == want[matched]) matched++;
                }
                if (matched > 0) {
                    s += matched;
                    p += matched;
                    v = row_offset(a, s);
                    continue;
                }
            }
            s = step(a, s, *p++);
        }
        if (a->states[s].emit >= 0) report(sc, x, a->states[s].emit, x->value);
        v = row_offset(a, s);
        if (v == 0) {
            if (until_root) break;
            if (skips) p = skip_at_root(a, p, e, sc->limit, &x->teddy);
        }
    }
    x->v = v;
    x->s = s;
    return p;
}

/* Report the one-byte patterns the current value holds (one OR per byte, two chains). */
static inline void scan_bytes(Scan *sc, Stream *x) {
    const Automaton *a = sc->a;
    const uint8_t *p = x->p, *e = x->e;
    uint64_t seen = 0, more = 0;
    for (; e - p >= 2; p += 2) {
        seen |= a->byte_mask[p[0]];
        more |= a->byte_mask[p[1]];
    }
    if (p < e) seen |= a->byte_mask[*p];
    seen |= more;
    while (seen) {
        int k = __builtin_ctzll(seen);
        seen &= seen - 1;
        for (int32_t o = a->byte_owner_start[k]; o < a->byte_owner_start[k + 1]; o++) {
            push(sc, x, a->byte_owners[o], x->value);
        }
    }
}

/* Walk every value of a stream (at the root, skip where no pattern can start). */
static inline void scan_values(Scan *sc, Stream *x, const int fold) {
    const int skips = sc->a->wm_m || sc->a->use_skip || sc->a->use_teddy;
    while (!sc->failed && stream_start(sc, x, fold)) {
        if (sc->a->n_byte_pats) scan_bytes(sc, x);
        x->p = walk(sc, x, x->p, x->e, skips, 0);
        stream_finish(sc, x);
    }
}

/* Offset of element j of the array (its value j - offset starts there). */
static inline int64_t offset_at(const Scan *sc, Py_ssize_t j) {
    return sc->wide ? ((const int64_t *)sc->offsets)[j] : (int64_t)((const int32_t *)sc->offsets)[j];
}

/* scan_values for a `buffered` automaton (only unanchored, non-empty patterns: a value's start and
 * end change nothing) over values that need no per-value check: the root skip runs over the data
 * buffer from the first value's start to the last one's end, across value boundaries, and only
 * the values where it stops are walked, from there. A pattern starting at p fits in p's value, so
 * a skip that found no start in [p, q) of the buffer found none in the values that range covers. */
static void scan_buffer(Scan *sc, Stream *x) {
    const Automaton *a = sc->a;
    Py_ssize_t j = sc->offset + x->value, last = sc->offset + x->end;
    const uint8_t *p = sc->bytes + offset_at(sc, j), *end = sc->bytes + offset_at(sc, last);
    while (!sc->failed) {
        p = skip_at_root(a, p, end, sc->limit, &x->teddy);
        if (p >= end) break;
        int64_t at = p - sc->bytes, stop;
        while ((stop = offset_at(sc, j + 1)) <= at) j++; /* the value holding p (empty ones pass) */
        if (stop - at < a->min_mid || (sc->valid != NULL && !(sc->valid[j >> 3] & (1u << (j & 7))))) {
            p = sc->bytes + stop; /* no pattern fits in the rest of the value; or a null slot's bytes */
            continue;
        }
        x->value = (int32_t)(j - sc->offset);
        x->s = 0;
        x->v = 0; /* the root (dense row 0) */
        /* to the first position back at the root, or to the value's end (END leads to the root) */
        p = walk(sc, x, p, sc->bytes + stop, 0, 1);
    }
}

/* The patterns starting at p, followed in the trie (child edges only, no failure links) within
 * the value ending at e; each state reached reports its literals (and its suffixes': true hits). */
static inline void follow_trie(Scan *sc, Stream *x, const uint8_t *p, const uint8_t *e) {
    const Automaton *a = sc->a;
    int32_t t = 0, depth = 0;
    for (; p < e; p++, depth++) {
        int sym = a->fold ? ascii_fold[*p] : *p;
        int cls = a->classes[sym];
        if (cls == 0) return;
        const State *st = &a->states[t];
        int32_t next;
        if (st->nchild < 0) {
            int32_t v = a->dense[(size_t)st->child * (size_t)a->width + (size_t)cls];
            next = v >= 0 ? a->dense[(size_t)v + (size_t)a->n_classes] : ~v;
            if (a->depth[next] != depth + 1) return; /* a failure transition: no pattern goes on */
        } else {
            int32_t k = 0;
            const uint16_t *syms = a->symbol + st->child;
            while (k < st->nchild && syms[k] != sym) k++;
            if (k == st->nchild) return;
            next = st->child + k;
        }
        t = next;
        if (a->states[t].emit >= 0) report(sc, x, a->states[t].emit, x->value);
    }
}

/* scan_buffer with the long-window skip: Wu-Manber over the data buffer with a window of lwm_m
 * bytes (every pattern is that long) shifted by the hash of its last LWM_BLOCK bytes; where the
 * shift is 0 a pattern may start at the window's start: the trie is followed from there, then
 * the window moves on by one. A pattern starting at p lies in p's value, so windows across values
 * change nothing. */
static void scan_buffer_long(Scan *sc, Stream *x) {
    const Automaton *a = sc->a;
    const int32_t m = a->lwm_m;
    const int fold = a->fold;
    Py_ssize_t j = sc->offset + x->value, last = sc->offset + x->end;
    const uint8_t *p = sc->bytes + offset_at(sc, j), *end = sc->bytes + offset_at(sc, last);
    uint8_t block[LWM_BLOCK];
    while (!sc->failed && end - p >= m) {
        const uint8_t *tail = p + m - LWM_BLOCK;
        if (fold) {
            for (int b = 0; b < LWM_BLOCK; b++) block[b] = ascii_fold[tail[b]];
        } else {
            memcpy(block, tail, LWM_BLOCK);
        }
        uint32_t h = lwm_hash(block);
        if (!(a->lwm_seen[h >> 6] & ((uint64_t)1 << (h & 63)))) {
            p += m - LWM_BLOCK + 1; /* most blocks are in no pattern: the bitmap answers from the cache */
            continue;
        }
        uint8_t shift = a->lwm_shift[h];
        if (shift) {
            p += shift;
            continue;
        }
        int64_t at = p - sc->bytes, stop;
        while ((stop = offset_at(sc, j + 1)) <= at) j++; /* the value holding p */
        if (stop - at >= m && (sc->valid == NULL || (sc->valid[j >> 3] & (1u << (j & 7))))) {
            x->value = (int32_t)(j - sc->offset);
            follow_trie(sc, x, p, sc->bytes + stop);
        }
        p++;
    }
}

/* The two specialisations: bytes as they are, and ASCII letters folded to lowercase. */
static void scan_stream(Scan *sc, Stream *x) { scan_values(sc, x, 0); }
static void scan_stream_folded(Scan *sc, Stream *x) { scan_values(sc, x, 1); }

static int get_buffer(PyObject *obj, Py_buffer *view, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must support the buffer protocol", what);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(scan_doc,
             "scan(offsets, data, validity, wide, offset, length, relabel=None, n_out=-1)\n\n"
             "Scan an Arrow string array's values; return (literals, values) as int64 bytearrays,\n"
             "every distinct hit sorted by literal then value position.");

/* One Arrow string array to scan: its buffers and place. */
typedef struct {
    Py_buffer offsets, data, validity;
    int have_validity, wide;
    Py_ssize_t offset, length;
} ArrayArgs;

static void array_args_release(ArrayArgs *arr) {
    if (arr->offsets.obj) PyBuffer_Release(&arr->offsets);
    if (arr->data.obj) PyBuffer_Release(&arr->data);
    if (arr->validity.obj) PyBuffer_Release(&arr->validity);
}

/* Take an array's buffers and check them (the offsets index the data without further checks). */
static int array_args_get(ArrayArgs *arr, PyObject *offsets_obj, PyObject *data_obj, PyObject *validity_obj, int wide,
                          Py_ssize_t offset, Py_ssize_t length) {
    memset(arr, 0, sizeof(*arr));
    arr->wide = wide;
    arr->offset = offset;
    arr->length = length;
    arr->have_validity = validity_obj != Py_None;
    if (offset < 0 || length < 0 || length > INT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "bad offset or length");
        return -1;
    }
    if (get_buffer(offsets_obj, &arr->offsets, "offsets") < 0) return -1;
    if (get_buffer(data_obj, &arr->data, "data") < 0) return -1;
    if (arr->have_validity && get_buffer(validity_obj, &arr->validity, "validity") < 0) return -1;
    size_t width = wide ? 8 : 4;
    if ((size_t)arr->offsets.len < (size_t)(offset + length + 1) * width ||
        (arr->have_validity && (size_t)arr->validity.len * 8 < (size_t)(offset + length))) {
        PyErr_SetString(PyExc_ValueError, "buffers too small");
        return -1;
    }
    const uint8_t *ob = (const uint8_t *)arr->offsets.buf;
    int64_t previous = -1;
    for (Py_ssize_t j = offset; j <= offset + length; j++) {
        int64_t o = wide ? ((const int64_t *)ob)[j] : ((const int32_t *)ob)[j];
        if (o < 0 || o > arr->data.len || (previous >= 0 && o < previous)) {
            PyErr_SetString(PyExc_ValueError, "offsets out of range");
            return -1;
        }
        previous = o;
    }
    return 0;
}

/* Scan arrays one after the other, their values numbered on (the second array's first value
 * comes after the first array's last): every distinct hit, sorted by literal then value. */
static PyObject *scan_arrays(Automaton *self, ArrayArgs *arrays, Py_ssize_t n_arrays, PyObject *relabel_obj, int n_out,
                             int fold, int grouped) {
    if (self->states == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "automaton not built");
        return NULL;
    }
    Py_buffer relabel = {0};
    PyObject *result = NULL;
    int have_relabel = relabel_obj != Py_None;
    Stream stream;
    int32_t *counts = NULL;
    Scan sc = {.a = self};
    memset(&stream, 0, sizeof(stream));
    if (have_relabel && get_buffer(relabel_obj, &relabel, "relabel") < 0) goto done;
    if (have_relabel && (size_t)relabel.len < (size_t)self->n_literals * sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "buffers too small");
        goto done;
    }
    int64_t total_length = 0;
    for (Py_ssize_t i = 0; i < n_arrays; i++) total_length += arrays[i].length;
    if (total_length > INT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "too many values");
        goto done;
    }
    if (n_out < 0) n_out = have_relabel ? 0 : self->n_literals;
    if (!have_relabel && n_out < self->n_literals) {
        PyErr_SetString(PyExc_ValueError, "n_out < n_literals without relabel");
        goto done;
    }
    if (have_relabel) {
        const int32_t *r = (const int32_t *)relabel.buf;
        for (int32_t i = 0; i < self->n_literals; i++) {
            if (r[i] >= n_out) {
                PyErr_SetString(PyExc_ValueError, "relabel entry >= n_out");
                goto done;
            }
        }
    }
    sc.relabel = have_relabel ? (const int32_t *)relabel.buf : NULL;
    counts = (int32_t *)calloc((size_t)n_out + 1, sizeof(int32_t));
    stream.stamp = (int32_t *)calloc((size_t)n_out + 1, sizeof(int32_t));
    if (counts == NULL || stream.stamp == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    self->scanning++;
    Py_BEGIN_ALLOW_THREADS;
    int32_t base = 0;
    for (Py_ssize_t i = 0; i < n_arrays && !sc.failed; i++) {
        const ArrayArgs *arr = &arrays[i];
        sc.bytes = (const uint8_t *)arr->data.buf;
        sc.valid = arr->have_validity ? (const uint8_t *)arr->validity.buf : NULL;
        sc.offsets = (const uint8_t *)arr->offsets.buf;
        sc.limit = sc.bytes + arr->data.len;
        sc.wide = arr->wide;
        sc.offset = arr->offset;
        sc.base = base;
        stream.value = 0;
        stream.end = (int32_t)arr->length;
        stream.teddy.base = NULL; /* another buffer: the prefilter's block is no longer there */
        int check_values = fold; /* folding: leave values holding a non-ASCII byte to the caller */
        if (fold && arr->length > 0) {
            /* most arrays are all ASCII: one check of their bytes instead of one per value */
            check_values = has_high_byte(sc.bytes + offset_at(&sc, arr->offset),
                                         sc.bytes + offset_at(&sc, arr->offset + arr->length));
        }
        if (check_values) {
            scan_stream_folded(&sc, &stream);
        } else if (self->lwm_m) {
            scan_buffer_long(&sc, &stream);
        } else if (self->buffered) {
            scan_buffer(&sc, &stream);
        } else {
            scan_stream(&sc, &stream);
        }
        base += (int32_t)arr->length;
    }
    if (!sc.failed) {
        for (size_t i = 0; i < stream.hits.len; i++) counts[stream.hits.lit[i]]++;
        total = stream.hits.len;
    }
    Py_END_ALLOW_THREADS;
    self->scanning--;
    if (sc.failed) {
        PyErr_NoMemory();
        goto done;
    }
    {
        /* grouped: hits per literal (n_out entries) instead of each hit's literal */
        size_t n_first = grouped ? (size_t)n_out : total;
        PyObject *lit_out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(n_first * sizeof(int64_t)));
        PyObject *val_out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(total * sizeof(int64_t)));
        if (lit_out == NULL || val_out == NULL) {
            Py_XDECREF(lit_out);
            Py_XDECREF(val_out);
            goto done;
        }
        int64_t *lits = (int64_t *)PyByteArray_AS_STRING(lit_out);
        int64_t *vals = (int64_t *)PyByteArray_AS_STRING(val_out);
        Py_BEGIN_ALLOW_THREADS;
        /* counting sort by literal: values were found in order, so each literal's come out sorted */
        int32_t running = 0;
        for (int32_t l = 0; l < n_out; l++) {
            int32_t c = counts[l];
            if (grouped) lits[l] = c;
            counts[l] = running;
            running += c;
        }
        const Hits *h = &stream.hits;
        if (grouped) {
            for (size_t i = 0; i < h->len; i++) vals[counts[h->lit[i]]++] = h->val[i];
        } else {
            for (size_t i = 0; i < h->len; i++) {
                int32_t at = counts[h->lit[i]]++;
                lits[at] = h->lit[i];
                vals[at] = h->val[i];
            }
        }
        Py_END_ALLOW_THREADS;
        if (fold) {
            PyObject *skipped_out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(sc.skipped.len * sizeof(int64_t)));
            if (skipped_out == NULL) {
                Py_DECREF(lit_out);
                Py_DECREF(val_out);
                goto done;
            }
            int64_t *skipped = (int64_t *)PyByteArray_AS_STRING(skipped_out);
            for (size_t i = 0; i < sc.skipped.len; i++) skipped[i] = sc.skipped.val[i];
            result = Py_BuildValue("(NNN)", lit_out, val_out, skipped_out);
        } else {
            result = Py_BuildValue("(NN)", lit_out, val_out);
        }
    }
done:
    hits_free(&sc.skipped);
    hits_free(&stream.hits);
    free(stream.stamp);
    free(counts);
    if (relabel.obj) PyBuffer_Release(&relabel);
    return result;
}

static PyObject *scan_impl(Automaton *self, PyObject *args, PyObject *kwds, int fold) {
    static char *kwlist[] = {"offsets", "data", "validity", "wide", "offset", "length", "relabel", "n_out", NULL};
    PyObject *offsets_obj, *data_obj, *validity_obj, *relabel_obj = Py_None;
    int wide;
    Py_ssize_t offset, length;
    int n_out = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOpnn|Oi", kwlist, &offsets_obj, &data_obj, &validity_obj,
                                     &wide, &offset, &length, &relabel_obj, &n_out)) {
        return NULL;
    }
    ArrayArgs arr;
    PyObject *result = NULL;
    if (array_args_get(&arr, offsets_obj, data_obj, validity_obj, wide, offset, length) == 0) {
        result = scan_arrays(self, &arr, 1, relabel_obj, n_out, fold, 0);
    }
    array_args_release(&arr);
    return result;
}

PyDoc_STRVAR(scan_many_doc,
             "scan_many(arrays, fold, relabel=None, n_out=-1, grouped=False)\n\n"
             "scan() (fold: scan_folded()) of several arrays, each an (offsets, data, validity, wide,\n"
             "offset, length) tuple, their values numbered on from one array to the next. grouped: the\n"
             "first bytearray holds each literal's number of hits (n_out int64) instead of each hit's\n"
             "literal.");

static PyObject *Automaton_scan_many(Automaton *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"arrays", "fold", "relabel", "n_out", "grouped", NULL};
    PyObject *arrays_obj, *relabel_obj = Py_None;
    int fold, n_out = -1, grouped = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Op|Oip", kwlist, &arrays_obj, &fold, &relabel_obj, &n_out,
                                     &grouped)) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arrays_obj, "arrays must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    ArrayArgs *arrays = (ArrayArgs *)calloc((size_t)n + 1, sizeof(ArrayArgs));
    PyObject *result = NULL;
    if (arrays == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *offsets_obj, *data_obj, *validity_obj;
        int wide;
        Py_ssize_t offset, length;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, got), "OOOpnn;each array must be (offsets, data, "
                              "validity, wide, offset, length)", &offsets_obj, &data_obj, &validity_obj, &wide,
                              &offset, &length)) {
            goto done;
        }
        if (array_args_get(&arrays[got], offsets_obj, data_obj, validity_obj, wide, offset, length) < 0) {
            got++; /* release what it took */
            goto done;
        }
    }
    result = scan_arrays(self, arrays, n, relabel_obj, n_out, fold, grouped);
done:
    for (Py_ssize_t i = 0; i < got; i++) array_args_release(&arrays[i]);
    free(arrays);
    Py_DECREF(seq);
    return result;
}

static PyObject *Automaton_scan(Automaton *self, PyObject *args, PyObject *kwds) {
    return scan_impl(self, args, kwds, 0);
}

PyDoc_STRVAR(scan_folded_doc,
             "scan_folded(offsets, data, validity, wide, offset, length, relabel=None, n_out=-1)\n\n"
             "scan() with ASCII letters read as lowercase; values holding a non-ASCII byte are not\n"
             "scanned but listed: return (literals, values, skipped value positions) as int64 bytearrays.");

static PyObject *Automaton_scan_folded(Automaton *self, PyObject *args, PyObject *kwds) {
    return scan_impl(self, args, kwds, 1);
}

static PyObject *Automaton_get_n_states(Automaton *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->n_states);
}

static PyObject *Automaton_get_n_literals(Automaton *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->n_literals);
}

static PyObject *Automaton_get_nbytes(Automaton *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->nbytes);
}

static PyObject *Automaton_get_skips(Automaton *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(self->lwm_m       ? "long-window"
                                : self->use_teddy ? "teddy"
                                : self->wm_m      ? "wu-manber"
                                : self->use_skip  ? "bigram"
                                                  : "none");
}

static PyObject *Automaton_get_layout(Automaton *self, void *closure) {
    (void)closure;
    return Py_BuildValue("{sisisisisi}", "states", self->n_states, "dense", self->n_dense, "classes", self->n_classes,
                         "byte_patterns", self->n_byte_pats, "min_mid", self->min_mid);
}

static PyObject *Automaton_get_teddy_rate(Automaton *self, void *closure) {
    (void)closure;
    return PyFloat_FromDouble(self->teddy_rate);
}

static PyObject *Automaton_get_buffered(Automaton *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->buffered);
}

static PyGetSetDef Automaton_getset[] = {
    {"n_states", (getter)Automaton_get_n_states, NULL, "Number of automaton states.", NULL},
    {"n_literals", (getter)Automaton_get_n_literals, NULL, "Number of literal numbers.", NULL},
    {"nbytes", (getter)Automaton_get_nbytes, NULL, "Memory held by the automaton's tables.", NULL},
    {"skips", (getter)Automaton_get_skips, NULL, "How the scan skips text at the root.", NULL},
    {"layout", (getter)Automaton_get_layout, NULL, "Table sizes: states, dense rows, symbol classes, ...", NULL},
    {"teddy_rate", (getter)Automaton_get_teddy_rate, NULL,
     "Estimated share of random positions the nibble prefilter lets through.", NULL},
    {"buffered", (getter)Automaton_get_buffered, NULL,
     "Whether the root skip runs over the data buffer across values (unanchored patterns only).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Automaton_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))Automaton_scan, METH_VARARGS | METH_KEYWORDS, scan_doc},
    {"scan_folded", (PyCFunction)(void (*)(void))Automaton_scan_folded, METH_VARARGS | METH_KEYWORDS,
     scan_folded_doc},
    {"scan_many", (PyCFunction)(void (*)(void))Automaton_scan_many, METH_VARARGS | METH_KEYWORDS, scan_many_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Automaton_doc,
             "Automaton(patterns, n_literals, dense_depth=-1, skip=-1, renumber=True, fold=False, buffered=True)\n\n"
             "Aho-Corasick automaton over (body: bytes, flags: int, literals: sequence of int) patterns;\n"
             "flags 1: anchored at the value's start, 2: at its end. dense_depth: states this shallow get a\n"
             "complete transition row (-1 auto: all of a small automaton's, else 3). skip: -1 auto, 0 none, 1 first-bytes\n"
             "table, 2 Wu-Manber, 3 nibble-mask prefilter; buffered: the skip may run over a whole data\n"
             "buffer when only unanchored, non-empty patterns are present. split_bytes: one-byte unanchored\n"
             "patterns are found by a per-value byte pass instead of the automaton.");

static PyTypeObject AutomatonType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sigma_arrow._cscan.Automaton",
    .tp_basicsize = sizeof(Automaton),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Automaton_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Automaton_init,
    .tp_dealloc = (destructor)Automaton_dealloc,
    .tp_methods = Automaton_methods,
    .tp_getset = Automaton_getset,
};

/* ------------------------------------------------------------------ narrowing a column's rows */

PyDoc_STRVAR(narrow_doc,
             "narrow(kept_bits, place, rows, wide_rows, codes, n_distinct)\n\n"
             "Restrict a column to some rows. kept_bits: bitmap of the kept batch rows (bit r & 7 of\n"
             "byte r >> 3); place: int64 per batch row, its position among the kept rows; rows: batch rows holding a value (int64 if wide_rows, else int32); codes:\n"
             "int64 distinct-value code of each of those rows (< n_distinct). Return (local, codes,\n"
             "distinct) bytearrays: the kept rows' positions (int64), their codes renumbered over the\n"
             "distinct values they use (int32, in code order) and those values' old codes (int64).");

static PyObject *cscan_narrow(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *bits_obj, *place_obj, *rows_obj, *codes_obj;
    int wide_rows;
    Py_ssize_t n_distinct;
    if (!PyArg_ParseTuple(args, "OOOpOn", &bits_obj, &place_obj, &rows_obj, &wide_rows, &codes_obj, &n_distinct)) {
        return NULL;
    }
    Py_buffer bitmap = {0}, place = {0}, rows = {0}, codes = {0};
    PyObject *result = NULL, *local_out = NULL, *codes_out = NULL, *distinct_out = NULL;
    int32_t *renumber = NULL;
    int64_t *kept = NULL;
    int bad = 0;
    if (get_buffer(bits_obj, &bitmap, "kept_bits") < 0) return NULL;
    if (get_buffer(place_obj, &place, "place") < 0) goto done;
    if (get_buffer(rows_obj, &rows, "rows") < 0) goto done;
    if (get_buffer(codes_obj, &codes, "codes") < 0) goto done;
    Py_ssize_t n_place = place.len / 8, n = rows.len / (wide_rows ? 8 : 4);
    if (codes.len / 8 != n || n_distinct < 0 || n_distinct > INT32_MAX || bitmap.len * 8 < n_place) {
        PyErr_SetString(PyExc_ValueError, "rows and codes differ in length, kept_bits too short or bad n_distinct");
        goto done;
    }
    const uint8_t *bits = (const uint8_t *)bitmap.buf;
    const int64_t *place_of = (const int64_t *)place.buf, *code = (const int64_t *)codes.buf;
    const int64_t *row64 = (const int64_t *)rows.buf;
    const int32_t *row32 = (const int32_t *)rows.buf;
    renumber = (int32_t *)calloc((size_t)n_distinct + 1, sizeof(int32_t));
    kept = (int64_t *)malloc(((size_t)n + 1) * sizeof(int64_t));
    if (renumber == NULL || kept == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t n_kept = 0, n_used = 0;
    Py_BEGIN_ALLOW_THREADS;
    uint64_t top = 0; /* the largest row, checked before any lookup (a pass the compiler vectorises) */
    if (wide_rows) {
        for (Py_ssize_t i = 0; i < n; i++) top = (uint64_t)row64[i] > top ? (uint64_t)row64[i] : top;
    } else {
        for (Py_ssize_t i = 0; i < n; i++) top = (uint64_t)(int64_t)row32[i] > top ? (uint64_t)(int64_t)row32[i] : top;
    }
    if (n > 0 && top >= (uint64_t)n_place) bad = 1;
    if (!bad) {
        /* most rows are tested against the bitmap only (it stays in cache); branch-free, as the
         * kept rows are scattered */
        if (wide_rows) {
            for (Py_ssize_t i = 0; i < n; i++) {
                int64_t r = row64[i];
                kept[n_kept] = i;
                n_kept += (bits[r >> 3] >> (r & 7)) & 1;
            }
        } else {
            for (Py_ssize_t i = 0; i < n; i++) {
                int32_t r = row32[i];
                kept[n_kept] = i;
                n_kept += (bits[r >> 3] >> (r & 7)) & 1;
            }
        }
        for (Py_ssize_t k = 0; k < n_kept; k++) {
            int64_t c = code[kept[k]];
            if (UNLIKELY((uint64_t)c >= (uint64_t)n_distinct)) {
                bad = 1;
                break;
            }
            renumber[c] = 1;
        }
    }
    if (!bad) {
        for (Py_ssize_t c = 0; c < n_distinct; c++) {
            if (renumber[c]) renumber[c] = (int32_t)(++n_used); /* 1-based while counting */
        }
    }
    Py_END_ALLOW_THREADS;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "row or code out of range");
        goto done;
    }
    local_out = PyByteArray_FromStringAndSize(NULL, n_kept * 8);
    codes_out = PyByteArray_FromStringAndSize(NULL, n_kept * 4);
    distinct_out = PyByteArray_FromStringAndSize(NULL, n_used * 8);
    if (local_out == NULL || codes_out == NULL || distinct_out == NULL) goto done;
    {
        int64_t *local = (int64_t *)PyByteArray_AS_STRING(local_out);
        int32_t *new_codes = (int32_t *)PyByteArray_AS_STRING(codes_out);
        int64_t *distinct = (int64_t *)PyByteArray_AS_STRING(distinct_out);
        Py_BEGIN_ALLOW_THREADS;
        for (Py_ssize_t k = 0; k < n_kept; k++) {
            Py_ssize_t i = kept[k];
            local[k] = place_of[wide_rows ? row64[i] : row32[i]];
            new_codes[k] = renumber[code[i]] - 1;
        }
        for (Py_ssize_t c = 0; c < n_distinct; c++) {
            if (renumber[c]) distinct[renumber[c] - 1] = c;
        }
        Py_END_ALLOW_THREADS;
    }
    result = Py_BuildValue("(OOO)", local_out, codes_out, distinct_out);
done:
    Py_XDECREF(local_out);
    Py_XDECREF(codes_out);
    Py_XDECREF(distinct_out);
    free(renumber);
    free(kept);
    if (bitmap.obj) PyBuffer_Release(&bitmap);
    if (place.obj) PyBuffer_Release(&place);
    if (rows.obj) PyBuffer_Release(&rows);
    if (codes.obj) PyBuffer_Release(&codes);
    return result;
}

/* ------------------------------------------------------------------ rows per hit value */

PyDoc_STRVAR(rows_at_doc,
             "rows_at(codes, n_distinct, positions)\n\n"
             "How many of `codes` (int64, each < n_distinct: a column's distinct-value code per row)\n"
             "equal each of `positions` (int64): an int64 bytearray, one count per position. One pass\n"
             "(numpy's bincount makes two, and the engine needs the counts of hit values only).");

static PyObject *cscan_rows_at(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *codes_obj, *positions_obj;
    Py_ssize_t n_distinct;
    if (!PyArg_ParseTuple(args, "OnO", &codes_obj, &n_distinct, &positions_obj)) return NULL;
    Py_buffer codes = {0}, positions = {0};
    PyObject *result = NULL;
    int32_t *counts = NULL;
    int bad = 0;
    if (get_buffer(codes_obj, &codes, "codes") < 0) return NULL;
    if (get_buffer(positions_obj, &positions, "positions") < 0) goto done;
    if (n_distinct < 0 || n_distinct > INT32_MAX || codes.len % 8 || positions.len % 8) {
        PyErr_SetString(PyExc_ValueError, "bad n_distinct, or buffers not of int64");
        goto done;
    }
    counts = (int32_t *)calloc((size_t)n_distinct + 1, sizeof(int32_t));
    result = PyByteArray_FromStringAndSize(NULL, positions.len);
    if (counts == NULL || result == NULL) {
        if (counts == NULL) PyErr_NoMemory();
        goto done;
    }
    {
        const int64_t *code = (const int64_t *)codes.buf, *position = (const int64_t *)positions.buf;
        int64_t *out = (int64_t *)PyByteArray_AS_STRING(result);
        Py_ssize_t n = codes.len / 8, m = positions.len / 8;
        Py_BEGIN_ALLOW_THREADS;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (UNLIKELY((uint64_t)code[i] >= (uint64_t)n_distinct)) {
                bad = 1;
                break;
            }
            counts[code[i]]++;
        }
        for (Py_ssize_t i = 0; i < m && !bad; i++) {
            if (UNLIKELY((uint64_t)position[i] > (uint64_t)n_distinct)) {
                bad = 1;
                break;
            }
            out[i] = counts[position[i]];
        }
        Py_END_ALLOW_THREADS;
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "code or position out of range");
        Py_CLEAR(result);
    }
done:
    free(counts);
    if (codes.obj) PyBuffer_Release(&codes);
    if (positions.obj) PyBuffer_Release(&positions);
    return result;
}

static PyMethodDef module_methods[] = {
    {"narrow", cscan_narrow, METH_VARARGS, narrow_doc},
    {"rows_at", cscan_rows_at, METH_VARARGS, rows_at_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cscan", "Native multi-literal scanner (see engine/literals.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__cscan(void) {
    for (int b = 0; b < 256; b++) ascii_fold[b] = (uint8_t)(b >= 'A' && b <= 'Z' ? b + ('a' - 'A') : b);
#if HAVE_AVX2_PATH
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
    if (PyType_Ready(&AutomatonType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&AutomatonType);
    if (PyModule_AddObject(m, "Automaton", (PyObject *)&AutomatonType) < 0) {
        Py_DECREF(&AutomatonType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
