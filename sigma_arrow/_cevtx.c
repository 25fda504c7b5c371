/*
 * sigma_arrow._cevtx: a native reader of Windows EVTX files, writing each record's JSON directly.
 *
 * records_json(data) / records_json_fd(fd, size[, first, count]) parse an .evtx file (file header,
 * 64 KB chunks, records, BinXML with templates, substitutions and nested BinXML values) and return
 * every record's JSON text, in file order, exactly as the `evtx` package's parser (pyevtx-rs 0.14,
 * evtx crate 0.13) renders it: `#attributes`, `#text`, EventData/UserData `Data Name=` flattening
 * (positional `Data` as a `#text` list), `_N` suffixes for repeated child names, numbers for a
 * single integer/bool value, null for empty elements, string arrays repeating their element, strings
 * ending at their first NUL, `\u00XX` escapes in upper case.
 *
 * How: each record's BinXML becomes a small tree (template definitions parsed once per chunk, then
 * cloned with the record's values), rendered to JSON. The first record of each shape (template and
 * the type and emptiness of every substitution value, nested instances included) is rendered from
 * its tree and recorded as literal bytes and value slots; the chunk's next records of that shape
 * replay the recording with their own values (most records: no tree at all).
 *
 * Exactness first: it returns None ("use the Rust parser") for anything it is not certain to
 * reproduce: a bad magic or CRC32 (file header, chunk header, record data), a file whose size or
 * chunk count is off, a dirty header, a chunk that is neither valid nor all zero, a record whose
 * header or id sequence is off, a bad entry in a chunk's string or template table, a token or value
 * type it does not implement (CDATA, character/entity references, processing instructions, elements
 * outside templates, floats, SizeT, non-string arrays, ANSI strings other than printable ASCII, ...),
 * lone UTF-16 surrogates, names needing JSON escapes, deep nesting. Every offset and length is
 * checked against its chunk/record bounds before it is read (the input may be hostile); the mutation
 * fuzzer (tests/fuzz_cevtx.py) runs clean under -fsanitize=address,undefined.
 *
 * Written for sigma-arrow from the public EVTX format description and the Rust parser's observable
 * output; no third-party code. Needs the CPython headers and zlib (crc32).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <zlib.h>

#define FILE_HEADER 0x1000u
#define CHUNK_SIZE 0x10000u
#define CHUNK_HEADER 0x200u
#define RECORD_HEADER 24u
#define MAX_STACK 64      /* element nesting per BinXML fragment */
#define MAX_NESTING 8     /* BinXML values inside substitution values */
#define MAX_UNIQUE_NAMES 64 /* as the Rust renderer: later new names get no `_N` suffix */

/* ------------------------------------------------------------------ growable buffers */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

enum { N_ELEM = 1, N_TEXT, N_VALUE, N_PH, N_ANSI /* printable ASCII bytes (off, len) */ };

typedef struct {
    uint8_t kind;  /* N_* */
    uint8_t vtype; /* N_VALUE: BinXML value type; N_PH: declared type */
    uint8_t opt;   /* N_PH: optional substitution */
    int32_t next;  /* next node in its list, -1 */
    uint32_t off;  /* N_ELEM: element index; N_TEXT/N_VALUE/N_ANSI: chunk offset; N_PH: substitution index */
    uint32_t len;  /* N_TEXT: UTF-16 units (0: empty); N_VALUE/N_ANSI: bytes */
    int32_t sub;   /* the value (index in Ctx.vals) it comes from, -1 */
} Node;

typedef struct {
    int32_t name;  /* name table index */
    int32_t first, last; /* value nodes */
    int32_t next;
} Attr;

typedef struct {
    int32_t name;
    int32_t attr_first, attr_last;
    int32_t first, last; /* child nodes */
    uint8_t has_elem;
} Elem;

typedef struct {
    Node *nodes;
    size_t nn, ncap;
    Attr *attrs;
    size_t na, acap;
    Elem *elems;
    size_t ne, ecap;
} Arena;

typedef struct {
    uint8_t type;
    uint32_t off, size;
} Val;

typedef struct {
    uint32_t off;   /* chunk offset of the name struct */
    uint32_t text;  /* offset in Ctx.names_text */
    uint32_t len;
    uint8_t flags;  /* NAME_* */
} NameEnt;

enum { NAME_DATA = 1, NAME_NAME = 2, NAME_CONTAINER = 4 };

typedef struct {
    uint32_t off;
    uint8_t guid[16];
    int32_t root;
} Tmpl;

enum { OP_LIT = 1, OP_TEXT, OP_NUMBER };

typedef struct {
    uint8_t kind;
    uint32_t sub;      /* OP_TEXT/OP_NUMBER: substitution index */
    uint32_t off, len; /* OP_LIT: bytes in Ctx.lits */
} Op;

/* A template instance of the current record parsed ahead (its values keep their place in c->vals). */
typedef struct {
    uint32_t at, end; /* after its 0x0c token byte; after its values */
    uint32_t def, count;
    size_t base;
} Pre;

/* A recorded record shape: its signature (in Ctx.sigs) and its ops. */
typedef struct {
    uint32_t sig, siglen;
    uint32_t first, nops; /* in Ctx.ops */
    uint64_t hash;
} Shape;

typedef struct {
    jmp_buf jump;
    const char *why;
    char why_buf[96];
    const uint8_t *d; /* the current chunk's 64 KB */
    uint32_t limit;   /* its free space offset: names and templates must end before it */
    Arena tmpl;       /* template trees of the current chunk */
    Arena rec;        /* the current record's resolved tree */
    Val *vals;
    size_t nv, vcap;
    NameEnt *names;
    size_t nnames, namecap;
    int32_t *name_hash; /* open addressing, -1 empty */
    size_t hashcap;
    Buf names_text;
    Tmpl *tmpls;
    size_t ntmpl, tmplcap;
    Buf out;      /* all records' JSON, end to end */
    size_t *ends; /* each record's end in out */
    size_t nrec, reccap;
    uint8_t *block; /* a chunk read from a file descriptor */
    /* Rendered records replayed: per chunk, (template, substitution types and emptiness) -> ops */
    int recording;  /* the current record's rendering is recorded as ops */
    size_t lit_from; /* where in out the current literal run started */
    Op *ops;
    size_t nops, opcap;
    Buf lits; /* literal bytes of the ops */
    Buf sigs; /* the cached shapes' signatures */
    Shape *shapes;
    size_t nshapes, shapecap;
    int32_t *shape_hash; /* open addressing, -1 empty */
    size_t shape_hashcap;
    size_t replayed, rendered; /* records, for the benchmark's curiosity */
    Pre *pre;
    size_t npre, precap;
} Ctx;

static char refusal[200] = "";
static size_t last_rendered = 0, last_replayed = 0; /* records of the last call */

static void fail(Ctx *c, const char *why) {
    c->why = why;
    longjmp(c->jump, 1);
}

static void fail_type(Ctx *c, const char *why, unsigned type) {
    snprintf(c->why_buf, sizeof(c->why_buf), "%s (0x%02x)", why, type);
    fail(c, c->why_buf);
}

static void *grow(Ctx *c, void *p, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return p;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(p, n * item);
    if (!q) fail(c, "out of memory");
    *cap = n;
    return q;
}

#define PUSH(c, arr, count, cap, type) \
    ((arr) = grow((c), (arr), &(cap), (count) + 1, sizeof(type)), (count)++)

static inline void buf_reserve(Ctx *c, Buf *b, size_t extra) {
    if (b->n + extra > b->cap) b->p = grow(c, b->p, &b->cap, b->n + extra, 1);
}
static inline void put(Ctx *c, Buf *b, const char *s, size_t n) {
    buf_reserve(c, b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static inline void putc1(Ctx *c, Buf *b, char ch) {
    buf_reserve(c, b, 1);
    b->p[b->n++] = ch;
}
#define PUTS(c, b, lit) put((c), (b), (lit), sizeof(lit) - 1)

static void put_u64(Ctx *c, Buf *b, uint64_t v) {
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(c, b, tmp + i, (size_t)(24 - i));
}
static void put_i64(Ctx *c, Buf *b, int64_t v) {
    if (v < 0) {
        putc1(c, b, '-');
        put_u64(c, b, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(c, b, (uint64_t)v);
    }
}
static void put_hex0x(Ctx *c, Buf *b, uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = digits[v & 15];
        v >>= 4;
    } while (v);
    PUTS(c, b, "0x");
    put(c, b, tmp + i, (size_t)(20 - i));
}

/* ------------------------------------------------------------------ CRC32 */

/*
 * zlib's crc32 (IEEE polynomial, reflected), by carry-less multiplication folding where the CPU has
 * PCLMULQDQ (the method of Intel's "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ";
 * constants for the reflected CRC32 polynomial). It is checked against zlib when the module loads
 * and only used when it agrees: else zlib's crc32 (~3x slower on a 64 KB chunk) does the work.
 */
typedef uint32_t (*crc_fn)(uint32_t crc, const uint8_t *p, size_t len);

static uint32_t crc32_zlib(uint32_t crc, const uint8_t *p, size_t len) {
    return (uint32_t)crc32(crc, p, (uInt)len);
}

static crc_fn crc32_fast = crc32_zlib;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("pclmul,sse4.1"))) static inline __m128i fold16(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

__attribute__((target("pclmul,sse4.1"))) static uint32_t crc32_clmul(uint32_t crc, const uint8_t *p, size_t len) {
    if (len < 64) return crc32_zlib(crc, p, len);
    const __m128i k1k2 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
    const __m128i k5 = _mm_set_epi64x(0, 0x163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x1f7011641LL, 0x1db710641LL);
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    __m128i x1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)~crc));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    len -= 64;
    while (len >= 64) {
        x1 = _mm_xor_si128(fold16(x1, k1k2), _mm_loadu_si128((const __m128i *)p));
        x2 = _mm_xor_si128(fold16(x2, k1k2), _mm_loadu_si128((const __m128i *)(p + 16)));
        x3 = _mm_xor_si128(fold16(x3, k1k2), _mm_loadu_si128((const __m128i *)(p + 32)));
        x4 = _mm_xor_si128(fold16(x4, k1k2), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        len -= 64;
    }
    x1 = _mm_xor_si128(fold16(x1, k3k4), x2);
    x1 = _mm_xor_si128(fold16(x1, k3k4), x3);
    x1 = _mm_xor_si128(fold16(x1, k3k4), x4);
    while (len >= 16) {
        x1 = _mm_xor_si128(fold16(x1, k3k4), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        len -= 16;
    }
    /* 128 -> 64 bits, then 64 -> 32 (each adding 32 zero bits), then the Barrett reduction */
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(k3k4, x1, 0x01));
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k5, 0x00), x2);
    x2 = x1;
    x1 = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, mask32), poly, 0x10), mask32);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(x1, poly, 0x00), x2);
    uint32_t state = (uint32_t)_mm_extract_epi32(x1, 1);
    return crc32_zlib(~state, p, len); /* the last < 16 bytes */
}

/* Use the folding CRC32 when the CPU has it and it agrees with zlib on a table of lengths. */
static void choose_crc32(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("pclmul") || !__builtin_cpu_supports("sse4.1")) return;
    static uint8_t sample[70000];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof(sample); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        sample[i] = (uint8_t)x;
    }
    static const size_t lengths[] = {0, 1, 15, 16, 63, 64, 65, 79, 80, 127, 128, 129, 200, 511, 4096, 65024, 65535, 70000};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++)
        for (size_t start = 0; start < 3; start++) {
            size_t n = lengths[i] - (lengths[i] >= start ? start : lengths[i]);
            for (uint32_t seed = 0; seed < 2; seed++) {
                uint32_t init = seed ? 0x12345678u : 0;
                if (crc32_clmul(init, sample + start, n) != crc32_zlib(init, sample + start, n)) return;
            }
        }
    crc32_fast = crc32_clmul;
}
#else
static void choose_crc32(void) {}
#endif

/* ------------------------------------------------------------------ little-endian reads */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* [pos, pos + n) inside [.., end): else refuse */
static inline void need(Ctx *c, uint32_t pos, uint32_t n, uint32_t end) {
    if (pos > end || n > end - pos) fail(c, "offset or length out of bounds");
}

/* ------------------------------------------------------------------ UTF-16 -> escaped UTF-8 */

static const char hexd_upper[] = "0123456789ABCDEF"; /* \u00XX escapes, as the Rust parser writes them */

/*
 * JSON string content (no quotes) of up to `units` UTF-16LE code units, ending at the first NUL (the
 * Rust parser reads strings up to it); lone surrogates are refused.
 */
static void put_utf16(Ctx *c, Buf *b, const uint8_t *p, uint32_t units) {
    buf_reserve(c, b, (size_t)units * 6);
    char *o = b->p + b->n;
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi16(0x20), span = _mm_set1_epi16(0x5F), zero = _mm_setzero_si128();
    const __m128i quote = _mm_set1_epi16('"'), backslash = _mm_set1_epi16('\\');
#endif
    for (uint32_t i = 0; i < units; i++) {
#if defined(__SSE2__)
        /* 8 units at a time while they are printable ASCII other than '"' and '\\' */
        while (i + 8 <= units) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + 2 * i));
            __m128i outside = _mm_subs_epu16(_mm_sub_epi16(v, space), span); /* 0 where 0x20 <= u <= 0x7F */
            __m128i special = _mm_or_si128(_mm_cmpeq_epi16(v, quote), _mm_cmpeq_epi16(v, backslash));
            __m128i plain = _mm_andnot_si128(special, _mm_cmpeq_epi16(outside, zero));
            if (_mm_movemask_epi8(plain) != 0xFFFF) break;
            _mm_storel_epi64((__m128i *)o, _mm_packus_epi16(v, v));
            o += 8;
            i += 8;
        }
        if (i >= units) break;
#endif
        uint32_t u = rd16(p + 2 * i);
        if (u == 0) break;
        if (u < 0x80) {
            if (u >= 0x20 && u != '"' && u != '\\') {
                *o++ = (char)u;
                continue;
            }
            *o++ = '\\';
            switch (u) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hexd_upper[u >> 4];
                *o++ = hexd_upper[u & 15];
            }
        } else if (u < 0x800) {
            *o++ = (char)(0xC0 | (u >> 6));
            *o++ = (char)(0x80 | (u & 0x3F));
        } else if (u >= 0xD800 && u <= 0xDFFF) {
            if (u >= 0xDC00 || i + 1 >= units) fail(c, "lone UTF-16 surrogate");
            uint32_t lo = rd16(p + 2 * (i + 1));
            if (lo < 0xDC00 || lo > 0xDFFF) fail(c, "lone UTF-16 surrogate");
            i++;
            uint32_t cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            *o++ = (char)(0xF0 | (cp >> 18));
            *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
            *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (char)(0x80 | (cp & 0x3F));
        } else {
            *o++ = (char)(0xE0 | (u >> 12));
            *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
            *o++ = (char)(0x80 | (u & 0x3F));
        }
    }
    b->n = (size_t)(o - b->p);
}

/* ------------------------------------------------------------------ names */

static void names_reset(Ctx *c) {
    c->nnames = 0;
    c->names_text.n = 0;
    if (c->name_hash) memset(c->name_hash, 0xff, c->hashcap * sizeof(int32_t));
}

/* The name struct at chunk offset `off`: (next u32, hash u16, count u16, UTF-16 chars, NUL). */
static int32_t name_at(Ctx *c, uint32_t off) {
    if (!c->name_hash) {
        c->hashcap = 1024;
        c->name_hash = malloc(c->hashcap * sizeof(int32_t));
        if (!c->name_hash) fail(c, "out of memory");
        memset(c->name_hash, 0xff, c->hashcap * sizeof(int32_t));
    }
    size_t mask = c->hashcap - 1;
    size_t h = ((size_t)off * 2654435761u) & mask;
    while (c->name_hash[h] >= 0) {
        if (c->names[c->name_hash[h]].off == off) return c->name_hash[h];
        h = (h + 1) & mask;
    }
    if (off < CHUNK_HEADER) fail(c, "name offset inside the chunk header");
    need(c, off, 8, c->limit);
    uint32_t count = rd16(c->d + off + 6);
    need(c, off + 8, count * 2 + 2, c->limit);
    const uint8_t *s = c->d + off + 8;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t u = rd16(s + 2 * i);
        if (u < 0x20 || u == '"' || u == '\\') fail(c, "name needing JSON escapes");
    }
    Buf *t = &c->names_text;
    size_t start = t->n;
    put_utf16(c, t, s, count);
    PUSH(c, c->names, c->nnames, c->namecap, NameEnt);
    NameEnt *e = &c->names[c->nnames - 1];
    e->off = off;
    e->text = (uint32_t)start;
    e->len = (uint32_t)(t->n - start);
    e->flags = 0;
    const char *txt = t->p + start;
    if (e->len == 4 && memcmp(txt, "Data", 4) == 0) e->flags |= NAME_DATA;
    if (e->len == 4 && memcmp(txt, "Name", 4) == 0) e->flags |= NAME_NAME;
    if ((e->len == 9 && memcmp(txt, "EventData", 9) == 0) || (e->len == 8 && memcmp(txt, "UserData", 8) == 0))
        e->flags |= NAME_CONTAINER;
    int32_t idx = (int32_t)(c->nnames - 1);
    c->name_hash[h] = idx;
    if (c->nnames * 2 > c->hashcap) { /* rehash */
        size_t cap = c->hashcap * 2;
        int32_t *nh = malloc(cap * sizeof(int32_t));
        if (!nh) fail(c, "out of memory");
        memset(nh, 0xff, cap * sizeof(int32_t));
        for (size_t i = 0; i < c->nnames; i++) {
            size_t k = ((size_t)c->names[i].off * 2654435761u) & (cap - 1);
            while (nh[k] >= 0) k = (k + 1) & (cap - 1);
            nh[k] = (int32_t)i;
        }
        free(c->name_hash);
        c->name_hash = nh;
        c->hashcap = cap;
    }
    return idx;
}

/* A name reference (u32 chunk offset) at *pos; an inline name struct right after it is skipped. */
static int32_t read_name(Ctx *c, uint32_t *pos, uint32_t end) {
    need(c, *pos, 4, end);
    uint32_t off = rd32(c->d + *pos);
    *pos += 4;
    int32_t idx = name_at(c, off);
    if (off == *pos) {
        need(c, *pos, 8, end);
        uint32_t count = rd16(c->d + *pos + 6);
        uint32_t size = 8 + count * 2 + 2;
        need(c, *pos, size, end);
        *pos += size;
    }
    return idx;
}

/* ------------------------------------------------------------------ arenas */

static int32_t new_node(Ctx *c, Arena *a, uint8_t kind, uint8_t vtype, uint32_t off, uint32_t len) {
    PUSH(c, a->nodes, a->nn, a->ncap, Node);
    Node *n = &a->nodes[a->nn - 1];
    n->kind = kind;
    n->vtype = vtype;
    n->opt = 0;
    n->next = -1;
    n->off = off;
    n->len = len;
    n->sub = -1;
    return (int32_t)(a->nn - 1);
}

static int32_t new_elem(Ctx *c, Arena *a, int32_t name) {
    PUSH(c, a->elems, a->ne, a->ecap, Elem);
    Elem *e = &a->elems[a->ne - 1];
    e->name = name;
    e->attr_first = e->attr_last = -1;
    e->first = e->last = -1;
    e->has_elem = 0;
    return (int32_t)(a->ne - 1);
}

static int32_t new_attr(Ctx *c, Arena *a, int32_t name) {
    PUSH(c, a->attrs, a->na, a->acap, Attr);
    Attr *t = &a->attrs[a->na - 1];
    t->name = name;
    t->first = t->last = -1;
    t->next = -1;
    return (int32_t)(a->na - 1);
}

static void append_child(Arena *a, int32_t elem, int32_t node) {
    Elem *e = &a->elems[elem];
    if (e->last < 0)
        e->first = node;
    else
        a->nodes[e->last].next = node;
    e->last = node;
    if (a->nodes[node].kind == N_ELEM) e->has_elem = 1;
}

static void append_attr_value(Arena *a, int32_t attr, int32_t node) {
    Attr *t = &a->attrs[attr];
    if (t->last < 0)
        t->first = node;
    else
        a->nodes[t->last].next = node;
    t->last = node;
}

static void append_attr(Arena *a, int32_t elem, int32_t attr) {
    Elem *e = &a->elems[elem];
    if (e->attr_last < 0)
        e->attr_first = attr;
    else
        a->attrs[e->attr_last].next = attr;
    e->attr_last = attr;
}

/* ------------------------------------------------------------------ values */

static int value_is_empty(const Node *n) {
    switch (n->vtype) {
    case 0x00: return 1;
    case 0x0e: case 0x21: return n->len == 0;
    default: return (n->vtype & 0x80) ? n->len == 0 : 0;
    }
}

/* A UTF-16 string's units, or 0 when it is empty up to its first NUL (put_utf16 ends there). */
static uint32_t utf16_length(const uint8_t *p, uint32_t units) {
    return units && (p[0] | p[1]) ? units : 0;
}

/* A value type the format defines (the Rust parser fails on any other). */
static int known_type(uint8_t t) {
    return t <= 0x15 || t == 0x20 || t == 0x21 || t == 0x23 || (t >= 0x81 && t <= 0x95);
}

/* Check a substitution value's size against its type; refuse types not implemented. */
static void check_value(Ctx *c, uint8_t type, uint32_t size) {
    uint32_t width = 0;
    switch (type) {
    case 0x00: case 0x0e: case 0x21: return;
    case 0x01: if (size & 1) fail(c, "odd-sized UTF-16 string"); return;
    case 0x03: case 0x04: width = 1; break;
    case 0x05: case 0x06: width = 2; break;
    case 0x07: case 0x08: case 0x0d: case 0x14: width = 4; break;
    case 0x09: case 0x0a: case 0x11: case 0x15: width = 8; break;
    case 0x0f: case 0x12: width = 16; break;
    case 0x81: return; /* checked by check_string_array */
    case 0x02: return; /* checked by ansi_length */
    case 0x13: return; /* its size is checked against its sub-authority count by the caller */
    default: fail_type(c, "value type not implemented", type);
    }
    if (size != width) fail(c, "value size does not match its type");
}

/* An ANSI string's length before its NUL padding; refused unless printable ASCII (code pages agree). */
static uint32_t ansi_length(Ctx *c, const uint8_t *p, uint32_t size) {
    uint32_t n = 0;
    while (n < size && p[n]) n++;
    for (uint32_t i = 0; i < size; i++) {
        if (i < n ? (p[i] < 0x20 || p[i] > 0x7e) : p[i] != 0) fail(c, "ANSI string other than printable ASCII");
    }
    return n;
}

/* A string array: NUL-terminated UTF-16 items; refused when its last item is unterminated. */
static void check_string_array(Ctx *c, const uint8_t *p, uint32_t size) {
    if (size & 1) fail(c, "odd-sized string array");
    uint32_t units = size / 2;
    if (units && rd16(p + 2 * (units - 1))) fail(c, "string array without a final NUL");
}

static uint32_t string_array_items(const uint8_t *p, uint32_t size) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < size / 2; i++) n += rd16(p + 2 * i) == 0;
    return n;
}

static void days_to_civil(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static void put_digits(Ctx *c, Buf *b, unsigned v, int n) {
    char tmp[8];
    for (int i = n - 1; i >= 0; i--) {
        tmp[i] = (char)('0' + v % 10);
        v /= 10;
    }
    put(c, b, tmp, (size_t)n);
}

static void put_datetime(Ctx *c, Buf *b, int64_t y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s,
                         unsigned micros) {
    if (y < 1 || y > 9999) fail(c, "date out of range");
    put_digits(c, b, (unsigned)y, 4);
    putc1(c, b, '-');
    put_digits(c, b, mo, 2);
    putc1(c, b, '-');
    put_digits(c, b, d, 2);
    putc1(c, b, 'T');
    put_digits(c, b, h, 2);
    putc1(c, b, ':');
    put_digits(c, b, mi, 2);
    putc1(c, b, ':');
    put_digits(c, b, s, 2);
    putc1(c, b, '.');
    put_digits(c, b, micros, 6);
    putc1(c, b, 'Z');
}

static void put_filetime(Ctx *c, Buf *b, uint64_t ft) {
    uint64_t secs = ft / 10000000u;
    unsigned micros = (unsigned)((ft % 10000000u) / 10u);
    int64_t unix_secs = (int64_t)secs - 11644473600LL;
    int64_t days = unix_secs >= 0 ? unix_secs / 86400 : -((-unix_secs + 86399) / 86400);
    int64_t rem = unix_secs - days * 86400;
    int64_t y;
    unsigned m, d;
    days_to_civil(days, &y, &m, &d);
    put_datetime(c, b, y, m, d, (unsigned)(rem / 3600), (unsigned)(rem / 60 % 60), (unsigned)(rem % 60), micros);
}

static void put_systime(Ctx *c, Buf *b, const uint8_t *p) {
    unsigned y = rd16(p), mo = rd16(p + 2), d = rd16(p + 6), h = rd16(p + 8), mi = rd16(p + 10),
             s = rd16(p + 12), ms = rd16(p + 14);
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1601 || y > 9999 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59 || ms > 999)
        fail(c, "SYSTEMTIME out of range");
    unsigned md = mdays[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
    if (d > md) fail(c, "SYSTEMTIME out of range");
    put_datetime(c, b, y, mo, d, h, mi, s, ms * 1000);
}

static void put_guid(Ctx *c, Buf *b, const uint8_t *g) {
    static const char up[] = "0123456789ABCDEF";
    static const int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    char tmp[36];
    int n = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) tmp[n++] = '-';
        tmp[n++] = up[g[order[i]] >> 4];
        tmp[n++] = up[g[order[i]] & 15];
    }
    put(c, b, tmp, 36);
}

static void put_sid(Ctx *c, Buf *b, const uint8_t *p, uint32_t size) {
    if (size < 8 || size != 8u + 4u * p[1]) fail(c, "SID size");
    uint64_t auth = 0;
    for (int i = 2; i < 8; i++) auth = (auth << 8) | p[i];
    PUTS(c, b, "S-");
    put_u64(c, b, p[0]);
    putc1(c, b, '-');
    put_u64(c, b, auth);
    for (uint32_t i = 0; i < p[1]; i++) {
        putc1(c, b, '-');
        put_u64(c, b, rd32(p + 8 + 4 * i));
    }
}

/* The text form of a value node (inside a JSON string). */
static void put_value_text(Ctx *c, Buf *b, const Node *n) {
    const uint8_t *p = c->d + n->off;
    uint32_t size = n->len;
    switch (n->vtype) {
    case 0x00: return;
    case 0x03: put_i64(c, b, (int8_t)p[0]); return;
    case 0x04: put_u64(c, b, p[0]); return;
    case 0x05: put_i64(c, b, (int16_t)rd16(p)); return;
    case 0x06: put_u64(c, b, rd16(p)); return;
    case 0x07: put_i64(c, b, (int32_t)rd32(p)); return;
    case 0x08: put_u64(c, b, rd32(p)); return;
    case 0x09: put_i64(c, b, (int64_t)rd64(p)); return;
    case 0x0a: put_u64(c, b, rd64(p)); return;
    case 0x0d:
        if (rd32(p) > 1) fail(c, "bool other than 0/1");
        if (rd32(p))
            PUTS(c, b, "true");
        else
            PUTS(c, b, "false");
        return;
    case 0x0e: {
        static const char up[] = "0123456789ABCDEF";
        buf_reserve(c, b, (size_t)size * 2);
        for (uint32_t i = 0; i < size; i++) {
            b->p[b->n++] = up[p[i] >> 4];
            b->p[b->n++] = up[p[i] & 15];
        }
        return;
    }
    case 0x0f: put_guid(c, b, p); return;
    case 0x11: put_filetime(c, b, rd64(p)); return;
    case 0x12: put_systime(c, b, p); return;
    case 0x13: put_sid(c, b, p, size); return;
    case 0x14: put_hex0x(c, b, rd32(p)); return;
    case 0x15: put_hex0x(c, b, rd64(p)); return;
    case 0x81: { /* NUL-terminated items, joined with ',' */
        uint32_t units = size / 2, from = 0;
        for (uint32_t i = 0; i < units; i++) {
            if (rd16(p + 2 * i)) continue;
            if (from) putc1(c, b, ',');
            put_utf16(c, b, p + 2 * from, i - from);
            from = i + 1;
        }
        return;
    }
    default: fail(c, "value type not implemented");
    }
}

/* A single integer/bool value as a JSON number/bool; 0 when it is no such value. */
static int put_value_number(Ctx *c, Buf *b, const Node *n) {
    const uint8_t *p = c->d + n->off;
    switch (n->vtype) {
    case 0x03: case 0x04: case 0x05: case 0x06: case 0x07: case 0x08: case 0x09: case 0x0a:
        put_value_text(c, b, n);
        return 1;
    case 0x0d:
        if (rd32(p) > 1) fail(c, "bool other than 0/1");
        if (rd32(p))
            PUTS(c, b, "true");
        else
            PUTS(c, b, "false");
        return 1;
    default: return 0;
    }
}

/* ------------------------------------------------------------------ BinXML -> tree */

static int32_t build(Ctx *c, Arena *a, uint32_t pos, uint32_t end, int tmpl_mode, int depth);

static int32_t get_template(Ctx *c, uint32_t def) {
    for (size_t i = 0; i < c->ntmpl; i++)
        if (c->tmpls[i].off == def) return c->tmpls[i].root;
    need(c, def, 24, c->limit);
    const uint8_t *guid = c->d + def + 4;
    for (size_t i = 0; i < c->ntmpl; i++)
        if (memcmp(c->tmpls[i].guid, guid, 16) == 0) fail(c, "one template GUID at two offsets");
    uint32_t size = rd32(c->d + def + 20);
    need(c, def + 24, size, c->limit);
    int32_t root = build(c, &c->tmpl, def + 24, def + 24 + size, 1, 0);
    PUSH(c, c->tmpls, c->ntmpl, c->tmplcap, Tmpl);
    Tmpl *t = &c->tmpls[c->ntmpl - 1];
    t->off = def;
    memcpy(t->guid, guid, 16);
    t->root = root;
    return root;
}

typedef struct {
    size_t base, count; /* in Ctx.vals */
    int depth;
} Subst;

static void resolve_into(Ctx *c, int32_t tnode, const Subst *s, int32_t owner, int is_attr);
static void add_resolved(Ctx *c, int32_t owner, int is_attr, int32_t node);

/* A template element, cloned into the record arena with its placeholders resolved. */
static int32_t clone_elem(Ctx *c, int32_t te, const Subst *s) {
    int32_t e = new_elem(c, &c->rec, c->tmpl.elems[te].name);
    for (int32_t ta = c->tmpl.elems[te].attr_first; ta >= 0; ta = c->tmpl.attrs[ta].next) {
        int32_t at = new_attr(c, &c->rec, c->tmpl.attrs[ta].name);
        for (int32_t tn = c->tmpl.attrs[ta].first; tn >= 0; tn = c->tmpl.nodes[tn].next)
            resolve_into(c, tn, s, at, 1);
        if (c->rec.attrs[at].first >= 0) append_attr(&c->rec, e, at);
    }
    for (int32_t tn = c->tmpl.elems[te].first; tn >= 0; tn = c->tmpl.nodes[tn].next) resolve_into(c, tn, s, e, 0);
    return e;
}

static void add_resolved(Ctx *c, int32_t owner, int is_attr, int32_t node) {
    if (is_attr) {
        if (c->rec.nodes[node].kind == N_ELEM) fail(c, "element inside an attribute value");
        append_attr_value(&c->rec, owner, node);
    } else {
        append_child(&c->rec, owner, node);
    }
}

/* A copy of element `e` whose child node `slot` is replaced by the text node (off, units). */
static int32_t copy_with_item(Ctx *c, int32_t e, int32_t slot, uint32_t off, uint32_t units) {
    int32_t copy = new_elem(c, &c->rec, c->rec.elems[e].name);
    c->rec.elems[copy].has_elem = c->rec.elems[e].has_elem;
    for (int32_t a = c->rec.elems[e].attr_first; a >= 0; a = c->rec.attrs[a].next) {
        int32_t at = new_attr(c, &c->rec, c->rec.attrs[a].name);
        for (int32_t n = c->rec.attrs[a].first; n >= 0; n = c->rec.nodes[n].next) {
            Node v = c->rec.nodes[n];
            append_attr_value(&c->rec, at, new_node(c, &c->rec, v.kind, v.vtype, v.off, v.len));
        }
        append_attr(&c->rec, copy, at);
    }
    for (int32_t n = c->rec.elems[e].first; n >= 0; n = c->rec.nodes[n].next) {
        Node v = c->rec.nodes[n];
        if (n == slot && units == 0) continue; /* an empty item: the copy has no text there */
        int32_t m = n == slot ? new_node(c, &c->rec, N_TEXT, 0, off, units)
                              : new_node(c, &c->rec, v.kind, v.vtype, v.off, v.len);
        append_child(&c->rec, copy, m);
    }
    return copy;
}

/*
 * Add a resolved element, repeated once per item of its first string array with more than one
 * item (MS-EVEN6 array substitutions repeat the containing element, as the Rust parser does).
 */
static void add_expanded(Ctx *c, int32_t e, int32_t owner, int is_attr) {
    for (int32_t a = c->rec.elems[e].attr_first; a >= 0; a = c->rec.attrs[a].next)
        for (int32_t n = c->rec.attrs[a].first; n >= 0; n = c->rec.nodes[n].next)
            if (c->rec.nodes[n].kind == N_VALUE && c->rec.nodes[n].vtype == 0x81 &&
                string_array_items(c->d + c->rec.nodes[n].off, c->rec.nodes[n].len) > 1)
                fail(c, "string array in an attribute");
    for (int32_t n = c->rec.elems[e].first; n >= 0; n = c->rec.nodes[n].next) {
        Node v = c->rec.nodes[n];
        if (v.kind != N_VALUE || v.vtype != 0x81 || string_array_items(c->d + v.off, v.len) <= 1) continue;
        uint32_t from = 0;
        for (uint32_t i = 0; i < v.len / 2; i++) {
            if (rd16(c->d + v.off + 2 * i)) continue;
            add_expanded(c, copy_with_item(c, e, n, v.off + 2 * from, i - from), owner, is_attr);
            from = i + 1;
        }
        return;
    }
    add_resolved(c, owner, is_attr, new_node(c, &c->rec, N_ELEM, 0, (uint32_t)e, 0));
}

/* A record node made from substitution `index` (its place in c->vals remembered for recordings). */
static int32_t sub_node(Ctx *c, const Subst *s, uint32_t index, uint8_t kind, uint8_t vtype, uint32_t off,
                        uint32_t len) {
    int32_t n = new_node(c, &c->rec, kind, vtype, off, len);
    c->rec.nodes[n].sub = (int32_t)(s->base + index);
    return n;
}

static void resolve_into(Ctx *c, int32_t tnode, const Subst *s, int32_t owner, int is_attr) {
    Node t = c->tmpl.nodes[tnode];
    if (t.kind == N_ELEM) {
        add_expanded(c, clone_elem(c, (int32_t)t.off, s), owner, is_attr);
        return;
    }
    if (t.kind != N_PH) {
        add_resolved(c, owner, is_attr, new_node(c, &c->rec, t.kind, t.vtype, t.off, t.len));
        return;
    }
    if (t.off >= s->count) return;
    Val v = c->vals[s->base + t.off];
    if (v.type == 0x02) { /* ANSI string -> text */
        uint32_t len = ansi_length(c, c->d + v.off, v.size);
        if (t.opt && len == 0) return;
        add_resolved(c, owner, is_attr, sub_node(c, s, t.off, N_ANSI, 0, v.off, len));
        return;
    }
    if (v.type == 0x01) { /* UTF-16 string -> text */
        uint32_t units = utf16_length(c->d + v.off, v.size / 2);
        if (t.opt && units == 0) return;
        add_resolved(c, owner, is_attr, sub_node(c, s, t.off, N_TEXT, 0, v.off, units));
        return;
    }
    Node probe = {N_VALUE, v.type, 0, -1, v.off, v.size, -1};
    if (t.opt && value_is_empty(&probe)) return;
    if (v.type == 0x21) {
        if (v.size == 0) return;
        if (is_attr) fail(c, "BinXML inside an attribute value");
        if (s->depth >= MAX_NESTING) fail(c, "BinXML nested too deep");
        int32_t e = build(c, &c->rec, v.off, v.off + v.size, 0, s->depth + 1);
        append_child(&c->rec, owner, new_node(c, &c->rec, N_ELEM, 0, (uint32_t)e, 0));
        return;
    }
    add_resolved(c, owner, is_attr, sub_node(c, s, t.off, N_VALUE, v.type, v.off, v.size));
}

/*
 * A template instance token at *pos (after its 0x0c byte): its definition's offset, and its
 * substitution values appended to c->vals (*base, *count).
 */
static uint32_t parse_instance(Ctx *c, uint32_t *pos, uint32_t end, size_t *base_out, uint32_t *count_out) {
    need(c, *pos, 9, end);
    uint32_t def = rd32(c->d + *pos + 5);
    *pos += 9;
    if (def == *pos) { /* the definition follows inline: skip it */
        need(c, *pos, 24, end);
        uint32_t size = rd32(c->d + *pos + 20);
        need(c, *pos + 24, size, end);
        *pos += 24 + size;
    }
    need(c, *pos, 4, end);
    uint32_t count = rd32(c->d + *pos);
    *pos += 4;
    if (count > (end - *pos) / 4) fail(c, "substitution descriptors out of bounds");
    uint32_t desc = *pos;
    *pos += count * 4;
    size_t base = c->nv;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t size = rd16(c->d + desc + 4 * i);
        uint8_t type = c->d[desc + 4 * i + 2];
        need(c, *pos, size, end);
        check_value(c, type, size);
        if (type == 0x81) check_string_array(c, c->d + *pos, size);
        if (type == 0x13 && (size < 8 || size != 8u + 4u * c->d[*pos + 1])) fail(c, "SID size");
        PUSH(c, c->vals, c->nv, c->vcap, Val);
        c->vals[c->nv - 1].type = type;
        c->vals[c->nv - 1].off = *pos;
        c->vals[c->nv - 1].size = size;
        *pos += size;
    }
    *base_out = base;
    *count_out = count;
    return def;
}

/* A template instance token at *pos (after its 0x0c byte): its element, resolved into c->rec. */
static int32_t template_instance(Ctx *c, uint32_t *pos, uint32_t end, int depth) {
    size_t base;
    uint32_t count;
    uint32_t def;
    size_t i = 0;
    while (i < c->npre && c->pre[i].at != *pos) i++;
    if (i < c->npre) { /* parsed ahead: the same values */
        def = c->pre[i].def;
        base = c->pre[i].base;
        count = c->pre[i].count;
        *pos = c->pre[i].end;
    } else {
        def = parse_instance(c, pos, end, &base, &count);
    }
    int32_t root = get_template(c, def);
    Subst s = {base, count, depth};
    return clone_elem(c, root, &s);
}

/*
 * Parse the BinXML tokens in [pos, end) into a tree in `a`: a template definition (tmpl_mode:
 * substitutions become placeholders, elements carry a dependency id) or a record/BinXML value
 * (its template instance is resolved into c->rec). Returns the root element.
 */
static int32_t build(Ctx *c, Arena *a, uint32_t pos, uint32_t end, int tmpl_mode, int depth) {
    int32_t stack[MAX_STACK];
    int sp = 0;
    int32_t root = -1, open = -1, attr = -1;
    const uint8_t *d = c->d;
    for (;;) {
        need(c, pos, 1, end);
        uint8_t tok = d[pos++];
        switch (tok) {
        case 0x00: /* end of stream */
            if (open >= 0 || sp) fail(c, "unbalanced elements");
            if (root < 0) fail(c, "no root element");
            return root;
        case 0x0f: /* fragment header */
            need(c, pos, 3, end);
            pos += 3;
            break;
        case 0x0c: { /* template instance */
            if (tmpl_mode) fail(c, "template instance inside a template");
            if (open >= 0) fail(c, "template instance inside a start element");
            int32_t e = template_instance(c, &pos, end, depth);
            if (sp)
                append_child(a, stack[sp - 1], new_node(c, a, N_ELEM, 0, (uint32_t)e, 0));
            else if (root < 0)
                root = e;
            else
                fail(c, "multiple root elements");
            break;
        }
        case 0x01: case 0x41: { /* open start element */
            if (open >= 0) fail(c, "open start inside a start element");
            /* Elements outside template definitions (no dependency id, the Rust parser says) never
             * occur in the samples: unverified, so declined. */
            if (!tmpl_mode) fail(c, "element outside a template definition");
            need(c, pos, 2, end); /* dependency id */
            pos += 2;
            need(c, pos, 4, end);
            pos += 4; /* data size */
            int32_t name = read_name(c, &pos, end);
            if (tok & 0x40) {
                need(c, pos, 4, end);
                pos += 4;
            }
            open = new_elem(c, a, name);
            attr = -1;
            break;
        }
        case 0x06: case 0x46: { /* attribute */
            if (open < 0) fail(c, "attribute outside a start element");
            if (attr >= 0 && a->attrs[attr].first >= 0) append_attr(a, open, attr);
            attr = new_attr(c, a, read_name(c, &pos, end));
            break;
        }
        case 0x02: /* close start element */
        case 0x03: /* close empty element */
            if (open < 0) fail(c, "close start outside a start element");
            if (attr >= 0 && a->attrs[attr].first >= 0) append_attr(a, open, attr);
            attr = -1;
            if (tok == 0x02) {
                if (sp >= MAX_STACK) fail(c, "elements nested too deep");
                stack[sp++] = open;
            } else if (sp) {
                append_child(a, stack[sp - 1], new_node(c, a, N_ELEM, 0, (uint32_t)open, 0));
            } else if (root < 0) {
                root = open;
            } else {
                fail(c, "multiple root elements");
            }
            open = -1;
            break;
        case 0x04: { /* close element */
            if (open >= 0 || !sp) fail(c, "close element without an open element");
            int32_t e = stack[--sp];
            if (sp)
                append_child(a, stack[sp - 1], new_node(c, a, N_ELEM, 0, (uint32_t)e, 0));
            else if (root < 0)
                root = e;
            else
                fail(c, "multiple root elements");
            break;
        }
        case 0x05: case 0x45: { /* value: only UTF-16 strings */
            need(c, pos, 3, end);
            if (d[pos] != 0x01) fail_type(c, "value token type not implemented", d[pos]);
            uint32_t units = rd16(d + pos + 1);
            need(c, pos + 3, units * 2, end);
            int32_t n = new_node(c, a, N_TEXT, 0, pos + 3, utf16_length(d + pos + 3, units));
            pos += 3 + units * 2;
            if (open >= 0) {
                if (attr >= 0) append_attr_value(a, attr, n);
            } else if (sp) {
                append_child(a, stack[sp - 1], n);
            } else {
                fail(c, "value outside an element");
            }
            break;
        }
        case 0x0d: case 0x0e: { /* normal / optional substitution */
            if (!tmpl_mode) fail(c, "substitution outside a template");
            need(c, pos, 3, end);
            if (!known_type(d[pos + 2])) fail_type(c, "unknown substitution type", d[pos + 2]);
            int32_t n = new_node(c, a, N_PH, d[pos + 2], rd16(d + pos), 0);
            a->nodes[n].opt = tok == 0x0e;
            pos += 3;
            if (open >= 0) {
                if (attr >= 0) append_attr_value(a, attr, n);
            } else if (sp) {
                append_child(a, stack[sp - 1], n);
            } else {
                fail(c, "substitution outside an element");
            }
            break;
        }
        default: fail_type(c, "BinXML token not implemented", tok);
        }
    }
}

/* ------------------------------------------------------------------ tree -> JSON */

static int has_text(Ctx *c, int32_t first) {
    for (int32_t i = first; i >= 0; i = c->rec.nodes[i].next) {
        const Node *n = &c->rec.nodes[i];
        if (n->kind == N_TEXT || n->kind == N_ANSI) {
            if (n->len) return 1;
        } else if (n->kind == N_VALUE) {
            if (!value_is_empty(n)) return 1;
        }
    }
    return 0;
}

/* While recording: the literal output so far becomes an op, then an op for substitution `sub`. */
static void record_sub(Ctx *c, uint8_t kind, int32_t sub) {
    if (c->out.n > c->lit_from) {
        PUSH(c, c->ops, c->nops, c->opcap, Op);
        Op *lit = &c->ops[c->nops - 1];
        lit->kind = OP_LIT;
        lit->sub = 0;
        lit->off = (uint32_t)c->lits.n;
        lit->len = (uint32_t)(c->out.n - c->lit_from);
        put(c, &c->lits, c->out.p + c->lit_from, c->out.n - c->lit_from);
    }
    PUSH(c, c->ops, c->nops, c->opcap, Op);
    Op *op = &c->ops[c->nops - 1];
    op->kind = kind;
    op->sub = (uint32_t)sub;
    op->off = op->len = 0;
}

/* One text, ANSI or value node's text. */
static void put_text_nodes_one(Ctx *c, Buf *b, const Node *n) {
    if (n->kind == N_TEXT) {
        put_utf16(c, b, c->d + n->off, n->len);
    } else if (n->kind == N_ANSI) {
        for (uint32_t k = 0; k < n->len; k++) {
            char ch = (char)c->d[n->off + k];
            if (ch == '"' || ch == '\\') putc1(c, b, '\\');
            putc1(c, b, ch);
        }
    } else if (n->kind == N_VALUE) {
        put_value_text(c, b, n);
    }
}

static void put_text_nodes(Ctx *c, Buf *b, int32_t first, int skip_elements) {
    for (int32_t i = first; i >= 0; i = c->rec.nodes[i].next) {
        const Node *n = &c->rec.nodes[i];
        if (c->recording && n->sub >= 0) {
            record_sub(c, OP_TEXT, n->sub);
            put_text_nodes_one(c, b, n);
            c->lit_from = b->n;
            continue;
        }
        if (n->kind == N_TEXT) {
            put_utf16(c, b, c->d + n->off, n->len);
        } else if (n->kind == N_ANSI) {
            for (uint32_t k = 0; k < n->len; k++) {
                char ch = (char)c->d[n->off + k];
                if (ch == '"' || ch == '\\') putc1(c, b, '\\');
                putc1(c, b, ch);
            }
        }
        else if (n->kind == N_VALUE)
            put_value_text(c, b, n);
        else if (n->kind == N_ELEM && !skip_elements)
            fail(c, "element in text context");
    }
}

/* As the Rust renderer: one value node of an integer/bool type is a JSON number, else a string. */
/* put_value_number of a record node, recorded as an op when it comes from a substitution. */
static int put_number(Ctx *c, Buf *b, const Node *n) {
    if (!c->recording || n->sub < 0) return put_value_number(c, b, n);
    size_t mark = c->nops, lits = c->lits.n;
    record_sub(c, OP_NUMBER, n->sub);
    if (put_value_number(c, b, n)) {
        c->lit_from = b->n;
        return 1;
    }
    c->nops = mark; /* not a number after all: undo the ops */
    c->lits.n = lits;
    return 0;
}

static void put_content(Ctx *c, Buf *b, int32_t first) {
    if (first >= 0 && c->rec.nodes[first].next < 0 && c->rec.nodes[first].kind == N_VALUE &&
        put_number(c, b, &c->rec.nodes[first]))
        return;
    putc1(c, b, '"');
    put_text_nodes(c, b, first, 0);
    putc1(c, b, '"');
}

static void put_content_skip_elements(Ctx *c, Buf *b, int32_t first) {
    const Node *single = NULL;
    int ok = 1;
    for (int32_t i = first; i >= 0 && ok; i = c->rec.nodes[i].next) {
        const Node *n = &c->rec.nodes[i];
        if (n->kind == N_TEXT || n->kind == N_ANSI) {
            if (n->len) ok = 0;
        } else if (n->kind == N_VALUE) {
            if (value_is_empty(n)) continue;
            if (single) ok = 0;
            single = n;
        }
    }
    if (ok && single && put_number(c, b, single)) return;
    putc1(c, b, '"');
    put_text_nodes(c, b, first, 1);
    putc1(c, b, '"');
}

static int attrs_have_text(Ctx *c, int32_t first) {
    for (int32_t a = first; a >= 0; a = c->rec.attrs[a].next)
        if (has_text(c, c->rec.attrs[a].first)) return 1;
    return 0;
}

static const NameEnt *name_of(Ctx *c, int32_t idx) { return &c->names[idx]; }

static void put_name(Ctx *c, Buf *b, int32_t idx) {
    const NameEnt *n = name_of(c, idx);
    put(c, b, c->names_text.p + n->text, n->len);
}

static int32_t name_attr(Ctx *c, int32_t elem) {
    for (int32_t a = c->rec.elems[elem].attr_first; a >= 0; a = c->rec.attrs[a].next)
        if (name_of(c, c->rec.attrs[a].name)->flags & NAME_NAME) return a;
    return -1;
}

static void put_body(Ctx *c, Buf *b, int32_t elem, int in_container);

static void put_element_value(Ctx *c, Buf *b, int32_t elem, int container) {
    const Elem *e = &c->rec.elems[elem];
    int text = has_text(c, e->first);
    int atext = attrs_have_text(c, e->attr_first);
    if (!e->has_elem && !text && !atext)
        PUTS(c, b, "null");
    else if (!e->has_elem && !atext)
        put_content(c, b, e->first);
    else
        put_body(c, b, elem, container);
}

static void put_data_value(Ctx *c, Buf *b, int32_t elem) {
    const Elem *e = &c->rec.elems[elem];
    if (!e->has_elem && !has_text(c, e->first))
        PUTS(c, b, "\"\"");
    else if (e->has_elem)
        put_body(c, b, elem, 0);
    else
        put_content(c, b, e->first);
}

static void put_body(Ctx *c, Buf *b, int32_t elem, int in_container) {
    int flatten = 0;
    size_t positional = 0;
    if (in_container) {
        for (int32_t i = c->rec.elems[elem].first; i >= 0; i = c->rec.nodes[i].next) {
            if (c->rec.nodes[i].kind != N_ELEM) continue;
            int32_t ch = (int32_t)c->rec.nodes[i].off;
            if (!(name_of(c, c->rec.elems[ch].name)->flags & NAME_DATA)) continue;
            positional++;
            int32_t na = name_attr(c, ch);
            if (na >= 0 && has_text(c, c->rec.attrs[na].first)) flatten = 1;
        }
        if (flatten) positional = 0;
    }
    int32_t seen_name[MAX_UNIQUE_NAMES];
    unsigned seen_count[MAX_UNIQUE_NAMES];
    int unique = 0;
    int wrote = 0, positional_done = 0;
    putc1(c, b, '{');
    int32_t af = c->rec.elems[elem].attr_first;
    if (af >= 0 && attrs_have_text(c, af)) {
        PUTS(c, b, "\"#attributes\":{");
        int first = 1;
        for (int32_t a = af; a >= 0; a = c->rec.attrs[a].next) {
            if (!has_text(c, c->rec.attrs[a].first)) continue;
            if (!first) putc1(c, b, ',');
            first = 0;
            putc1(c, b, '"');
            put_name(c, b, c->rec.attrs[a].name);
            PUTS(c, b, "\":");
            put_content(c, b, c->rec.attrs[a].first);
        }
        putc1(c, b, '}');
        wrote = 1;
    }
    if (has_text(c, c->rec.elems[elem].first)) {
        if (wrote) putc1(c, b, ',');
        wrote = 1;
        PUTS(c, b, "\"#text\":");
        put_content_skip_elements(c, b, c->rec.elems[elem].first);
    }
    for (int32_t i = c->rec.elems[elem].first; i >= 0; i = c->rec.nodes[i].next) {
        if (c->rec.nodes[i].kind != N_ELEM) continue;
        int32_t ch = (int32_t)c->rec.nodes[i].off;
        int32_t name = c->rec.elems[ch].name;
        const NameEnt *ne = name_of(c, name);
        if (in_container && (ne->flags & NAME_DATA)) {
            if (flatten) {
                int32_t na = name_attr(c, ch);
                if (na < 0 || !has_text(c, c->rec.attrs[na].first)) continue;
                if (wrote) putc1(c, b, ',');
                wrote = 1;
                putc1(c, b, '"');
                put_text_nodes(c, b, c->rec.attrs[na].first, 0);
                PUTS(c, b, "\":");
                put_data_value(c, b, ch);
            } else if (!positional_done && positional > 0) {
                if (wrote) putc1(c, b, ',');
                wrote = 1;
                positional_done = 1;
                PUTS(c, b, "\"Data\":{\"#text\":");
                if (positional == 1) {
                    put_data_value(c, b, ch);
                } else {
                    putc1(c, b, '[');
                    int first = 1;
                    for (int32_t j = i; j >= 0; j = c->rec.nodes[j].next) {
                        if (c->rec.nodes[j].kind != N_ELEM) continue;
                        int32_t cand = (int32_t)c->rec.nodes[j].off;
                        if (!(name_of(c, c->rec.elems[cand].name)->flags & NAME_DATA)) continue;
                        if (!first) putc1(c, b, ',');
                        first = 0;
                        put_data_value(c, b, cand);
                    }
                    putc1(c, b, ']');
                }
                putc1(c, b, '}');
            }
            continue;
        }
        unsigned suffix = 0;
        int found = 0;
        for (int k = 0; k < unique; k++) {
            const NameEnt *o = name_of(c, seen_name[k]);
            if (seen_name[k] == name ||
                (o->len == ne->len && memcmp(c->names_text.p + o->text, c->names_text.p + ne->text, ne->len) == 0)) {
                suffix = seen_count[k];
                if (seen_count[k] < 0xffff) seen_count[k]++;
                found = 1;
                break;
            }
        }
        if (!found && unique < MAX_UNIQUE_NAMES) {
            seen_name[unique] = name;
            seen_count[unique] = 1;
            unique++;
        }
        if (wrote) putc1(c, b, ',');
        wrote = 1;
        putc1(c, b, '"');
        put_name(c, b, name);
        if (suffix) {
            putc1(c, b, '_');
            put_u64(c, b, suffix);
        }
        PUTS(c, b, "\":");
        put_element_value(c, b, ch, (ne->flags & NAME_CONTAINER) != 0);
    }
    putc1(c, b, '}');
}

/* ------------------------------------------------------------------ file and chunks */

static void reset_arena(Arena *a) { a->nn = a->na = a->ne = 0; }

static void free_arena(Arena *a) {
    free(a->nodes);
    free(a->attrs);
    free(a->elems);
    memset(a, 0, sizeof(*a));
}

/*
 * The chunk's common string table (64 chains of names) and template table (32 chains of template
 * definitions): the Rust parser reads them when it loads the chunk and fails the whole chunk on a bad
 * entry, so every entry (and every link) must be sound.
 */
static void check_tables(Ctx *c) {
    unsigned steps = 0;
    for (unsigned i = 0; i < 64; i++) {
        for (uint32_t off = rd32(c->d + 0x80 + 4 * i); off; off = rd32(c->d + off)) {
            if (++steps > 4096) fail(c, "string table chains too long");
            name_at(c, off);
        }
    }
    for (unsigned i = 0; i < 32; i++) {
        for (uint32_t off = rd32(c->d + 0x180 + 4 * i), next; off; off = next) {
            if (++steps > 8192) fail(c, "template table chains too long");
            if (off < CHUNK_HEADER) fail(c, "template offset inside the chunk header");
            need(c, off, 24, c->limit);
            need(c, off + 24, rd32(c->d + off + 20), c->limit);
            next = rd32(c->d + off);
            if (next == off) break; /* a link to itself ends a chain too */
        }
    }
}

/* A record's JSON from its root element: {"<name>": value}. */
static void put_record(Ctx *c, int32_t root) {
    Buf *b = &c->out;
    putc1(c, b, '{');
    putc1(c, b, '"');
    put_name(c, b, c->rec.elems[root].name);
    PUTS(c, b, "\":");
    put_element_value(c, b, root, 0);
    putc1(c, b, '}');
}

/*
 * Parse the template instance at *pos (after its 0x0c byte) ahead, with the instances of its nested
 * BinXML values, and append its signature to c->sigs: the definition, and each value's type and
 * emptiness. With them the template decides the whole shape of the record's JSON. 0 when the shape
 * depends on more (a nested value that is not just one template instance, a string array repeating
 * its element): such records are not replayed.
 */
static int sig_instance(Ctx *c, uint32_t *pos, uint32_t end, int depth) {
    const uint8_t *d = c->d;
    uint32_t at = *pos;
    size_t base;
    uint32_t count;
    uint32_t def = parse_instance(c, pos, end, &base, &count);
    PUSH(c, c->pre, c->npre, c->precap, Pre);
    Pre *pre = &c->pre[c->npre - 1];
    pre->at = at;
    pre->end = *pos;
    pre->def = def;
    pre->count = count;
    pre->base = base;
    buf_reserve(c, &c->sigs, 8 + 2 * (size_t)count);
    memcpy(c->sigs.p + c->sigs.n, &def, 4);
    memcpy(c->sigs.p + c->sigs.n + 4, &count, 4);
    c->sigs.n += 8;
    int nested = 0;
    for (uint32_t i = 0; i < count; i++) {
        Val v = c->vals[base + i];
        const uint8_t *p = d + v.off;
        int empty;
        if (v.type == 0x01) {
            empty = v.size < 2 || (p[0] == 0 && p[1] == 0); /* empty up to its first NUL */
        } else if (v.type == 0x02) {
            empty = ansi_length(c, p, v.size) == 0;
        } else if (v.type == 0x21) {
            empty = v.size == 0;
            nested |= !empty;
        } else if (v.type == 0x81) {
            if (string_array_items(p, v.size) > 1) return 0;
            empty = v.size == 0;
        } else {
            Node probe = {N_VALUE, v.type, 0, -1, v.off, v.size, -1};
            empty = value_is_empty(&probe);
        }
        c->sigs.p[c->sigs.n++] = (char)v.type;
        c->sigs.p[c->sigs.n++] = (char)empty;
    }
    for (uint32_t i = 0; nested && i < count; i++) {
        Val v = c->vals[base + i];
        if (v.type != 0x21 || v.size == 0) continue;
        uint32_t vend = v.off + v.size;
        if (depth + 1 >= MAX_NESTING || v.size < 6 || d[v.off] != 0x0f || d[v.off + 4] != 0x0c) return 0;
        uint32_t q = v.off + 5;
        if (!sig_instance(c, &q, vend, depth + 1)) return 0;
        if (q >= vend || d[q] != 0x00) return 0;
    }
    return 1;
}

static uint64_t shape_hash(const Ctx *c, size_t sig) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = sig; i < c->sigs.n; i++) h = (h ^ (uint8_t)c->sigs.p[i]) * 1099511628211ULL;
    return h;
}

static void shapes_reset(Ctx *c) {
    c->nshapes = c->nops = c->lits.n = c->sigs.n = 0;
    if (c->shape_hash) memset(c->shape_hash, 0xff, c->shape_hashcap * sizeof(int32_t));
}

/* The cached shape of (def, count, signature at sig..end of c->sigs), or -1 (and its hash slot). */
static int32_t find_shape(Ctx *c, uint64_t h, size_t sig, size_t *slot) {
    if (!c->shape_hash) {
        c->shape_hashcap = 256;
        c->shape_hash = malloc(c->shape_hashcap * sizeof(int32_t));
        if (!c->shape_hash) fail(c, "out of memory");
        memset(c->shape_hash, 0xff, c->shape_hashcap * sizeof(int32_t));
    }
    size_t mask = c->shape_hashcap - 1, k = (size_t)h & mask;
    size_t len = c->sigs.n - sig;
    while (c->shape_hash[k] >= 0) {
        const Shape *sh = &c->shapes[c->shape_hash[k]];
        if (sh->hash == h && sh->siglen == len && memcmp(c->sigs.p + sh->sig, c->sigs.p + sig, len) == 0)
            return c->shape_hash[k];
        k = (k + 1) & mask;
    }
    *slot = k;
    return -1;
}

static void add_shape(Ctx *c, size_t slot, uint64_t h, size_t sig, size_t first) {
    PUSH(c, c->shapes, c->nshapes, c->shapecap, Shape);
    Shape *sh = &c->shapes[c->nshapes - 1];
    sh->siglen = (uint32_t)(c->sigs.n - sig);
    sh->sig = (uint32_t)sig;
    sh->first = (uint32_t)first;
    sh->nops = (uint32_t)(c->nops - first);
    sh->hash = h;
    c->shape_hash[slot] = (int32_t)(c->nshapes - 1);
    if (c->nshapes * 2 > c->shape_hashcap) { /* rehash */
        size_t cap = c->shape_hashcap * 2;
        int32_t *nh = malloc(cap * sizeof(int32_t));
        if (!nh) fail(c, "out of memory");
        memset(nh, 0xff, cap * sizeof(int32_t));
        for (size_t i = 0; i < c->nshapes; i++) {
            size_t k = (size_t)c->shapes[i].hash & (cap - 1);
            while (nh[k] >= 0) k = (k + 1) & (cap - 1);
            nh[k] = (int32_t)i;
        }
        free(c->shape_hash);
        c->shape_hash = nh;
        c->shape_hashcap = cap;
    }
}

/* A record of a cached shape: its literal bytes, with the substitution values' text in between. */
static void replay(Ctx *c, const Shape *sh) {
    Buf *b = &c->out;
    for (uint32_t i = 0; i < sh->nops; i++) {
        const Op *op = &c->ops[sh->first + i];
        if (op->kind == OP_LIT) {
            put(c, b, c->lits.p + op->off, op->len);
            continue;
        }
        Val v = c->vals[op->sub];
        Node n = {N_VALUE, v.type, 0, -1, v.off, v.size, -1};
        if (v.type == 0x01) {
            n.kind = N_TEXT;
            n.len = utf16_length(c->d + v.off, v.size / 2);
        } else if (v.type == 0x02) {
            n.kind = N_ANSI;
            n.len = ansi_length(c, c->d + v.off, v.size);
        }
        if (op->kind == OP_TEXT)
            put_text_nodes_one(c, b, &n);
        else if (!put_value_number(c, b, &n))
            fail(c, "replayed number is no number");
    }
}

/*
 * One record's BinXML in [pos, end) as JSON appended to c->out. The usual record is one template
 * instance: the first record of each (template, substitution signature) in the chunk is rendered
 * from its tree and recorded; the next ones replay the recording with their own values.
 */
static void record_json(Ctx *c, uint32_t pos, uint32_t end) {
    const uint8_t *d = c->d;
    reset_arena(&c->rec);
    c->nv = 0;
    c->npre = 0;
    if (end - pos > 5 && d[pos] == 0x0f && d[pos + 4] == 0x0c) {
        uint32_t q = pos + 5;
        size_t sig = c->sigs.n;
        int shaped = sig_instance(c, &q, end, 0);
        need(c, q, 1, end);
        if (shaped && d[q] == 0x00) {
            uint64_t h = shape_hash(c, sig);
            size_t slot = 0;
            int32_t found = find_shape(c, h, sig, &slot);
            if (found >= 0) {
                c->sigs.n = sig;
                replay(c, &c->shapes[found]);
                c->replayed++;
                return;
            }
            Subst s = {c->pre[0].base, c->pre[0].count, 0};
            int32_t root = clone_elem(c, get_template(c, c->pre[0].def), &s);
            size_t first = c->nops;
            c->recording = 1;
            c->lit_from = c->out.n;
            put_record(c, root);
            record_sub(c, OP_LIT, 0); /* the last literal run (and a dummy op, dropped below) */
            c->nops--;
            c->recording = 0;
            add_shape(c, slot, h, sig, first);
            c->rendered++;
            return;
        }
        c->sigs.n = sig;
        reset_arena(&c->rec);
        c->nv = 0;
        c->npre = 0;
    }
    put_record(c, build(c, &c->rec, pos, end, 0, 0));
    c->rendered++;
}

static void parse_chunk(Ctx *c, const uint8_t *chunk) {
    if (memcmp(chunk, "ElfChnk\0", 8) != 0) fail(c, "bad chunk magic");
    uint32_t hcrc = crc32_fast(0, chunk, 120);
    hcrc = crc32_fast(hcrc, chunk + 128, CHUNK_HEADER - 128);
    if (hcrc != rd32(chunk + 124)) fail(c, "chunk header checksum mismatch");
    uint64_t first_id = rd64(chunk + 0x18), last_id = rd64(chunk + 0x20);
    uint32_t last_off = rd32(chunk + 0x2c), free_off = rd32(chunk + 0x30);
    if (free_off < CHUNK_HEADER || free_off > CHUNK_SIZE) fail(c, "bad free space offset");
    if (crc32_fast(0, chunk + CHUNK_HEADER, free_off - CHUNK_HEADER) != rd32(chunk + 0x34))
        fail(c, "chunk records checksum mismatch");
    c->d = chunk;
    c->limit = free_off; /* the Rust parser may follow a reference past it: decline such files */
    names_reset(c);
    shapes_reset(c);
    check_tables(c);
    reset_arena(&c->tmpl);
    c->ntmpl = 0;
    uint32_t pos = CHUNK_HEADER;
    uint64_t expect = first_id;
    uint32_t last_start = 0;
    while (pos < free_off) {
        need(c, pos, RECORD_HEADER, free_off);
        if (rd32(chunk + pos) != 0x00002a2a) fail(c, "bad record magic");
        uint32_t size = rd32(chunk + pos + 4);
        if (size < RECORD_HEADER + 4 || size > free_off - pos) fail(c, "bad record size");
        if (rd32(chunk + pos + size - 4) != size) fail(c, "record size copy mismatch");
        if (rd64(chunk + pos + 8) != expect) fail(c, "record ids not consecutive");
        expect++;
        record_json(c, pos + RECORD_HEADER, pos + size - 4);
        PUSH(c, c->ends, c->nrec, c->reccap, size_t);
        c->ends[c->nrec - 1] = c->out.n;
        last_start = pos;
        pos += size;
    }
    if (pos != free_off) fail(c, "records do not end at the free space offset");
    if (expect == first_id) fail(c, "chunk without records");
    if (expect - 1 != last_id || last_start != last_off) fail(c, "chunk header disagrees with its records");
}

/* The file header and every 64 KB block after it: from memory, or read one block at a time. */
typedef struct {
    const uint8_t *data; /* the whole file, or NULL: read from fd */
    int fd;
    uint8_t *block; /* FILE_HEADER or CHUNK_SIZE bytes read last (fd) */
} Source;

/* Bytes [from, to) of the block at `offset` (read into the buffer at the same place); the block. */
static const uint8_t *source_read(Ctx *c, Source *src, size_t offset, size_t from, size_t to) {
    if (src->data) return src->data + offset;
    size_t got = from;
    while (got < to) {
        ssize_t r = pread(src->fd, src->block + got, to - got, (off_t)(offset + got));
        if (r <= 0) fail(c, "read error or the file changed size");
        got += (size_t)r;
    }
    return src->block;
}

/*
 * Whether [offset, offset + n) of a file read by descriptor is a hole (all zero, nothing to read):
 * preallocated but unused chunks often are. 0 when unsure (no SEEK_DATA, or from memory).
 */
static int source_hole(const Source *src, size_t offset, size_t n) {
#ifdef SEEK_DATA
    if (src->data) return 0;
    off_t data = lseek(src->fd, (off_t)offset, SEEK_DATA);
    if (data < 0) return errno == ENXIO; /* ENXIO: no data from offset to the end */
    return (size_t)data >= offset + n;
#else
    (void)src;
    (void)offset;
    (void)n;
    return 0;
#endif
}

/* Chunks [first, first + count) of the file (all from first when count is SIZE_MAX). */
static void parse_file(Ctx *c, Source *src, size_t len, size_t first, size_t wanted) {
    if (len < FILE_HEADER) fail(c, "bad file magic");
    const uint8_t *head = source_read(c, src, 0, 0, FILE_HEADER);
    if (memcmp(head, "ElfFile\0", 8) != 0) fail(c, "bad file magic");
    if ((uint32_t)crc32(0L, head, 120) != rd32(head + 124)) fail(c, "file header checksum mismatch");
    if (rd32(head + 0x78) != 0) fail(c, "file header flags set (dirty or full)");
    if ((len - FILE_HEADER) % CHUNK_SIZE) fail(c, "file size is not whole chunks");
    size_t blocks = (len - FILE_HEADER) / CHUNK_SIZE;
    size_t count = rd16(head + 0x2a);
    if (count > blocks) fail(c, "header announces more chunks than the file holds");
    size_t last = blocks;
    if (first < blocks && wanted < blocks - first) last = first + wanted;
    for (size_t i = first; i < last; i++) {
        size_t at = FILE_HEADER + i * CHUNK_SIZE;
        if (i >= count && source_hole(src, at, CHUNK_SIZE)) continue; /* unused */
        const uint8_t *chunk = source_read(c, src, at, 0, CHUNK_HEADER);
        /* chunks up to the header's count must be valid; the Rust parser reads the ones after it too */
        if (memcmp(chunk, "ElfChnk\0", 8) == 0) {
            uint32_t free_off = rd32(chunk + 0x30);
            if (free_off > CHUNK_HEADER && free_off <= CHUNK_SIZE) /* only the used part is read */
                chunk = source_read(c, src, at, CHUNK_HEADER, free_off);
            parse_chunk(c, chunk);
        } else if (i < count) {
            fail(c, "bad chunk magic");
        } else {
            chunk = source_read(c, src, at, CHUNK_HEADER, CHUNK_SIZE);
            if (chunk[0] != 0 || memcmp(chunk, chunk + 1, CHUNK_SIZE - 1) != 0)
                fail(c, "a chunk that is neither valid nor unused");
            /* an unused (all-zero) chunk: the Rust parser skips it silently */
        }
    }
}

static void free_ctx(Ctx *c) {
    free_arena(&c->tmpl);
    free_arena(&c->rec);
    free(c->vals);
    free(c->names);
    free(c->name_hash);
    free(c->names_text.p);
    free(c->tmpls);
    free(c->out.p);
    free(c->ends);
    free(c->block);
    free(c->ops);
    free(c->lits.p);
    free(c->sigs.p);
    free(c->shapes);
    free(c->shape_hash);
    free(c->pre);
}

/* ------------------------------------------------------------------ Python */

/* One context kept between calls (its buffers stay allocated); taken and given back with the GIL held. */
static Ctx *spare = NULL;
#define KEEP_BYTES (32u << 20) /* output buffers bigger than this are freed after a call */

/* parse_file with its refusals caught: 1 when the whole file was read. */
static int run_parse(Ctx *c, Source *src, size_t len, size_t first, size_t count) {
    if (setjmp(c->jump) != 0) return 0;
    parse_file(c, src, len, first, count);
    return 1;
}

static Ctx *take_ctx(void) {
    Ctx *c = spare;
    spare = NULL;
    if (!c) c = calloc(1, sizeof(Ctx));
    if (!c) return NULL;
    c->why = NULL;
    c->nrec = 0;
    c->out.n = 0;
    c->recording = 0;
    c->rendered = c->replayed = 0;
    return c;
}

static void give_back_ctx(Ctx *c) {
    if (c->out.cap > KEEP_BYTES || spare) {
        free_ctx(c);
        memset(c, 0, sizeof(*c));
    }
    if (spare)
        free(c);
    else
        spare = c;
}

/* The records' JSON as a list of str, or None when refused (the reason in `refusal`). */
static PyObject *result_of(Ctx *c, int ok) {
    last_rendered = c->rendered;
    last_replayed = c->replayed;
    if (!ok) {
        snprintf(refusal, sizeof(refusal), "%s", c->why ? c->why : "refused");
        Py_RETURN_NONE;
    }
    refusal[0] = '\0';
    PyObject *result = PyList_New((Py_ssize_t)c->nrec);
    size_t start = 0;
    for (size_t i = 0; result && i < c->nrec; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(c->out.p + start, (Py_ssize_t)(c->ends[i] - start), "strict");
        if (!s) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)i, s);
        start = c->ends[i];
    }
    return result;
}

static PyObject *records_json(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Ctx *c = take_ctx();
    if (!c) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    Source src = {view.buf, -1, NULL};
    int ok;
    Py_BEGIN_ALLOW_THREADS;
    ok = run_parse(c, &src, (size_t)view.len, 0, SIZE_MAX);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    PyObject *result = result_of(c, ok);
    give_back_ctx(c);
    return result;
}

static PyObject *records_json_fd(PyObject *self, PyObject *args) {
    (void)self;
    int fd;
    Py_ssize_t size, first = 0, count = -1;
    if (!PyArg_ParseTuple(args, "in|nn:records_json_fd", &fd, &size, &first, &count)) return NULL;
    if (size < 0 || first < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size or first chunk");
        return NULL;
    }
    Ctx *c = take_ctx();
    if (!c) return PyErr_NoMemory();
    if (!c->block) c->block = malloc(CHUNK_SIZE);
    if (!c->block) {
        give_back_ctx(c);
        return PyErr_NoMemory();
    }
    Source src = {NULL, fd, c->block};
    int ok;
    Py_BEGIN_ALLOW_THREADS;
    ok = run_parse(c, &src, (size_t)size, (size_t)first, count < 0 ? SIZE_MAX : (size_t)count);
    Py_END_ALLOW_THREADS;
    PyObject *result = result_of(c, ok);
    give_back_ctx(c);
    return result;
}

static PyObject *crc32_kind(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(crc32_fast == crc32_zlib ? "zlib" : "pclmul");
}

static PyObject *crc32_of(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    unsigned int start = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32", &view, &start)) return NULL;
    uint32_t crc = crc32_fast(start, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

static PyObject *last_counts(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("(nn)", (Py_ssize_t)last_rendered, (Py_ssize_t)last_replayed);
}

static PyObject *last_refusal(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(refusal);
}

static PyMethodDef methods[] = {
    {"records_json", records_json, METH_O,
     "records_json(data) -> list[str] | None: every record's JSON text of a whole .evtx file; None: refused."},
    {"records_json_fd", records_json_fd, METH_VARARGS,
     "records_json_fd(fd, size, first=0, count=-1) -> list[str] | None: records_json of the open file fd of size "
     "bytes (its chunks first.. first+count-1; count -1: to the end), read a chunk at a time."},
    {"crc32", crc32_of, METH_VARARGS, "crc32(data, start=0) -> int: zlib.crc32 as the parser computes it."},
    {"crc32_kind", crc32_kind, METH_NOARGS, "'pclmul' or 'zlib': which CRC32 the parser uses."},
    {"last_counts", last_counts, METH_NOARGS,
     "(rendered, replayed): how the last call's records were written (from their tree, or replayed)."},
    {"last_refusal", last_refusal, METH_NOARGS, "Why the last records_json call returned None ('' when it did not)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cevtx", "Native EVTX parser writing each record's JSON (see readers/evtx.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cevtx(void) {
    choose_crc32();
    return PyModule_Create(&module);
}
