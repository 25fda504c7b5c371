/*
 * sigma_arrow._cdecode: JSON documents -> flattened Arrow string columns, in one C pass.
 *
 * The native fast path of sigma_arrow.flatten.decode_lines. It parses a block of JSON documents,
 * flattens every one exactly as sigma_arrow.flatten.flatten_record does (EVTX lifting rules, dotted
 * names, IR text forms, orjson's compact JSON for arrays and non-lifted objects) and returns, per
 * column, Arrow-ready buffers: int32 offsets, UTF-8 data and a validity bitmap. The Builder type does
 * the same a few documents at a time, copying their values as they come (the caller frees them at once).
 *
 * Exactness first: anything this module is not certain to reproduce bit for bit (invalid JSON or
 * UTF-8, a document that is not an object, duplicate keys, integers beyond 64 bits, non-finite
 * numbers, deep nesting, columns past 2 GiB, ...) makes it REFUSE the whole block (it returns None),
 * and the Python path decodes that block (and reports its problems) as it always did.
 *
 * Written for sigma-arrow; no third-party code. Needs only the CPython headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define MAX_DEPTH 64         /* deeper documents are refused */
#define MAX_NUMBER_CHARS 96  /* longer number lexemes are refused */
#define MAX_OBJECT_KEYS 4096 /* bigger objects are refused (duplicate check) */
#define KEEP_BYTES (64u << 20) /* buffers bigger than this are freed after a call */

/* ------------------------------------------------------------------ refusal reason */

static char refusal[256] = ""; /* of the last call; written with the GIL held */

#define REFUSE(ctx, why) refuse_at((ctx), (why))

/* ------------------------------------------------------------------ short copies and comparisons */

/* Names and values are mostly short: overlapping fixed-size loads instead of a libc call each. */
static inline void copy_bytes(char *dst, const char *src, size_t n) {
    if (n > 16) {
        memcpy(dst, src, n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else if (n > 0) {
        char first = src[0], middle = src[n / 2], last = src[n - 1];
        dst[0] = first;
        dst[n / 2] = middle;
        dst[n - 1] = last;
    }
}

/* memcmp(a, b, n) == 0 */
static inline int same_bytes(const char *a, const char *b, size_t n) {
    if (n > 16) return memcmp(a, b, n) == 0;
    if (n >= 8) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, a, 8);
        memcpy(&b0, b, 8);
        memcpy(&a1, a + n - 8, 8);
        memcpy(&b1, b + n - 8, 8);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    if (n >= 4) {
        uint32_t a0, a1, b0, b1;
        memcpy(&a0, a, 4);
        memcpy(&b0, b, 4);
        memcpy(&a1, a + n - 4, 4);
        memcpy(&b1, b + n - 4, 4);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    return n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
}

/* ------------------------------------------------------------------ growable buffer */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = (char *)realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const char *s, size_t n) {
    if (b->len + n > b->cap && buf_grow(b, n) < 0) return -1;
    copy_bytes(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static inline int buf_putc(Buf *b, char c) {
    if (b->len + 1 > b->cap && buf_grow(b, 1) < 0) return -1;
    b->p[b->len++] = c;
    return 0;
}

static void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------------ parsed document */

enum { J_NULL, J_FALSE, J_TRUE, J_INT, J_FLOAT, J_STR, J_ARR, J_OBJ };

/* One JSON value, in preorder: a container's members follow it, `size` nodes in all (itself too). */
typedef struct {
    const char *key; /* member name (decoded UTF-8) when the parent is an object */
    const char *str; /* J_STR: decoded text; J_INT: canonical decimal text */
    double num;      /* J_FLOAT */
    uint32_t klen, slen;
    uint32_t size;  /* nodes in this subtree */
    uint32_t count; /* members of a container */
    uint8_t type;
} Node;

#define FIRST_CHILD(n) ((n) + 1)
#define NEXT_SIBLING(n) ((n) + (n)->size)

typedef struct DocRef {
    const char *data;
    size_t len;
} DocRef;

typedef struct {
    /* parser */
    const char *p, *end;
    Node *nodes;
    size_t n_nodes, cap_nodes;
    char *arena; /* decoded strings with escapes; capacity >= document length, never moves */
    size_t arena_len, arena_cap;
    int depth;
    int root_nested, root_dotted; /* a top-level member is an object / has a dotted name */
    Py_ssize_t doc;
    const char *doc_begin;   /* the document being flattened */
    const char *direct_value; /* set: the value row_set & co store is this string of the document */
    uint32_t direct_len;
    char why[256];         /* refusal reason */
    PyThreadState *tstate; /* set while the GIL is released */
    /* row being flattened: entries in insertion order, names in a buffer; values go to `vals`,
       the block's value store */
    Buf names, vals, name, join;
    struct Entry *entries;
    size_t n_entries, cap_entries;
    uint32_t *table; /* entry index + 1; 0 = empty */
    uint32_t *stamp; /* row generation of each slot */
    uint32_t table_cap, generation;
    /* columns of the block */
    struct Column *columns;
    size_t n_columns, cap_columns;
    uint32_t *col_table; /* column index + 1 */
    uint32_t col_table_cap;
    /* the documents' UTF-8 text */
    struct DocRef *docs;
    size_t cap_docs;
    /* the block's cells (see commit_row) and each row's cell count */
    struct Cell *cells;
    size_t n_cells, cap_cells;
    uint32_t *row_cells;
    size_t cap_rows;
    uint32_t *hint; /* per field position: the column the previous row's field went to */
    size_t cap_hint;
    /* duplicate-key check of big objects */
    const Node **keys;
    uint32_t *keys_stamp;
    uint32_t keys_cap, keys_generation;
} Ctx;

/* The decoding runs without the GIL (the reader thread of a scan overlaps the engine); the few
   CPython calls it needs (float conversions) take it back around themselves. */
static inline void gil_take(Ctx *c) {
    if (c->tstate != NULL) PyEval_RestoreThread(c->tstate);
}

static inline void gil_give(Ctx *c) {
    if (c->tstate != NULL) c->tstate = PyEval_SaveThread();
}

static int refuse_at(Ctx *ctx, const char *why) {
    if (ctx->why[0] == '\0') PyOS_snprintf(ctx->why, sizeof ctx->why, "document %zd: %s", ctx->doc, why);
    return -1;
}

/* ------------------------------------------------------------------ JSON parser */

static inline void skip_ws(Ctx *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static int new_node(Ctx *c, uint8_t type, const char *key, uint32_t klen) {
    if (c->n_nodes == c->cap_nodes) {
        size_t cap = c->cap_nodes ? c->cap_nodes * 2 : 256;
        Node *nodes = (Node *)realloc(c->nodes, cap * sizeof(Node));
        if (nodes == NULL) return REFUSE(c, "out of memory");
        c->nodes = nodes;
        c->cap_nodes = cap;
    }
    Node *n = &c->nodes[c->n_nodes];
    n->key = key;
    n->klen = klen;
    n->str = NULL;
    n->slen = 0;
    n->num = 0.0;
    n->size = 1;
    n->count = 0;
    n->type = type;
    return (int)c->n_nodes++;
}

/* Length of the valid UTF-8 sequence at s (first byte >= 0x80), 0 if invalid (strict: no overlongs,
   no surrogates, nothing past U+10FFFF). */
static inline int utf8_sequence(const unsigned char *s, const unsigned char *end) {
    unsigned char b0 = s[0];
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (end - s < 2 || (s[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (end - s < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (b0 == 0xE0 && s[1] < 0xA0) return 0;
        if (b0 == 0xED && s[1] > 0x9F) return 0;
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (end - s < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (b0 == 0xF0 && s[1] < 0x90) return 0;
        if (b0 == 0xF4 && s[1] > 0x8F) return 0;
        return 4;
    }
    return 0;
}

static inline int hex4(const char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (uint32_t)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (uint32_t)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') v |= (uint32_t)(ch - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Where the first byte of the eight at s that is a quote, a backslash, a control character or
   non-ASCII is (8: none). The lowest flagged byte of each test is exact (a false alarm can only sit
   above a true one), so the lowest of all is too. Little-endian loads; elsewhere a byte-wise scan. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline unsigned special_at(const unsigned char *s) {
    uint64_t w, quote, backslash;
    memcpy(&w, s, 8);
    quote = w ^ 0x2222222222222222ULL;
    backslash = w ^ 0x5C5C5C5C5C5C5C5CULL;
    uint64_t alarm = (((quote - 0x0101010101010101ULL) & ~quote) |
                      ((backslash - 0x0101010101010101ULL) & ~backslash) | (w - 0x2020202020202020ULL) | w) &
                     0x8080808080808080ULL;
    return alarm ? (unsigned)__builtin_ctzll(alarm) >> 3 : 8;
}
#else
static inline unsigned special_at(const unsigned char *s) {
    unsigned i = 0;
    while (i < 8 && s[i] != '"' && s[i] != '\\' && s[i] >= 0x20 && s[i] < 0x80) i++;
    return i;
}
#endif

/* Advance s to the first special byte (see special_at) before end, or to end. */
#if defined(__SSE2__)
static inline const unsigned char *skip_plain(const unsigned char *s, const unsigned char *end) {
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20 - 0x80); /* signed: bytes below 0x20 compare less */
    while (end - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
        __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        /* x - 0x80 as signed < 0x20 - 0x80: 0x00..0x1F; the sign bit of v itself: 0x80..0xFF */
        hit = _mm_or_si128(hit, _mm_cmplt_epi8(_mm_xor_si128(v, _mm_set1_epi8((char)0x80)), space));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(hit, v));
        if (mask) return s + __builtin_ctz(mask);
        s += 16;
    }
    if (end - s >= 8) {
        unsigned at = special_at(s);
        if (at < 8) return s + at;
        s += 8;
    }
    while (s < end && *s != '"' && *s != '\\' && *s >= 0x20 && *s < 0x80) s++;
    return s;
}
#else
static inline const unsigned char *skip_plain(const unsigned char *s, const unsigned char *end) {
    while (end - s >= 8) {
        unsigned at = special_at(s);
        if (at < 8) return s + at;
        s += 8;
    }
    while (s < end && *s != '"' && *s != '\\' && *s >= 0x20 && *s < 0x80) s++;
    return s;
}
#endif

/* Parse a string at c->p (on the opening quote): its decoded text, pointing into the input when it
   has no escape, else into the arena. */
static int parse_string(Ctx *c, const char **out, uint32_t *out_len) {
    const unsigned char *s = (const unsigned char *)c->p + 1;
    const unsigned char *end = (const unsigned char *)c->end;
    const unsigned char *start = s;
    /* fast scan: no escape; jump from special byte to special byte */
    for (;;) {
        s = skip_plain(s, end);
        if (s >= end) return REFUSE(c, "unterminated string");
        unsigned char ch = *s;
        if (ch == '"') {
            if ((size_t)(s - start) > UINT32_MAX) return REFUSE(c, "string too long");
            *out = (const char *)start;
            *out_len = (uint32_t)(s - start);
            c->p = (const char *)s + 1;
            return 0;
        }
        if (ch == '\\') break;
        if (ch < 0x20) return REFUSE(c, "control character in string");
        int n = utf8_sequence(s, end);
        if (n == 0) return REFUSE(c, "invalid UTF-8");
        s += n;
    }
    /* slow path: decode into the arena, plain runs copied whole */
    char *dst0 = c->arena + c->arena_len;
    char *dst = dst0;
    size_t prefix = (size_t)(s - start);
    memcpy(dst, start, prefix);
    dst += prefix;
    for (;;) {
        const unsigned char *run = s;
        s = skip_plain(s, end);
        memcpy(dst, run, (size_t)(s - run));
        dst += s - run;
        if (s >= end) return REFUSE(c, "unterminated string");
        unsigned char ch = *s;
        if (ch == '"') break;
        if (ch == '\\') {
            if (end - s < 2) return REFUSE(c, "unterminated string");
            unsigned char e = s[1];
            s += 2;
            switch (e) {
                case '"': *dst++ = '"'; break;
                case '\\': *dst++ = '\\'; break;
                case '/': *dst++ = '/'; break;
                case 'b': *dst++ = '\b'; break;
                case 'f': *dst++ = '\f'; break;
                case 'n': *dst++ = '\n'; break;
                case 'r': *dst++ = '\r'; break;
                case 't': *dst++ = '\t'; break;
                case 'u': {
                    uint32_t cp;
                    if (end - s < 4 || hex4((const char *)s, &cp) < 0) return REFUSE(c, "bad \\u escape");
                    s += 4;
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        uint32_t low;
                        if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4((const char *)s + 2, &low) < 0 ||
                            low < 0xDC00 || low > 0xDFFF)
                            return REFUSE(c, "lone surrogate escape");
                        s += 6;
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                        return REFUSE(c, "lone surrogate escape");
                    }
                    if (cp < 0x80) {
                        *dst++ = (char)cp;
                    } else if (cp < 0x800) {
                        *dst++ = (char)(0xC0 | (cp >> 6));
                        *dst++ = (char)(0x80 | (cp & 0x3F));
                    } else if (cp < 0x10000) {
                        *dst++ = (char)(0xE0 | (cp >> 12));
                        *dst++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                        *dst++ = (char)(0x80 | (cp & 0x3F));
                    } else {
                        *dst++ = (char)(0xF0 | (cp >> 18));
                        *dst++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                        *dst++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                        *dst++ = (char)(0x80 | (cp & 0x3F));
                    }
                    break;
                }
                default: return REFUSE(c, "bad escape");
            }
            continue;
        }
        if (ch < 0x20) return REFUSE(c, "control character in string");
        int n = utf8_sequence(s, end);
        if (n == 0) return REFUSE(c, "invalid UTF-8");
        memcpy(dst, s, (size_t)n);
        dst += n;
        s += n;
    }
    if ((size_t)(dst - dst0) > UINT32_MAX) return REFUSE(c, "string too long");
    *out = dst0;
    *out_len = (uint32_t)(dst - dst0);
    c->arena_len += (size_t)(dst - dst0);
    c->p = (const char *)s + 1;
    return 0;
}

static const char INT64_MIN_DIGITS[] = "9223372036854775808";   /* magnitude of -2**63 */
static const char UINT64_MAX_DIGITS[] = "18446744073709551615"; /* 2**64 - 1 */

/* A number lexeme: integers within [-2**63, 2**64-1] keep their text, others parse as a double. */
static int parse_number(Ctx *c, int index) {
    const char *s = c->p, *end = c->end, *q = s;
    int negative = 0, is_float = 0;
    if (q < end && *q == '-') {
        negative = 1;
        q++;
    }
    const char *digits = q;
    if (q < end && *q == '0') {
        q++;
    } else if (q < end && *q >= '1' && *q <= '9') {
        while (q < end && *q >= '0' && *q <= '9') q++;
    } else {
        return REFUSE(c, "invalid number");
    }
    size_t n_digits = (size_t)(q - digits);
    if (q < end && *q == '.') {
        is_float = 1;
        q++;
        if (q >= end || *q < '0' || *q > '9') return REFUSE(c, "invalid number");
        while (q < end && *q >= '0' && *q <= '9') q++;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        is_float = 1;
        q++;
        if (q < end && (*q == '+' || *q == '-')) q++;
        if (q >= end || *q < '0' || *q > '9') return REFUSE(c, "invalid number");
        while (q < end && *q >= '0' && *q <= '9') q++;
    }
    size_t len = (size_t)(q - s);
    Node *n = &c->nodes[index];
    if (!is_float) {
        /* orjson turns integers outside 64 bits into floats: leave those to the Python path */
        const char *limit = negative ? INT64_MIN_DIGITS : UINT64_MAX_DIGITS;
        size_t limit_len = strlen(limit);
        if (n_digits > limit_len || (n_digits == limit_len && memcmp(digits, limit, limit_len) > 0))
            return REFUSE(c, "integer beyond 64 bits");
        n->type = J_INT;
        if (negative && n_digits == 1 && digits[0] == '0') {
            n->str = "0"; /* -0 is the integer 0 */
            n->slen = 1;
        } else {
            n->str = s;
            n->slen = (uint32_t)len;
        }
        c->p = q;
        return 0;
    }
    if (len >= MAX_NUMBER_CHARS) return REFUSE(c, "number too long");
    char text[MAX_NUMBER_CHARS + 1];
    memcpy(text, s, len);
    text[len] = '\0';
    char *stop = NULL;
    gil_take(c);
    double value = PyOS_string_to_double(text, &stop, NULL);
    int failed = value == -1.0 && PyErr_Occurred();
    if (failed) PyErr_Clear();
    gil_give(c);
    if (failed) return REFUSE(c, "unparsable number");
    if (stop != text + len || !isfinite(value)) return REFUSE(c, "non-finite number");
    n->type = J_FLOAT;
    n->num = value;
    c->p = q;
    return 0;
}

static int has_duplicate_keys(Ctx *c, Node *obj);

static int parse_value(Ctx *c, const char *key, uint32_t klen);

static int parse_container(Ctx *c, int is_object, const char *key, uint32_t klen) {
    int index = new_node(c, is_object ? J_OBJ : J_ARR, key, klen);
    if (index < 0) return -1;
    if (++c->depth > MAX_DEPTH) return REFUSE(c, "nesting too deep");
    char close = is_object ? '}' : ']';
    uint32_t count = 0;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
    } else {
        for (;;) {
            const char *member_key = NULL;
            uint32_t member_klen = 0;
            if (is_object) {
                if (c->p >= c->end || *c->p != '"') return REFUSE(c, "expected a key");
                if (parse_string(c, &member_key, &member_klen) < 0) return -1;
                skip_ws(c);
                if (c->p >= c->end || *c->p != ':') return REFUSE(c, "expected ':'");
                c->p++;
                skip_ws(c);
            }
            size_t member = c->n_nodes;
            if (parse_value(c, member_key, member_klen) < 0) return -1;
            if (c->depth == 1 && is_object) { /* a top-level member: can the document take the flat path? */
                if (c->nodes[member].type == J_OBJ) c->root_nested = 1;
                if (memchr(member_key, '.', member_klen) != NULL) c->root_dotted = 1;
            }
            count++;
            skip_ws(c);
            if (c->p >= c->end) return REFUSE(c, "unterminated container");
            if (*c->p == ',') {
                c->p++;
                skip_ws(c);
                continue;
            }
            if (*c->p == close) {
                c->p++;
                break;
            }
            return REFUSE(c, "expected ',' or a closing bracket");
        }
    }
    c->depth--;
    Node *n = &c->nodes[index];
    n->size = (uint32_t)(c->n_nodes - (size_t)index);
    n->count = count;
    if (is_object) {
        if (count > MAX_OBJECT_KEYS) return REFUSE(c, "object too big");
        if (has_duplicate_keys(c, n)) return REFUSE(c, "duplicate key");
    }
    return 0;
}

static int parse_value(Ctx *c, const char *key, uint32_t klen) {
    if (c->p >= c->end) return REFUSE(c, "unexpected end");
    char ch = *c->p;
    int index;
    switch (ch) {
        case '{': return parse_container(c, 1, key, klen);
        case '[': return parse_container(c, 0, key, klen);
        case '"': {
            index = new_node(c, J_STR, key, klen);
            if (index < 0) return -1;
            const char *s;
            uint32_t len;
            if (parse_string(c, &s, &len) < 0) return -1;
            c->nodes[index].str = s;
            c->nodes[index].slen = len;
            return 0;
        }
        case 't':
            if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) {
                c->p += 4;
                return new_node(c, J_TRUE, key, klen) < 0 ? -1 : 0;
            }
            return REFUSE(c, "invalid literal");
        case 'f':
            if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) {
                c->p += 5;
                return new_node(c, J_FALSE, key, klen) < 0 ? -1 : 0;
            }
            return REFUSE(c, "invalid literal");
        case 'n':
            if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) {
                c->p += 4;
                return new_node(c, J_NULL, key, klen) < 0 ? -1 : 0;
            }
            return REFUSE(c, "invalid literal");
        default:
            if (ch == '-' || (ch >= '0' && ch <= '9')) {
                index = new_node(c, J_INT, key, klen);
                if (index < 0) return -1;
                return parse_number(c, index);
            }
            return REFUSE(c, "unexpected character");
    }
}

/* Parse one document; it must be a JSON object. */
static int parse_document(Ctx *c, const char *data, size_t len) {
    c->p = data;
    c->doc_begin = data;
    c->end = data + len;
    c->n_nodes = 0;
    c->depth = 0;
    c->root_nested = 0;
    c->root_dotted = 0;
    c->arena_len = 0;
    if (len > c->arena_cap) {
        char *arena = (char *)realloc(c->arena, len);
        if (arena == NULL) return REFUSE(c, "out of memory");
        c->arena = arena;
        c->arena_cap = len;
    }
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{') return REFUSE(c, "not a JSON object");
    if (parse_value(c, NULL, 0) < 0) return -1;
    skip_ws(c);
    if (c->p != c->end) return REFUSE(c, "content after the document");
    return 0;
}

/* ------------------------------------------------------------------ hashing, key lookup */

/* A name's hash, eight bytes at a time (collisions only cost a comparison). The tail is read with
   overlapping loads, never byte by byte (a variable-length copy stalls on the load after it). */
static inline uint32_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    const unsigned char *u = (const unsigned char *)s;
    size_t rest = n;
    while (rest >= 8) {
        uint64_t w;
        memcpy(&w, u, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        u += 8;
        rest -= 8;
    }
    if (rest) {
        uint64_t w;
        if (n >= 8) { /* the last eight bytes of the name (some hashed already) */
            memcpy(&w, u + rest - 8, 8);
        } else if (rest >= 4) {
            uint32_t lo, hi;
            memcpy(&lo, u, 4);
            memcpy(&hi, u + rest - 4, 4);
            w = ((uint64_t)hi << 32) | lo;
        } else {
            w = (uint64_t)u[0] | ((uint64_t)u[rest / 2] << 8) | ((uint64_t)u[rest - 1] << 16);
        }
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
        h ^= h >> 29;
    }
    return (uint32_t)(h ^ (h >> 32));
}

static inline int key_is(const Node *n, const char *key, size_t len) {
    return n->klen == len && same_bytes(n->key, key, len);
}

#define KEY_IS(n, lit) key_is((n), lit, sizeof(lit) - 1)

static int has_duplicate_keys(Ctx *c, Node *obj) {
    uint32_t count = obj->count;
    if (count < 2) return 0;
    if (count <= 12) {
        const Node *members[12];
        const Node *m = FIRST_CHILD(obj);
        for (uint32_t i = 0; i < count; i++, m = NEXT_SIBLING(m)) {
            for (uint32_t j = 0; j < i; j++)
                if (members[j]->klen == m->klen && same_bytes(members[j]->key, m->key, m->klen)) return 1;
            members[i] = m;
        }
        return 0;
    }
    /* a small open-addressing set of the keys, cleared by bumping a generation stamp */
    if (count * 2 > c->keys_cap) {
        uint32_t cap = c->keys_cap ? c->keys_cap : 64;
        while (count * 2 > cap) cap *= 2;
        const Node **keys = (const Node **)malloc(cap * sizeof(Node *));
        uint32_t *stamps = (uint32_t *)calloc(cap, sizeof(uint32_t));
        if (keys == NULL || stamps == NULL) {
            free((void *)keys);
            free(stamps);
            return 1; /* refused either way */
        }
        free((void *)c->keys);
        free(c->keys_stamp);
        c->keys = keys;
        c->keys_stamp = stamps;
        c->keys_cap = cap;
        c->keys_generation = 0;
    }
    if (++c->keys_generation == 0) {
        memset(c->keys_stamp, 0, c->keys_cap * sizeof(uint32_t));
        c->keys_generation = 1;
    }
    uint32_t mask = c->keys_cap - 1, generation = c->keys_generation;
    const Node *m = FIRST_CHILD(obj);
    for (uint32_t i = 0; i < count; i++, m = NEXT_SIBLING(m)) {
        uint32_t slot = hash_bytes(m->key, m->klen) & mask;
        while (c->keys_stamp[slot] == generation) {
            const Node *other = c->keys[slot];
            if (other->klen == m->klen && same_bytes(other->key, m->key, m->klen)) return 1;
            slot = (slot + 1) & mask;
        }
        c->keys_stamp[slot] = generation;
        c->keys[slot] = m;
    }
    return 0;
}

/* Member `key` of an object node, or NULL. */
static const Node *get_member(const Node *obj, const char *key, size_t len) {
    if (obj == NULL || obj->type != J_OBJ) return NULL;
    const Node *m = FIRST_CHILD(obj);
    for (uint32_t i = 0; i < obj->count; i++, m = NEXT_SIBLING(m))
        if (key_is(m, key, len)) return m;
    return NULL;
}

#define GET(obj, lit) get_member((obj), lit, sizeof(lit) - 1)

/* ------------------------------------------------------------------ the row being flattened */

typedef struct Entry {
    const char *direct; /* the name, when it is a key of the document (else at names[name_at]) */
    const char *value;  /* the value, when it is a string of the document (else at vals[value_at]) */
    size_t name_at, value_at;
    uint32_t name_len, value_len;
    uint32_t hash;
    int hashed;
} Entry;

static int row_table_grow(Ctx *c) {
    uint32_t cap = c->table_cap ? c->table_cap * 2 : 64;
    uint32_t *table = (uint32_t *)calloc(cap, sizeof(uint32_t));
    uint32_t *stamp = (uint32_t *)calloc(cap, sizeof(uint32_t));
    if (table == NULL || stamp == NULL) {
        free(table);
        free(stamp);
        return REFUSE(c, "out of memory");
    }
    free(c->table);
    free(c->stamp);
    c->table = table;
    c->stamp = stamp;
    c->table_cap = cap;
    c->generation++;
    for (size_t i = 0; i < c->n_entries; i++) {
        uint32_t slot = c->entries[i].hash & (cap - 1);
        while (c->stamp[slot] == c->generation) slot = (slot + 1) & (cap - 1);
        c->stamp[slot] = c->generation;
        c->table[slot] = (uint32_t)i + 1;
    }
    return 0;
}

static void row_reset(Ctx *c) {
    c->n_entries = 0;
    c->names.len = 0;
    c->generation++;
    if (c->generation == 0) { /* wrapped: clear the stamps */
        memset(c->stamp, 0, c->table_cap * sizeof(uint32_t));
        c->generation = 1;
    }
}

/* Index of the entry named `name`, or -1; *slot_out receives where it would go. */
static long row_find(Ctx *c, const char *name, size_t len, uint32_t hash, uint32_t *slot_out) {
    uint32_t mask = c->table_cap - 1;
    uint32_t slot = hash & mask;
    while (c->stamp[slot] == c->generation) {
        const Entry *e = &c->entries[c->table[slot] - 1];
        if (e->hash == hash && e->name_len == len &&
            same_bytes(e->direct != NULL ? e->direct : c->names.p + e->name_at, name, len))
            return (long)c->table[slot] - 1;
        slot = (slot + 1) & mask;
    }
    *slot_out = slot;
    return -1;
}

/* A value is what was written at vals[value_at:], or c->direct_value when that is set. */
static inline uint32_t value_len(const Ctx *c, size_t value_at) {
    return c->direct_value != NULL ? c->direct_len : (uint32_t)(c->vals.len - value_at);
}

/* A name that stays where it is until the row is committed: a key or string of the document (or
   its decoded copy in the arena). Entries keep such names by reference instead of copying them. */
static inline int stable_name(const Ctx *c, const char *name) {
    return (name >= c->doc_begin && name < c->end) || (name >= c->arena && name < c->arena + c->arena_cap);
}

/* out[name] = the value (a dict assignment: an existing key keeps its
   place and takes the new value); `hash` is hash_bytes(name, len). */
static int row_set_hashed(Ctx *c, const char *name, size_t len, uint32_t hash, size_t value_at) {
    if (len > UINT32_MAX || c->vals.len - value_at > UINT32_MAX) return REFUSE(c, "value too long");
    uint32_t slot;
    long found = row_find(c, name, len, hash, &slot);
    if (found >= 0) {
        c->entries[found].value = c->direct_value;
        c->entries[found].value_at = value_at;
        c->entries[found].value_len = value_len(c, value_at);
        return 0;
    }
    if ((c->n_entries + 1) * 2 > c->table_cap) {
        if (row_table_grow(c) < 0) return -1;
        row_find(c, name, len, hash, &slot);
    }
    if (c->n_entries == c->cap_entries) {
        size_t cap = c->cap_entries ? c->cap_entries * 2 : 64;
        Entry *entries = (Entry *)realloc(c->entries, cap * sizeof(Entry));
        if (entries == NULL) return REFUSE(c, "out of memory");
        c->entries = entries;
        c->cap_entries = cap;
    }
    Entry *e = &c->entries[c->n_entries];
    e->hashed = 1;
    if (stable_name(c, name)) {
        e->direct = name;
        e->name_at = 0;
    } else {
        e->direct = NULL;
        e->name_at = c->names.len;
        if (buf_put(&c->names, name, len) < 0) return REFUSE(c, "out of memory");
    }
    e->name_len = (uint32_t)len;
    e->value = c->direct_value;
    e->value_at = value_at;
    e->value_len = value_len(c, value_at);
    e->hash = hash;
    c->stamp[slot] = c->generation;
    c->table[slot] = (uint32_t)c->n_entries + 1;
    c->n_entries++;
    return 0;
}

static int row_set(Ctx *c, const char *name, size_t len, size_t value_at) {
    return row_set_hashed(c, name, len, hash_bytes(name, len), value_at);
}

/* Append a field whose name cannot clash with another (flat documents): no lookup. */
static int row_append(Ctx *c, const char *name, uint32_t len, size_t value_at) {
    if (c->vals.len - value_at > UINT32_MAX) return REFUSE(c, "value too long");
    if (c->n_entries == c->cap_entries) {
        size_t cap = c->cap_entries ? c->cap_entries * 2 : 64;
        Entry *entries = (Entry *)realloc(c->entries, cap * sizeof(Entry));
        if (entries == NULL) return REFUSE(c, "out of memory");
        c->entries = entries;
        c->cap_entries = cap;
    }
    Entry *e = &c->entries[c->n_entries++];
    e->direct = name;
    e->hashed = 0;
    e->hash = 0;
    e->name_at = 0;
    e->name_len = len;
    e->value = c->direct_value;
    e->value_at = value_at;
    e->value_len = value_len(c, value_at);
    return 0;
}

/* _put: store under `name`, or under `path` when `name` is already taken. */
static int row_put(Ctx *c, const char *name, size_t len, const char *path, size_t path_len, size_t value_at) {
    uint32_t hash = hash_bytes(name, len), slot;
    if (row_find(c, name, len, hash, &slot) >= 0) return row_set(c, path, path_len, value_at);
    return row_set_hashed(c, name, len, hash, value_at);
}

/* row_put with path = prefix + name, spelled out only when `name` is taken. */
static int row_put_prefixed(Ctx *c, const char *name, size_t len, const char *prefix, size_t prefix_len,
                            size_t value_at) {
    uint32_t hash = hash_bytes(name, len), slot;
    if (row_find(c, name, len, hash, &slot) < 0) return row_set_hashed(c, name, len, hash, value_at);
    c->name.len = 0;
    if (buf_put(&c->name, prefix, prefix_len) < 0 || buf_put(&c->name, name, len) < 0)
        return REFUSE(c, "out of memory");
    return row_set(c, c->name.p, c->name.len, value_at);
}

/* ------------------------------------------------------------------ text forms */

#define OOM(c) REFUSE((c), "out of memory")
#define PUT(c, s, n) \
    do { \
        if (buf_put(&(c)->vals, (s), (n)) < 0) return OOM(c); \
    } while (0)
#define PUTLIT(c, lit) PUT(c, lit, sizeof(lit) - 1)

/* Python's str() of an integral double (str(int(x))). */
static int write_integral_float(Ctx *c, double value) {
    if (fabs(value) < 9.0e18) {
        char digits[32];
        int n = PyOS_snprintf(digits, sizeof digits, "%lld", (long long)value);
        PUT(c, digits, (size_t)n);
        return 0;
    }
    /* beyond 64 bits: Python's own int -> str */
    char digits[400]; /* |x| < 2**1024 has at most 309 digits */
    Py_ssize_t n = -1;
    gil_take(c);
    PyObject *integer = PyLong_FromDouble(value);
    PyObject *text = integer != NULL ? PyObject_Str(integer) : NULL;
    const char *s = text != NULL ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
    if (s != NULL && n > 0 && (size_t)n < sizeof digits) memcpy(digits, s, (size_t)n);
    else n = -1;
    Py_XDECREF(text);
    Py_XDECREF(integer);
    if (PyErr_Occurred()) PyErr_Clear();
    gil_give(c);
    if (n < 0) return REFUSE(c, "float conversion failed");
    PUT(c, digits, (size_t)n);
    return 0;
}

/* repr(x) for a finite double. json_style: orjson.dumps' spelling instead (fixed notation down to
   1e-5, exponents without zero padding: 1e-7 rather than 1e-07). */
static int write_float_repr(Ctx *c, double value, int json_style) {
    char r[64];
    size_t n = 0;
    gil_take(c);
    char *python = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (python != NULL) {
        n = strlen(python);
        if (n < sizeof r) memcpy(r, python, n + 1);
        else n = 0;
        PyMem_Free(python);
    } else {
        PyErr_Clear();
    }
    gil_give(c);
    if (n == 0) return REFUSE(c, "float conversion failed");
    int rc = 0;
    char *e = json_style ? strchr(r, 'e') : NULL;
    if (e == NULL) {
        rc = buf_put(&c->vals, r, n);
    } else {
        long exponent = strtol(e + 1, NULL, 10);
        const char *mantissa = r;
        size_t mantissa_len = (size_t)(e - r);
        if (exponent == -5) {
            /* 1.2345e-05 -> 0.000012345 */
            if (*mantissa == '-') {
                rc |= buf_putc(&c->vals, '-');
                mantissa++;
                mantissa_len--;
            }
            rc |= buf_put(&c->vals, "0.0000", 6);
            for (size_t i = 0; i < mantissa_len; i++)
                if (mantissa[i] != '.') rc |= buf_putc(&c->vals, mantissa[i]);
        } else {
            char tail[16];
            int t = PyOS_snprintf(tail, sizeof tail, exponent < 0 ? "e-%ld" : "e+%ld",
                                  exponent < 0 ? -exponent : exponent);
            rc |= buf_put(&c->vals, mantissa, mantissa_len);
            rc |= buf_put(&c->vals, tail, t > 0 && (size_t)t < sizeof tail ? (size_t)t : 0);
        }
    }
    if (rc != 0) return OOM(c);
    return 0;
}

static const char HEX[] = "0123456789abcdef";

/* A JSON string literal as orjson writes it. */
static int write_json_string(Ctx *c, const char *s, size_t n) {
    if (buf_grow(&c->vals, n + 2) < 0) return OOM(c);
    c->vals.p[c->vals.len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        PUT(c, s + run, i - run);
        run = i + 1;
        char esc[6];
        switch (ch) {
            case '"': PUTLIT(c, "\\\""); break;
            case '\\': PUTLIT(c, "\\\\"); break;
            case '\b': PUTLIT(c, "\\b"); break;
            case '\f': PUTLIT(c, "\\f"); break;
            case '\n': PUTLIT(c, "\\n"); break;
            case '\r': PUTLIT(c, "\\r"); break;
            case '\t': PUTLIT(c, "\\t"); break;
            default:
                esc[0] = '\\';
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = HEX[ch >> 4];
                esc[5] = HEX[ch & 15];
                PUT(c, esc, 6);
        }
    }
    PUT(c, s + run, n - run);
    if (buf_putc(&c->vals, '"') < 0) return OOM(c);
    return 0;
}

/* Member-name filters for dumping an object without some of its keys. */
#define SKIP_NONE 0
#define SKIP_ATTRIBUTES 1 /* "#attributes" */
#define SKIP_DATA_NAME 2  /* "#attributes" and "@Name" */

static inline int skipped(const Node *m, int skip) {
    if (skip == SKIP_NONE) return 0;
    if (KEY_IS(m, "#attributes")) return 1;
    return skip == SKIP_DATA_NAME && KEY_IS(m, "@Name");
}

/* orjson.dumps(value): compact JSON text. */
static int write_json(Ctx *c, const Node *n, int skip) {
    switch (n->type) {
        case J_NULL: PUTLIT(c, "null"); return 0;
        case J_TRUE: PUTLIT(c, "true"); return 0;
        case J_FALSE: PUTLIT(c, "false"); return 0;
        case J_INT: PUT(c, n->str, n->slen); return 0;
        case J_FLOAT: return write_float_repr(c, n->num, 1);
        case J_STR: return write_json_string(c, n->str, n->slen);
        case J_ARR:
        case J_OBJ: {
            int is_object = n->type == J_OBJ;
            if (buf_putc(&c->vals, is_object ? '{' : '[') < 0) return OOM(c);
            const Node *m = FIRST_CHILD(n);
            int first = 1;
            for (uint32_t i = 0; i < n->count; i++, m = NEXT_SIBLING(m)) {
                if (is_object && skipped(m, skip)) continue;
                if (!first && buf_putc(&c->vals, ',') < 0) return OOM(c);
                first = 0;
                if (is_object) {
                    if (write_json_string(c, m->key, m->klen) < 0) return -1;
                    if (buf_putc(&c->vals, ':') < 0) return OOM(c);
                }
                if (write_json(c, m, SKIP_NONE) < 0) return -1;
            }
            if (buf_putc(&c->vals, is_object ? '}' : ']') < 0) return OOM(c);
            return 0;
        }
    }
    return REFUSE(c, "unknown node");
}

/* _text: the IR text form. Returns 1 when a text was written, 0 for None (null), -1 to refuse. */
static int write_text(Ctx *c, const Node *n, int skip) {
    switch (n->type) {
        case J_NULL: return 0;
        case J_STR: PUT(c, n->str, n->slen); return 1;
        case J_INT: PUT(c, n->str, n->slen); return 1;
        case J_TRUE: PUTLIT(c, "true"); return 1;
        case J_FALSE: PUTLIT(c, "false"); return 1;
        case J_FLOAT:
            if (n->num == floor(n->num)) {
                if (write_integral_float(c, n->num) < 0) return -1;
            } else if (write_float_repr(c, n->num, 0) < 0) {
                return -1;
            }
            return 1;
        default: return write_json(c, n, skip) < 0 ? -1 : 1;
    }
}

/* _element_text: an element's "#text" (a list of texts joined by newlines), None for an element with
   attributes only, else its text form. `skip` hides members (the filtered dict _lift_data builds). */
static int write_element_text(Ctx *c, const Node *n, int skip) {
    if (n->type == J_OBJ) {
        const Node *text = NULL;
        uint32_t visible = 0;
        int has_attributes = 0;
        const Node *m = FIRST_CHILD(n);
        for (uint32_t i = 0; i < n->count; i++, m = NEXT_SIBLING(m)) {
            if (skipped(m, skip)) continue;
            visible++;
            if (KEY_IS(m, "#text")) text = m;
            else if (KEY_IS(m, "#attributes")) has_attributes = 1;
        }
        if (text != NULL) {
            if (text->type != J_ARR) return write_text(c, text, SKIP_NONE);
            const Node *item = FIRST_CHILD(text);
            int first = 1;
            for (uint32_t i = 0; i < text->count; i++, item = NEXT_SIBLING(item)) {
                if (item->type == J_NULL) continue;
                if (!first && buf_putc(&c->vals, '\n') < 0) return OOM(c);
                first = 0;
                if (write_text(c, item, SKIP_NONE) < 0) return -1;
            }
            return 1;
        }
        if (visible == 1 && has_attributes) return 0;
    }
    return write_text(c, n, skip);
}

/* ------------------------------------------------------------------ flattening (flatten_record) */

static int name_set(Buf *b, const char *a, size_t alen, const char *s, size_t slen) {
    b->len = 0;
    if (buf_put(b, a, alen) < 0 || buf_put(b, s, slen) < 0) return -1;
    return 0;
}

static const char *const ATTRIBUTE_ONLY[] = {"Provider", "TimeCreated", "Execution", "Security", "Correlation"};

static int attribute_only(const Node *m) {
    for (size_t i = 0; i < sizeof ATTRIBUTE_ONLY / sizeof ATTRIBUTE_ONLY[0]; i++)
        if (key_is(m, ATTRIBUTE_ONLY[i], strlen(ATTRIBUTE_ONLY[i]))) return 1;
    return 0;
}

/* Write a value's text and store it under `name` (skipping None). */
/* A string node that points into the document (not decoded into the arena): stored by reference. */
static inline int in_document(const Ctx *c, const Node *n) {
    return n->type == J_STR && n->str >= c->doc_begin && n->str <= c->end;
}

static int set_text(Ctx *c, const char *name, size_t len, const Node *value, int element) {
    if (in_document(c, value)) {
        c->direct_value = value->str;
        c->direct_len = value->slen;
        int rc = row_set(c, name, len, c->vals.len);
        c->direct_value = NULL;
        return rc;
    }
    size_t at = c->vals.len;
    int rc = element ? write_element_text(c, value, SKIP_NONE) : write_text(c, value, SKIP_NONE);
    if (rc < 0) return -1;
    if (rc == 0) return 0;
    return row_set(c, name, len, at);
}

static int lift_system(Ctx *c, const Node *system) {
    const Node *m = FIRST_CHILD(system);
    for (uint32_t i = 0; i < system->count; i++, m = NEXT_SIBLING(m)) {
        if (m->type == J_OBJ) {
            const Node *attributes = GET(m, "#attributes");
            if (attributes != NULL && attributes->type == J_OBJ) {
                int provider = KEY_IS(m, "Provider");
                const Node *a = FIRST_CHILD(attributes);
                for (uint32_t j = 0; j < attributes->count; j++, a = NEXT_SIBLING(a)) {
                    if (a->type == J_NULL) continue;
                    if (name_set(&c->name, "Provider_", provider ? 9 : 0, a->key, a->klen) < 0) return OOM(c);
                    if (set_text(c, c->name.p, c->name.len, a, 0) < 0) return -1;
                }
            }
            if (GET(m, "#text") != NULL) {
                if (set_text(c, m->key, m->klen, m, 1) < 0) return -1;
            } else if (!attribute_only(m)) {
                int rest = (int)m->count - (attributes != NULL ? 1 : 0);
                if (rest > 0) {
                    size_t at = c->vals.len;
                    if (write_json(c, m, SKIP_ATTRIBUTES) < 0) return -1;
                    if (row_set(c, m->key, m->klen, at) < 0) return -1;
                }
            }
        } else if (m->type != J_NULL) {
            if (set_text(c, m->key, m->klen, m, 0) < 0) return -1;
        }
    }
    return 0;
}

/* _put of an element's text under `name`, or `prefix + name` when `name` is taken. */
static int put_element(Ctx *c, const char *name, size_t len, const char *prefix, size_t prefix_len,
                       const Node *value, int element, int skip) {
    if (in_document(c, value)) {
        c->direct_value = value->str;
        c->direct_len = value->slen;
        int rc = row_put_prefixed(c, name, len, prefix, prefix_len, c->vals.len);
        c->direct_value = NULL;
        return rc;
    }
    size_t at = c->vals.len;
    int rc = element ? write_element_text(c, value, skip) : write_text(c, value, skip);
    if (rc <= 0) return rc;
    return row_put_prefixed(c, name, len, prefix, prefix_len, at);
}

static int lift_data(Ctx *c, const Node *data) {
    uint32_t count = data->type == J_ARR ? data->count : 1;
    const Node *item = data->type == J_ARR ? FIRST_CHILD(data) : data;
    c->join.len = 0;
    int any_unnamed = 0;
    for (uint32_t i = 0; i < count; i++, item = NEXT_SIBLING(item)) {
        if (item->type == J_OBJ) {
            const Node *attributes = GET(item, "#attributes");
            const Node *name = NULL;
            if (attributes != NULL && attributes->type == J_OBJ) name = GET(attributes, "Name");
            if (name == NULL || name->type == J_NULL) name = GET(item, "@Name");
            if (name != NULL && name->type == J_NULL) name = NULL;
            if (name != NULL) {
                /* str(name): exact only for strings and integers */
                if (name->type != J_STR && name->type != J_INT) return REFUSE(c, "Data name not a string");
                /* the name's text must survive c->name being reused: it points into the document */
                if (put_element(c, name->str, name->slen, "EventData.", 10, item, 1, SKIP_DATA_NAME) < 0)
                    return -1;
                continue;
            }
            size_t at = c->vals.len;
            int rc = write_element_text(c, item, SKIP_DATA_NAME);
            if (rc < 0) return -1;
            if (rc == 0) continue;
            if (any_unnamed && buf_putc(&c->join, '\n') < 0) return OOM(c);
            if (buf_put(&c->join, c->vals.p + at, c->vals.len - at) < 0) return OOM(c);
            c->vals.len = at;
            any_unnamed = 1;
        } else {
            size_t at = c->vals.len;
            int rc = write_text(c, item, SKIP_NONE);
            if (rc < 0) return -1;
            if (rc == 0) continue;
            if (any_unnamed && buf_putc(&c->join, '\n') < 0) return OOM(c);
            if (buf_put(&c->join, c->vals.p + at, c->vals.len - at) < 0) return OOM(c);
            c->vals.len = at;
            any_unnamed = 1;
        }
    }
    if (any_unnamed) {
        size_t at = c->vals.len;
        PUT(c, c->join.p, c->join.len);
        return row_put(c, "Data", 4, "EventData.Data", 14, at);
    }
    return 0;
}

static int flatten_evtx(Ctx *c, const Node *event) {
    if (lift_system(c, GET(event, "System")) < 0) return -1;
    const Node *section = FIRST_CHILD(event);
    for (uint32_t i = 0; i < event->count; i++, section = NEXT_SIBLING(section)) {
        if (KEY_IS(section, "System") || KEY_IS(section, "#attributes")) continue;
        if (KEY_IS(section, "EventData")) {
            if (section->type == J_OBJ) {
                const Node *m = FIRST_CHILD(section);
                for (uint32_t j = 0; j < section->count; j++, m = NEXT_SIBLING(m)) {
                    if (m->type == J_STR || m->type == J_INT) {
                        if (put_element(c, m->key, m->klen, "EventData.", 10, m, 0, SKIP_NONE) < 0) return -1;
                    } else if (m->type == J_NULL) {
                        continue;
                    } else if (KEY_IS(m, "Data")) {
                        if (lift_data(c, m) < 0) return -1;
                    } else if (KEY_IS(m, "#attributes")) {
                        if (m->type != J_OBJ) continue;
                        const Node *a = FIRST_CHILD(m);
                        for (uint32_t k = 0; k < m->count; k++, a = NEXT_SIBLING(a)) {
                            if (a->type == J_NULL) continue;
                            if (name_set(&c->name, "EventData_", 10, a->key, a->klen) < 0) return OOM(c);
                            if (set_text(c, c->name.p, c->name.len, a, 0) < 0) return -1;
                        }
                    } else {
                        if (put_element(c, m->key, m->klen, "EventData.", 10, m, 1, SKIP_NONE) < 0) return -1;
                    }
                }
            } else if (section->type != J_NULL) {
                if (put_element(c, "Data", 4, "EventData.", 10, section, 1, SKIP_NONE) < 0) return -1;
            }
        } else if (KEY_IS(section, "UserData")) {
            if (section->type == J_OBJ) {
                const Node *element = FIRST_CHILD(section);
                for (uint32_t j = 0; j < section->count; j++, element = NEXT_SIBLING(element)) {
                    if (element->type == J_OBJ) {
                        const Node *m = FIRST_CHILD(element);
                        for (uint32_t k = 0; k < element->count; k++, m = NEXT_SIBLING(m)) {
                            if (KEY_IS(m, "#attributes")) continue;
                            size_t at = c->vals.len;
                            int rc = write_element_text(c, m, SKIP_NONE);
                            if (rc < 0) return -1;
                            if (rc == 0) continue;
                            c->name.len = 0;
                            if (buf_put(&c->name, "UserData.", 9) < 0 ||
                                buf_put(&c->name, element->key, element->klen) < 0 ||
                                buf_putc(&c->name, '.') < 0 || buf_put(&c->name, m->key, m->klen) < 0)
                                return OOM(c);
                            if (row_put(c, m->key, m->klen, c->name.p, c->name.len, at) < 0) return -1;
                        }
                    } else if (!KEY_IS(element, "#attributes")) {
                        if (put_element(c, element->key, element->klen, "UserData.", 9, element, 1, SKIP_NONE) <
                            0)
                            return -1;
                    }
                }
            } else if (section->type != J_NULL) {
                if (set_text(c, "UserData", 8, section, 0) < 0) return -1;
            }
        } else if (section->type == J_OBJ) {
            const Node *m = FIRST_CHILD(section);
            for (uint32_t j = 0; j < section->count; j++, m = NEXT_SIBLING(m)) {
                if (KEY_IS(m, "#attributes") || m->type == J_NULL) continue;
                c->name.len = 0;
                if (buf_put(&c->name, section->key, section->klen) < 0 || buf_putc(&c->name, '.') < 0 ||
                    buf_put(&c->name, m->key, m->klen) < 0)
                    return OOM(c);
                if (set_text(c, c->name.p, c->name.len, m, 1) < 0) return -1;
            }
        } else if (section->type != J_NULL) {
            if (set_text(c, section->key, section->klen, section, 0) < 0) return -1;
        }
    }
    return 0;
}

/* _flatten_nested: nested objects -> dotted names; c->name holds the prefix. `skip_event`: leave
   out the top-level "Event" member (already lifted). */
static int flatten_nested(Ctx *c, const Node *obj, int skip_event) {
    size_t prefix = c->name.len;
    const Node *m = FIRST_CHILD(obj);
    for (uint32_t i = 0; i < obj->count; i++, m = NEXT_SIBLING(m)) {
        if (skip_event && KEY_IS(m, "Event")) continue;
        if (m->type == J_NULL) continue;
        c->name.len = prefix;
        if (buf_put(&c->name, m->key, m->klen) < 0) return OOM(c);
        if (m->type == J_OBJ && m->count > 0) {
            if (buf_putc(&c->name, '.') < 0) return OOM(c);
            if (flatten_nested(c, m, 0) < 0) return -1;
            continue;
        }
        if (in_document(c, m)) {
            c->direct_value = m->str;
            c->direct_len = m->slen;
            int rc = row_set(c, c->name.p, c->name.len, c->vals.len);
            c->direct_value = NULL;
            if (rc < 0) return -1;
            continue;
        }
        size_t at = c->vals.len;
        if (m->type == J_OBJ) {
            PUTLIT(c, "{}");
        } else if (write_text(c, m, SKIP_NONE) < 0) {
            return -1;
        }
        if (row_set(c, c->name.p, c->name.len, at) < 0) return -1;
    }
    c->name.len = prefix;
    return 0;
}

/* A document without nested objects or dotted names: its fields are its members, no clash possible. */
static int flatten_flat(Ctx *c, const Node *record) {
    const Node *m = FIRST_CHILD(record);
    for (uint32_t i = 0; i < record->count; i++, m = NEXT_SIBLING(m)) {
        if (in_document(c, m)) {
            c->direct_value = m->str;
            c->direct_len = m->slen;
            int rc = row_append(c, m->key, m->klen, c->vals.len);
            c->direct_value = NULL;
            if (rc < 0) return -1;
            continue;
        }
        size_t at = c->vals.len;
        int rc = write_text(c, m, SKIP_NONE);
        if (rc < 0) return -1;
        if (rc > 0 && row_append(c, m->key, m->klen, at) < 0) return -1;
    }
    return 0;
}

static int flatten_record(Ctx *c, const Node *record) {
    if (!c->root_nested && !c->root_dotted) return flatten_flat(c, record);
    const Node *event = GET(record, "Event");
    if (event != NULL && event->type == J_OBJ) {
        const Node *system = GET(event, "System");
        if (system != NULL && system->type == J_OBJ) {
            if (flatten_evtx(c, event) < 0) return -1;
            if (record->count > 1) {
                c->name.len = 0;
                return flatten_nested(c, record, 1);
            }
            return 0;
        }
    }
    c->name.len = 0;
    return flatten_nested(c, record, 0);
}

/* ------------------------------------------------------------------ columns of the block */

/* Rows are flattened into one value store (ctx->vals, never reset within a block) and a list of
   (column, value) cells; at the end every column's buffers are allocated at their exact size and
   filled in one pass over the cells. */

typedef struct Column {
    char *name;
    uint32_t name_len, hash;
    size_t bytes; /* total value bytes */
    size_t count; /* non-null rows */
    /* output (second pass) */
    PyObject *offsets, *data, *validity;
    size_t filled_rows, cursor;
} Column;

/* What the second pass writes through, per column: the buffers' bytes (no object to go through). */
typedef struct Out {
    char *data;
    int32_t *offsets;
    char *validity; /* dense: validity bitmap; sparse: int32 row numbers; NULL: every row set */
    size_t filled, cursor;
} Out;

/* A value of the block: a pointer into its document (column | IN_VALS clear) or an offset in vals. */
typedef struct Cell {
    uintptr_t where;
    uint32_t column, len;
} Cell;

#define IN_VALS 0x80000000u

static long column_find_or_add(Ctx *c, const char *name, uint32_t len, uint32_t hash) {
    uint32_t mask = c->col_table_cap - 1;
    uint32_t slot = hash & mask;
    while (c->col_table[slot] != 0) {
        Column *col = &c->columns[c->col_table[slot] - 1];
        if (col->hash == hash && col->name_len == len && same_bytes(col->name, name, len))
            return (long)c->col_table[slot] - 1;
        slot = (slot + 1) & mask;
    }
    if ((c->n_columns + 1) * 2 > c->col_table_cap) {
        uint32_t cap = c->col_table_cap * 2;
        uint32_t *table = (uint32_t *)calloc(cap, sizeof(uint32_t));
        if (table == NULL) return REFUSE(c, "out of memory");
        for (size_t i = 0; i < c->n_columns; i++) {
            uint32_t s = c->columns[i].hash & (cap - 1);
            while (table[s] != 0) s = (s + 1) & (cap - 1);
            table[s] = (uint32_t)i + 1;
        }
        free(c->col_table);
        c->col_table = table;
        c->col_table_cap = cap;
        slot = hash & (cap - 1);
        while (table[slot] != 0) slot = (slot + 1) & (cap - 1);
    }
    if (c->n_columns >= (1u << 24)) return REFUSE(c, "too many columns");
    if (c->n_columns == c->cap_columns) {
        size_t cap = c->cap_columns ? c->cap_columns * 2 : 64;
        Column *columns = (Column *)realloc(c->columns, cap * sizeof(Column));
        if (columns == NULL) return REFUSE(c, "out of memory");
        c->columns = columns;
        c->cap_columns = cap;
    }
    Column *col = &c->columns[c->n_columns];
    memset(col, 0, sizeof *col);
    col->name = (char *)malloc(len ? len : 1);
    if (col->name == NULL) return REFUSE(c, "out of memory");
    memcpy(col->name, name, len);
    col->name_len = len;
    col->hash = hash;
    c->n_columns++;
    c->col_table[slot] = (uint32_t)c->n_columns;
    return (long)c->n_columns - 1;
}

/* Room for a column hint per field of the row being committed. */
static int reserve_hints(Ctx *c) {
    if (c->n_entries > c->cap_hint) {
        uint32_t *hint = (uint32_t *)realloc(c->hint, c->n_entries * sizeof(uint32_t));
        if (hint == NULL) return OOM(c);
        for (size_t i = c->cap_hint; i < c->n_entries; i++) hint[i] = UINT32_MAX;
        c->hint = hint;
        c->cap_hint = c->n_entries;
    }
    return 0;
}

/* The column of the row's field i (added when new), its value bytes and count updated. -1: refused. */
static inline long entry_column(Ctx *c, size_t i) {
    Entry *e = &c->entries[i];
    const char *name = e->direct != NULL ? e->direct : c->names.p + e->name_at;
    /* most rows name their fields as the previous row did: try its column first */
    long index = c->hint[i];
    if ((size_t)index >= c->n_columns || c->columns[index].name_len != e->name_len ||
        !same_bytes(c->columns[index].name, name, e->name_len)) {
        if (!e->hashed) e->hash = hash_bytes(name, e->name_len);
        index = column_find_or_add(c, name, e->name_len, e->hash);
        if (index < 0) return -1;
        c->hint[i] = (uint32_t)index;
    }
    Column *col = &c->columns[index];
    col->bytes += e->value_len;
    if (col->bytes > (size_t)INT32_MAX) return REFUSE(c, "column data past 2 GiB");
    col->count++;
    return index;
}

/* Record the flattened row as the block's next row: one cell per field. */
static int commit_row(Ctx *c, size_t row) {
    if (c->n_cells + c->n_entries > c->cap_cells) {
        size_t cap = c->cap_cells ? c->cap_cells : 4096;
        while (cap < c->n_cells + c->n_entries) cap *= 2;
        Cell *cells = (Cell *)realloc(c->cells, cap * sizeof(Cell));
        if (cells == NULL) return OOM(c);
        c->cells = cells;
        c->cap_cells = cap;
    }
    if (reserve_hints(c) < 0) return -1;
    for (size_t i = 0; i < c->n_entries; i++) {
        long index = entry_column(c, i);
        if (index < 0) return -1;
        Entry *e = &c->entries[i];
        Cell *cell = &c->cells[c->n_cells++];
        if (e->value != NULL) {
            cell->where = (uintptr_t)e->value;
            cell->column = (uint32_t)index;
        } else {
            cell->where = (uintptr_t)e->value_at;
            cell->column = (uint32_t)index | IN_VALS;
        }
        cell->len = e->value_len;
    }
    c->row_cells[row] = (uint32_t)c->n_entries;
    return 0;
}

static int is_reserved(const Column *col) {
    return (col->name_len == 8 && memcmp(col->name, "__source", 8) == 0) ||
           (col->name_len == 13 && memcmp(col->name, "__event_index", 13) == 0);
}

/* Offsets of rows [col->filled_rows, upto) as nulls (the validity bytes are zeroed already). */
static inline void pad_nulls(Column *col, size_t upto) {
    int32_t *offsets = (int32_t *)(void *)PyBytes_AS_STRING(col->offsets);
    int32_t last = (int32_t)col->cursor;
    size_t r = col->filled_rows;
    for (; r < upto && ((r + 1) & 1); r++) offsets[r + 1] = last;
    uint64_t pair = (uint64_t)(uint32_t)last * 0x100000001ULL;
    for (; r + 2 <= upto; r += 2) memcpy(&offsets[r + 1], &pair, sizeof pair);
    for (; r < upto; r++) offsets[r + 1] = last;
    col->filled_rows = upto;
}

/* Second pass: exact-size output buffers, filled from the cells.

   Dense: every row has an offset (nulls repeat the last one) and a validity bit. Sparse: a column
   holds only the rows that have a value, as int32 row numbers (ascending; none when every row has
   one) in the `validity` slot, with their offsets and values. Wide, sparse logs (~400 columns, a few
   dozen set per event) then cost no offsets or validity for the unset rows: a fifth of the bytes
   the dense form writes. */
static PyObject *build_result(Ctx *c, size_t n_rows, int sparse) {
    PyObject *result = NULL;
    size_t bitmap_bytes = (n_rows + 7) / 8;
    for (size_t i = 0; i < c->n_columns; i++) {
        Column *col = &c->columns[i];
        if (is_reserved(col)) continue;
        size_t slots = sparse ? col->count : n_rows;
        col->offsets = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((slots + 1) * sizeof(int32_t)));
        col->data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)col->bytes);
        if (col->offsets == NULL || col->data == NULL) goto fail;
        ((int32_t *)(void *)PyBytes_AS_STRING(col->offsets))[0] = 0;
        if (col->count < n_rows) {
            size_t size = sparse ? col->count * sizeof(int32_t) : bitmap_bytes;
            col->validity = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
            if (col->validity == NULL) goto fail;
            if (!sparse) memset(PyBytes_AS_STRING(col->validity), 0, bitmap_bytes);
        }
        col->filled_rows = 0; /* dense: rows written; sparse: values written */
    }
    Out *outs = (Out *)calloc(c->n_columns ? c->n_columns : 1, sizeof(Out));
    if (outs == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (size_t i = 0; i < c->n_columns; i++) {
        Column *col = &c->columns[i];
        if (col->offsets == NULL) continue; /* reserved name: outs[i].offsets stays NULL */
        outs[i].data = PyBytes_AS_STRING(col->data);
        outs[i].offsets = (int32_t *)(void *)PyBytes_AS_STRING(col->offsets);
        outs[i].validity = col->validity != NULL ? PyBytes_AS_STRING(col->validity) : NULL;
    }
    const Cell *cell = c->cells;
    Py_BEGIN_ALLOW_THREADS; /* only our own, not yet shared objects are written */
    for (size_t row = 0; row < n_rows; row++) {
        for (uint32_t k = 0; k < c->row_cells[row]; k++, cell++) {
            Out *out = &outs[cell->column & ~IN_VALS];
            if (out->offsets == NULL) continue; /* reserved name */
            const char *value =
                (cell->column & IN_VALS) ? c->vals.p + cell->where : (const char *)cell->where;
            if (sparse) {
                copy_bytes(out->data + out->cursor, value, cell->len);
                out->cursor += cell->len;
                size_t at = out->filled++;
                out->offsets[at + 1] = (int32_t)out->cursor;
                if (out->validity != NULL) ((int32_t *)(void *)out->validity)[at] = (int32_t)row;
            } else {
                Column *col = &c->columns[cell->column & ~IN_VALS];
                if (col->filled_rows < row) pad_nulls(col, row);
                copy_bytes(out->data + col->cursor, value, cell->len);
                col->cursor += cell->len;
                out->offsets[row + 1] = (int32_t)col->cursor;
                col->filled_rows = row + 1;
                if (out->validity != NULL) out->validity[row / 8] |= (char)(1u << (row % 8));
            }
        }
    }
    if (!sparse)
        for (size_t i = 0; i < c->n_columns; i++)
            if (c->columns[i].offsets != NULL) pad_nulls(&c->columns[i], n_rows);
    Py_END_ALLOW_THREADS;
    free(outs);
    result = PyList_New(0);
    if (result == NULL) goto fail;
    for (size_t i = 0; i < c->n_columns; i++) {
        Column *col = &c->columns[i];
        if (col->offsets == NULL) continue;
        PyObject *name = PyUnicode_DecodeUTF8(col->name, col->name_len, "strict");
        if (name == NULL) goto fail;
        PyObject *validity = col->validity != NULL ? col->validity : Py_None;
        PyObject *item = sparse ? Py_BuildValue("(NOOO)", name, validity, col->offsets, col->data)
                                : Py_BuildValue("(NOOOn)", name, col->offsets, col->data, validity,
                                                (Py_ssize_t)(n_rows - col->count));
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    for (size_t i = 0; i < c->n_columns; i++) {
        Py_CLEAR(c->columns[i].offsets);
        Py_CLEAR(c->columns[i].data);
        Py_CLEAR(c->columns[i].validity);
    }
    return result;
}

/* Forget the block, keeping the buffers for the next call (unless they grew big). */
static void ctx_clear(Ctx *c) {
    for (size_t i = 0; i < c->n_columns; i++) free(c->columns[i].name);
    c->n_columns = 0;
    c->n_cells = 0;
    c->vals.len = 0;
    if (c->col_table) memset(c->col_table, 0, c->col_table_cap * sizeof(uint32_t));
    if (c->vals.cap > KEEP_BYTES) buf_free(&c->vals);
    if (c->cap_cells * sizeof(Cell) > KEEP_BYTES) {
        free(c->cells);
        c->cells = NULL;
        c->cap_cells = 0;
    }
    if (c->arena_cap > KEEP_BYTES) {
        free(c->arena);
        c->arena = NULL;
        c->arena_cap = 0;
    }
    if (c->cap_rows * sizeof(uint32_t) > KEEP_BYTES) {
        free(c->row_cells);
        c->row_cells = NULL;
        c->cap_rows = 0;
    }
}

static void ctx_free(Ctx *c) {
    ctx_clear(c);
    free(c->nodes);
    free(c->arena);
    buf_free(&c->names);
    buf_free(&c->vals);
    buf_free(&c->name);
    buf_free(&c->join);
    free(c->entries);
    free(c->table);
    free(c->stamp);
    free(c->columns);
    free(c->col_table);
    free((void *)c->keys);
    free(c->keys_stamp);
    free(c->cells);
    free(c->row_cells);
    free(c->hint);
    free(c->docs);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ module functions */

PyDoc_STRVAR(decode_doc,
             "decode(documents) -> list[(name, offsets, data, validity, null_count)] | None\n\n"
             "Parse and flatten a block of JSON documents (bytes or str each) into Arrow string\n"
             "column buffers, one row per document, columns in order of first appearance (the\n"
             "reserved __source/__event_index names left out). None: the block is refused\n"
             "(see last_refusal()); decode it the Python way.");

/* One context kept between calls (its buffers stay warm); a nested call gets a fresh one. */
static Ctx cached_ctx;
static int cached_busy = 0;

/* Room for `n` documents in the context's per-document arrays. */
static int reserve_docs(Ctx *ctx, size_t n) {
    if (n > ctx->cap_rows) {
        uint32_t *rows = (uint32_t *)realloc(ctx->row_cells, n * sizeof(uint32_t));
        if (rows == NULL) return -1;
        ctx->row_cells = rows;
        ctx->cap_rows = n;
    }
    if (n > ctx->cap_docs) {
        DocRef *docs = (DocRef *)realloc(ctx->docs, n * sizeof(DocRef));
        if (docs == NULL) return -1;
        ctx->docs = docs;
        ctx->cap_docs = n;
    }
    return 0;
}

/* Documents from a sequence of bytes/str: ctx->docs[0..n). -1: refused (reason set). */
static int docs_of_sequence(Ctx *ctx, PyObject *seq, size_t *n_out) {
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject **items = &PyTuple_GET_ITEM(seq, 0);
    if (reserve_docs(ctx, (size_t)n) < 0) return refuse_at(ctx, "out of memory");
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        Py_ssize_t len;
        ctx->doc = i;
        if (PyBytes_Check(item)) {
            ctx->docs[i].data = PyBytes_AS_STRING(item);
            len = PyBytes_GET_SIZE(item);
        } else if (PyUnicode_Check(item)) {
            ctx->docs[i].data = PyUnicode_AsUTF8AndSize(item, &len);
            if (ctx->docs[i].data == NULL) { /* lone surrogates: orjson refuses them too */
                PyErr_Clear();
                return refuse_at(ctx, "str not encodable as UTF-8");
            }
        } else {
            return refuse_at(ctx, "not bytes or str");
        }
        ctx->docs[i].len = (size_t)len;
    }
    *n_out = (size_t)n;
    return 0;
}

/* As Python's bytes.isspace() on a non-empty line. */
static int blank_line(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\v' && ch != '\f') return 0;
    }
    return 1;
}

/* The next non-blank line of buf[*at..len) (split at '\n'): 1 with its text, and *at past its
   newline; 0 when none is left (*at = len). */
static int next_line(const char *buf, size_t len, size_t *at, const char **line, size_t *line_len) {
    while (*at < len) {
        size_t begin = *at;
        const char *nl = (const char *)memchr(buf + begin, '\n', len - begin);
        size_t stop = nl != NULL ? (size_t)(nl - buf) : len;
        *at = nl != NULL ? stop + 1 : len;
        if (stop > begin && !blank_line(buf + begin, stop - begin)) {
            *line = buf + begin;
            *line_len = stop - begin;
            return 1;
        }
    }
    return 0;
}

/* Documents = the non-blank lines of buf[0..len), at most `max_lines` of them; *used: bytes up to
   and including the newline after the last one taken (all of buf when it ran out). */
static int docs_of_lines(Ctx *ctx, const char *buf, size_t len, size_t max_lines, size_t *n_out, size_t *used) {
    size_t n = 0, at = 0, line_len;
    const char *line;
    while (n < max_lines && next_line(buf, len, &at, &line, &line_len)) {
        if (n == ctx->cap_docs && reserve_docs(ctx, n ? n * 2 : 4096) < 0) return refuse_at(ctx, "out of memory");
        ctx->docs[n].data = line;
        ctx->docs[n].len = line_len;
        n++;
    }
    if (reserve_docs(ctx, n) < 0) return refuse_at(ctx, "out of memory");
    *n_out = n;
    *used = at;
    return 0;
}

/* Take the module's cached context, or set up `local` when it is busy (a nested call). */
static Ctx *ctx_open(Ctx *local, int *own_cached) {
    Ctx *ctx = &cached_ctx;
    *own_cached = !cached_busy;
    if (*own_cached) {
        cached_busy = 1;
    } else {
        memset(local, 0, sizeof *local);
        ctx = local;
    }
    ctx->why[0] = '\0';
    ctx->tstate = NULL;
    return ctx;
}

static void ctx_close(Ctx *ctx, int own_cached, int refused) {
    memcpy(refusal, refused ? ctx->why : "", refused ? sizeof refusal : 1);
    if (own_cached) {
        ctx_clear(ctx);
        cached_busy = 0;
    } else {
        ctx_free(ctx);
    }
}

/* Parse, flatten and build the columns of ctx->docs[0..n) (the documents must stay alive and
   unchanged: they are read without the GIL). NULL with *refused set: decode them the Python way. */
static PyObject *decode_docs(Ctx *ctx, size_t n, int sparse, int *refused) {
    if (ctx->col_table == NULL) {
        ctx->col_table_cap = 64;
        ctx->col_table = (uint32_t *)calloc(ctx->col_table_cap, sizeof(uint32_t));
    }
    if (ctx->col_table == NULL || (ctx->table == NULL && row_table_grow(ctx) < 0) || reserve_docs(ctx, n) < 0) {
        *refused = 1;
        return NULL;
    }
    if (n >= 16) ctx->tstate = PyEval_SaveThread();
    for (size_t i = 0; i < n && !*refused; i++) {
        ctx->doc = (Py_ssize_t)i;
#if defined(__GNUC__)
        if (i + 1 < n) { /* the next document is a separate object: start fetching it */
            const char *next = ctx->docs[i + 1].data;
            size_t ahead = ctx->docs[i + 1].len < 2048 ? ctx->docs[i + 1].len : 2048;
            for (size_t at = 0; at < ahead; at += 64) __builtin_prefetch(next + at);
        }
#endif
        row_reset(ctx);
        if (parse_document(ctx, ctx->docs[i].data, ctx->docs[i].len) < 0 || flatten_record(ctx, ctx->nodes) < 0 ||
            commit_row(ctx, i) < 0)
            *refused = 1;
    }
    if (ctx->tstate != NULL) {
        PyEval_RestoreThread(ctx->tstate);
        ctx->tstate = NULL;
    }
    if (*refused) return NULL;
    return build_result(ctx, n, sparse);
}

static PyObject *decode_block(PyObject *arg, int sparse) {
    PyObject *seq = PySequence_Tuple(arg); /* our own reference to every document */
    if (seq == NULL) return NULL;
    Ctx local;
    int own_cached, refused = 0;
    Ctx *ctx = ctx_open(&local, &own_cached);
    size_t n = 0;
    PyObject *result = NULL;
    if (docs_of_sequence(ctx, seq, &n) < 0)
        refused = 1;
    else
        result = decode_docs(ctx, n, sparse, &refused); /* `seq` holds the documents */
    ctx_close(ctx, own_cached, refused);
    Py_DECREF(seq);
    if (refused) {
        if (PyErr_Occurred()) PyErr_Clear();
        Py_RETURN_NONE;
    }
    return result;
}

PyDoc_STRVAR(decode_spans_doc,
             "decode_spans(data, lengths) -> list[(name, rows, offsets, data)] | None\n\n"
             "decode_sparse() of the documents laid end to end in data: `lengths` holds each one's\n"
             "size in bytes (native int64; they must add up to len(data)). No bytes object per\n"
             "document. None: refused (see last_refusal()), e.g. an empty document.");

static PyObject *decode_spans(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view, sizes;
    if (!PyArg_ParseTuple(args, "y*y*", &view, &sizes)) return NULL;
    size_t n = (size_t)sizes.len / sizeof(int64_t), total = 0;
    const char *sizes_at = (const char *)sizes.buf;
    int bad = (size_t)sizes.len % sizeof(int64_t) != 0;
    for (size_t i = 0; i < n && !bad; i++) {
        int64_t len;
        memcpy(&len, sizes_at + i * sizeof len, sizeof len);
        if (len < 0 || (uint64_t)len > (uint64_t)view.len - total) bad = 1;
        else total += (size_t)len;
    }
    if (bad || total != (size_t)view.len) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&sizes);
        PyErr_SetString(PyExc_ValueError, "decode_spans: lengths must be >= 0 and add up to len(data)");
        return NULL;
    }
    Ctx local;
    int own_cached, refused = 0;
    Ctx *ctx = ctx_open(&local, &own_cached);
    PyObject *columns = NULL;
    if (reserve_docs(ctx, n) < 0) {
        refused = 1;
    } else {
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            int64_t len;
            memcpy(&len, sizes_at + i * sizeof len, sizeof len);
            ctx->docs[i].data = (const char *)view.buf + at;
            ctx->docs[i].len = (size_t)len;
            at += (size_t)len;
        }
        columns = decode_docs(ctx, n, 1, &refused); /* `view` holds the documents */
    }
    ctx_close(ctx, own_cached, refused);
    PyBuffer_Release(&view);
    PyBuffer_Release(&sizes);
    if (refused) {
        if (PyErr_Occurred()) PyErr_Clear();
        Py_RETURN_NONE;
    }
    return columns;
}

PyDoc_STRVAR(decode_ndjson_doc,
             "decode_ndjson(data, start, max_lines) -> (columns | None, end, lines)\n\n"
             "decode_sparse() of the non-blank lines of data[start:] (split at b'\\n'; blank: empty\n"
             "or bytes.isspace()), at most max_lines of them: no bytes object per line. `end` is\n"
             "where the next call starts (past the newline after the last line taken), `lines`\n"
             "how many lines were taken. columns None: refused (see last_refusal()); split the\n"
             "same bytes into lines and decode them the Python way.");

/* The (data, start, max_lines) arguments of decode_ndjson and count_lines; -1: error set. */
static int line_arguments(PyObject *args, const char *who, Py_buffer *view, Py_ssize_t *start, Py_ssize_t *max_lines) {
    if (!PyArg_ParseTuple(args, "y*nn", view, start, max_lines)) return -1;
    if (*start < 0 || *start > view->len || *max_lines < 1) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: start out of range or max_lines < 1", who);
        return -1;
    }
    return 0;
}

static PyObject *decode_ndjson(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t start, max_lines;
    if (line_arguments(args, "decode_ndjson", &view, &start, &max_lines) < 0) return NULL;
    Ctx local;
    int own_cached, refused = 0;
    Ctx *ctx = ctx_open(&local, &own_cached);
    size_t n = 0, used = 0;
    PyObject *columns = NULL;
    const char *buf = (const char *)view.buf + start;
    if (docs_of_lines(ctx, buf, (size_t)(view.len - start), (size_t)max_lines, &n, &used) < 0)
        refused = 1;
    else
        columns = decode_docs(ctx, n, 1, &refused); /* `view` holds the documents */
    ctx_close(ctx, own_cached, refused);
    PyBuffer_Release(&view);
    if (refused) {
        if (PyErr_Occurred()) PyErr_Clear();
        columns = Py_NewRef(Py_None);
    }
    if (columns == NULL) return NULL;
    return Py_BuildValue("(Nnn)", columns, (Py_ssize_t)(start + (Py_ssize_t)used), (Py_ssize_t)n);
}

static PyObject *decode(PyObject *self, PyObject *arg) {
    (void)self;
    return decode_block(arg, 0);
}

PyDoc_STRVAR(count_lines_doc,
             "count_lines(data, start, max_lines) -> (end, lines)\n\n"
             "How far decode_ndjson(data, start, max_lines) would read, without decoding: the\n"
             "non-blank lines of data[start:] (at most max_lines) and where the next call starts.");

static PyObject *count_lines(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t start, max_lines;
    if (line_arguments(args, "count_lines", &view, &start, &max_lines) < 0) return NULL;
    const char *buf = (const char *)view.buf + start, *line;
    size_t len = (size_t)(view.len - start), n = 0, at = 0, line_len;
    while (n < (size_t)max_lines && next_line(buf, len, &at, &line, &line_len)) n++;
    PyBuffer_Release(&view);
    return Py_BuildValue("(nn)", (Py_ssize_t)(start + (Py_ssize_t)at), (Py_ssize_t)n);
}

PyDoc_STRVAR(decode_sparse_doc,
             "decode_sparse(documents) -> list[(name, rows, offsets, data)] | None\n\n"
             "As decode(), but each column holds only the rows that have a value: `rows` the int32\n"
             "row numbers (ascending; None when every row has one), `offsets` (len(rows) + 1 int32)\n"
             "and `data` their values.");

static PyObject *decode_sparse(PyObject *self, PyObject *arg) {
    (void)self;
    return decode_block(arg, 1);
}

PyDoc_STRVAR(last_refusal_doc, "last_refusal() -> str\n\nWhy the last decode() call returned None ('' if it did not).");

static PyObject *last_refusal(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(refusal);
}

/* ------------------------------------------------------------------ Chunk: a buffer handed over without a copy */

/* Memory the builder filled, given to Python as is (buffer protocol, read-only): no final copy. */
typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t len;
} Chunk;

static int chunk_getbuffer(Chunk *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->p != NULL ? self->p : (char *)"", self->len, 1, flags);
}

static Py_ssize_t chunk_length(Chunk *self) { return self->len; }

static void chunk_dealloc(Chunk *self) {
    free(self->p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyBufferProcs chunk_buffer = {(getbufferproc)chunk_getbuffer, NULL};
static PySequenceMethods chunk_sequence = {.sq_length = (lenfunc)chunk_length};

static PyTypeObject ChunkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sigma_arrow._cdecode.Chunk",
    .tp_basicsize = sizeof(Chunk),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Read-only bytes filled by a Builder (buffer protocol).",
    .tp_dealloc = (destructor)chunk_dealloc,
    .tp_as_buffer = &chunk_buffer,
    .tp_as_sequence = &chunk_sequence,
};

/* A Chunk taking over the buffer's memory (trimmed to its length); the buffer is left empty. */
static PyObject *chunk_of(Buf *b) {
    Chunk *chunk = PyObject_New(Chunk, &ChunkType);
    if (chunk == NULL) return NULL;
    char *p = b->p;
    if (p != NULL && b->len < b->cap) {
        char *trimmed = (char *)realloc(p, b->len ? b->len : 1);
        if (trimmed != NULL) p = trimmed;
    }
    chunk->p = p;
    chunk->len = (Py_ssize_t)b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return (PyObject *)chunk;
}

/* ------------------------------------------------------------------ Builder: incremental sparse decoding */

/* A column's values as they are committed: its data, int32 value end offsets (after a leading 0) and
   the int32 rows that hold a value. */
typedef struct Store {
    Buf data, offsets, rows;
    int reserved; /* a reserved name: left out, as decode_sparse leaves it out */
} Store;

typedef struct {
    PyObject_HEAD
    Ctx ctx;
    Store *stores;
    size_t cap_stores;
    size_t n_rows;
    int busy;
} Builder;

static int stores_reserve(Builder *b) {
    size_t need = b->ctx.n_columns;
    if (need <= b->cap_stores) return 0;
    size_t cap = b->cap_stores ? b->cap_stores * 2 : 64;
    while (cap < need) cap *= 2;
    Store *stores = (Store *)realloc(b->stores, cap * sizeof(Store));
    if (stores == NULL) return -1;
    memset(stores + b->cap_stores, 0, (cap - b->cap_stores) * sizeof(Store));
    b->stores = stores;
    b->cap_stores = cap;
    return 0;
}

static void store_free(Store *st) {
    buf_free(&st->data);
    buf_free(&st->offsets);
    buf_free(&st->rows);
}

/* Commit the flattened row: its values are copied into their columns' stores at once (the document
   is hot in the cache now, and need not stay alive). */
static int commit_row_stored(Builder *b, size_t row) {
    Ctx *c = &b->ctx;
    if (reserve_hints(c) < 0) return -1;
    for (size_t i = 0; i < c->n_entries; i++) {
        long index = entry_column(c, i);
        if (index < 0) return -1;
        if ((size_t)index >= b->cap_stores && stores_reserve(b) < 0) return OOM(c);
        Store *st = &b->stores[index];
        if (st->offsets.len == 0) { /* the column's first value */
            int32_t zero = 0;
            st->reserved = is_reserved(&c->columns[index]);
            if (buf_put(&st->offsets, (const char *)&zero, sizeof zero) < 0) return OOM(c);
        }
        if (st->reserved) continue;
        const Entry *e = &c->entries[i];
        const char *value = e->value != NULL ? e->value : c->vals.p + e->value_at;
        int32_t end = (int32_t)(st->data.len + e->value_len), at = (int32_t)row;
        if (buf_put(&st->data, value, e->value_len) < 0 || buf_put(&st->offsets, (const char *)&end, sizeof end) < 0 ||
            buf_put(&st->rows, (const char *)&at, sizeof at) < 0)
            return OOM(c);
    }
    c->vals.len = 0; /* copied: the next row's values start afresh */
    return 0;
}

/* Undo the rows from `first_row` on and the columns from `first_column` on (a refused add). */
static void builder_rollback(Builder *b, size_t first_row, size_t first_column) {
    Ctx *c = &b->ctx;
    b->n_rows = first_row;
    c->vals.len = 0;
    for (size_t i = 0; i < c->n_columns && i < b->cap_stores; i++) {
        Store *st = &b->stores[i];
        Column *col = &c->columns[i];
        if (i >= first_column) {
            store_free(st);
            st->reserved = 0;
            continue;
        }
        if (st->reserved || st->offsets.len == 0) continue; /* never output: no counts to repair */
        size_t kept = st->rows.len / sizeof(int32_t);
        while (kept > 0) {
            int32_t last;
            memcpy(&last, st->rows.p + (kept - 1) * sizeof last, sizeof last);
            if ((size_t)last < first_row) break;
            kept--;
        }
        int32_t end;
        memcpy(&end, st->offsets.p + kept * sizeof end, sizeof end);
        st->rows.len = kept * sizeof(int32_t);
        st->offsets.len = (kept + 1) * sizeof(int32_t);
        st->data.len = (size_t)end;
        col->count = kept;
        col->bytes = (size_t)end;
    }
    for (size_t i = first_column; i < c->n_columns; i++) free(c->columns[i].name);
    c->n_columns = first_column;
    if (c->col_table == NULL) return;
    memset(c->col_table, 0, c->col_table_cap * sizeof(uint32_t));
    for (size_t i = 0; i < c->n_columns; i++) {
        uint32_t slot = c->columns[i].hash & (c->col_table_cap - 1);
        while (c->col_table[slot] != 0) slot = (slot + 1) & (c->col_table_cap - 1);
        c->col_table[slot] = (uint32_t)i + 1;
    }
}

PyDoc_STRVAR(builder_add_doc,
             "add(documents) -> bool\n\n"
             "Parse and flatten more documents (bytes or str each) as the next rows. False: refused\n"
             "(see last_refusal()); none of them was added, the rows before stay. The documents need\n"
             "not stay alive after the call.");

static PyObject *builder_add(Builder *b, PyObject *arg) {
    if (b->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Builder is in use by another thread");
        return NULL;
    }
    PyObject *seq = PySequence_Tuple(arg);
    if (seq == NULL) return NULL;
    b->busy = 1;
    Ctx *c = &b->ctx;
    c->why[0] = '\0';
    c->tstate = NULL;
    size_t first_row = b->n_rows, first_column = c->n_columns, n = 0;
    int refused = 0;
    if (c->col_table == NULL) {
        c->col_table_cap = 64;
        c->col_table = (uint32_t *)calloc(c->col_table_cap, sizeof(uint32_t));
    }
    if (c->col_table == NULL || (c->table == NULL && row_table_grow(c) < 0)) {
        refused = 1;
        refuse_at(c, "out of memory");
    } else if (docs_of_sequence(c, seq, &n) < 0) {
        refused = 1;
    } else if (first_row + n > (size_t)INT32_MAX) {
        refused = 1;
        refuse_at(c, "too many rows");
    }
    if (!refused) {
        if (n >= 16) c->tstate = PyEval_SaveThread();
        for (size_t i = 0; i < n && !refused; i++) {
            c->doc = (Py_ssize_t)(first_row + i);
#if defined(__GNUC__)
            if (i + 1 < n) {
                const char *next = c->docs[i + 1].data;
                size_t ahead = c->docs[i + 1].len < 2048 ? c->docs[i + 1].len : 2048;
                for (size_t at = 0; at < ahead; at += 64) __builtin_prefetch(next + at);
            }
#endif
            row_reset(c);
            c->vals.len = 0;
            if (parse_document(c, c->docs[i].data, c->docs[i].len) < 0 || flatten_record(c, c->nodes) < 0 ||
                commit_row_stored(b, first_row + i) < 0)
                refused = 1;
        }
        if (c->tstate != NULL) {
            PyEval_RestoreThread(c->tstate);
            c->tstate = NULL;
        }
    }
    memcpy(refusal, refused ? c->why : "", refused ? sizeof refusal : 1);
    if (refused) {
        builder_rollback(b, first_row, first_column);
        if (PyErr_Occurred()) PyErr_Clear();
    } else {
        b->n_rows = first_row + n;
    }
    b->busy = 0;
    Py_DECREF(seq);
    return PyBool_FromLong(!refused);
}

PyDoc_STRVAR(builder_finish_doc,
             "finish() -> list[(name, rows, offsets, data)]\n\n"
             "The rows added so far as decode_sparse() gives them (columns in order of first\n"
             "appearance), the buffers as read-only bytes-like Chunks; the builder is empty again.");

static void builder_clear(Builder *b) {
    for (size_t i = 0; i < b->cap_stores; i++) store_free(&b->stores[i]);
    free(b->stores);
    b->stores = NULL;
    b->cap_stores = 0;
    b->n_rows = 0;
    ctx_free(&b->ctx);
}

static PyObject *builder_finish(Builder *b, PyObject *unused) {
    (void)unused;
    if (b->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Builder is in use by another thread");
        return NULL;
    }
    Ctx *c = &b->ctx;
    PyObject *result = PyList_New(0);
    if (result == NULL) return NULL;
    for (size_t i = 0; i < c->n_columns && i < b->cap_stores; i++) {
        Store *st = &b->stores[i];
        Column *col = &c->columns[i];
        if (st->reserved || st->offsets.len == 0) continue;
        PyObject *name = PyUnicode_DecodeUTF8(col->name, col->name_len, "strict");
        PyObject *offsets = chunk_of(&st->offsets);
        PyObject *data = chunk_of(&st->data);
        PyObject *rows = col->count < b->n_rows ? chunk_of(&st->rows) : Py_NewRef(Py_None);
        store_free(st);
        PyObject *item = NULL;
        if (name != NULL && offsets != NULL && data != NULL && rows != NULL)
            item = PyTuple_Pack(4, name, rows, offsets, data);
        Py_XDECREF(name);
        Py_XDECREF(offsets);
        Py_XDECREF(data);
        Py_XDECREF(rows);
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(result);
            builder_clear(b);
            return NULL;
        }
        Py_DECREF(item);
    }
    builder_clear(b);
    return result;
}

static PyObject *builder_rows(Builder *b, void *closure) {
    (void)closure;
    return PyLong_FromSize_t(b->n_rows);
}

static void builder_dealloc(Builder *b) {
    builder_clear(b);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyMethodDef builder_methods[] = {
    {"add", (PyCFunction)builder_add, METH_O, builder_add_doc},
    {"finish", (PyCFunction)builder_finish, METH_NOARGS, builder_finish_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef builder_getset[] = {
    {"rows", (getter)builder_rows, NULL, "Rows added so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sigma_arrow._cdecode.Builder",
    .tp_basicsize = sizeof(Builder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Builder()\n\nDecode documents a few at a time into one sparse block (what decode_sparse gives\n"
              "for all of them at once), copying their values as it goes: the documents can be freed\n"
              "right after each add().",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_methods = builder_methods,
    .tp_getset = builder_getset,
};

static PyMethodDef methods[] = {
    {"decode", decode, METH_O, decode_doc},
    {"decode_sparse", decode_sparse, METH_O, decode_sparse_doc},
    {"decode_ndjson", decode_ndjson, METH_VARARGS, decode_ndjson_doc},
    {"count_lines", count_lines, METH_VARARGS, count_lines_doc},
    {"decode_spans", decode_spans, METH_VARARGS, decode_spans_doc},
    {"last_refusal", last_refusal, METH_NOARGS, last_refusal_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cdecode", "Native JSON -> flattened Arrow string columns (see flatten.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__cdecode(void) {
    if (PyType_Ready(&BuilderType) < 0 || PyType_Ready(&ChunkType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
