/*
 * gateway.classify._native: the compiled core of the text matcher.
 *
 * Why it exists: on PII-dense text (an identifier every ~200 bytes) the
 * Python handlers cost 2-4.5 us per identifier against a budget of ~1 us
 * (SPEC section 9: >= 150 MB/s). This module runs, for the identifier kinds
 * that dominate such text (all-digit runs, USCCs, grouped numbers, HKIDs,
 * passports and permits, e-mail addresses), exactly what
 * gateway/classify/matcher.py's handlers do, and keeps the per-scan state
 * (counts, distinct values, the pending precedence candidates) that every
 * handler, Python or native, updates. The Python handlers stay the reference:
 * TextMatcher(native=False) runs them, and tests/classify/test_native.py
 * checks that both give the same summary on planted and fuzzed text cut at
 * random points.
 *
 * Safety: every byte read goes through win_at(), which answers a boundary
 * byte ("\n") outside the window, and every copy is bounded by a checked
 * length; a hit outside its window raises instead of reading out of bounds
 * (the scan then fails closed). genetic_runs() reads through g_at(), each
 * index checked against the tail's and the chunk's bounds first, and refuses
 * a carried state that would point outside them. The core holds no Python
 * objects, so it needs no cyclic GC support.
 *
 * The distinct values are HMAC-SHA-256'd (RFC 2104) only in digests(), once
 * per distinct value, with OpenSSL's SHA-256: the key's inner and outer pad
 * states are hashed once and copied per value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* The SHA256_* functions are deprecated in OpenSSL 3 in favour of EVP, whose
 * per-call provider dispatch costs more than hashing a 30-byte identifier. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>

/* Vector code: SSE2 on every x86-64; AVX2 where the processor has it, chosen at
 * import (see mod_simd). */
#if defined(__SSE2__)
#include <emmintrin.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2 1
#endif
#endif

/* Operations per Hyperscan expression id; 0 means "call the Python handler". */
enum {
    OP_PYTHON = 0,
    OP_DIGITS = 1,
    OP_USCC = 2,
    OP_GROUPED = 3,
    OP_LETTERS = 4,
    OP_HKID_BRACKETS = 5,
    OP_EMAIL = 6,
};

/* Labels the native handlers name, in the order of the `labels` init tuple. */
enum {
    LB_RESIDENT_ID,
    LB_USCC,
    LB_CARD,
    LB_CN_PHONE,
    LB_HK_PHONE,
    LB_HK_ID,
    LB_CN_PASSPORT,
    LB_HK_PASSPORT,
    LB_TRAVEL_PERMIT,
    LB_COUNT
};

/* Column profiles (issue 14): the validators whose hits in a table column are
 * tested against chance, in the order of matcher._CHANCE_LABELS (the first
 * five native labels: CH_x is LB_x). */
enum { CH_RESIDENT_ID, CH_USCC, CH_CARD, CH_CN_PHONE, CH_HK_PHONE, CH_COUNT };
/* A table's columns past this many, and sources past this many in one scan, are
 * not profiled: their hits count as outside a table. */
#define MAX_COLUMNS 1024
#define MAX_SOURCES 65536
/* How far back a hit's line start is looked for (detectors.CONTEXT_BYTES). */
#define COLUMN_REACH 4096
/* Entry.source / Slot.source: outside a table column (or seen in more than one
 * place), or set aside as chance-level. */
#define SOURCE_NONE (-1)
#define SOURCE_ASIDE (-2)

/* Built-in hotword classes the native handlers look up (detectors.HW_*). */
enum { HW_PHONE = 0, HW_PASSPORT = 1, HW_PERMIT = 2, HW_NATIVE = 3 };

#define ID_BITS 20
#define ID_MASK ((1LL << ID_BITS) - 1)
#define NEVER (-(1LL << 62))
/* SPEC 3.1: hotwords count within 32 bytes before the identifier. */
#define HOTWORD_WINDOW 32
/* RFC 5321 4.5.3.1: local part <= 64 octets, domain <= 255. */
#define EMAIL_LOCAL_MAX 64
#define EMAIL_DOMAIN_MAX 255
#define GROUPED_MAX 23
#define GROUP_DIGITS_MAX 6
#define SHORT_GROUP 4
#define MAX_HOTWORDS 16
#define DIGEST_BYTES 16
/* Values are arena-allocated in blocks of this size (a larger value gets a block of its own). */
#define ARENA_BLOCK (256 * 1024)

/* Byte classes. */
#define C_DIGIT 1
#define C_ALNUM 2
#define C_LETTER 4
#define C_EMAIL 8
#define C_DIGIT_X 16
static uint8_t ctab[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        uint8_t v = 0;
        int digit = c >= '0' && c <= '9';
        int letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (digit) v |= C_DIGIT | C_DIGIT_X;
        if (letter) v |= C_LETTER;
        if (digit || letter) v |= C_ALNUM;
        if (digit || letter || c == '.' || c == '_' || c == '%' || c == '+' || c == '-')
            v |= C_EMAIL;
        if (c == 'X' || c == 'x') v |= C_DIGIT_X;
        ctab[c] = v;
    }
}

#define IS(c, cls) (ctab[(uint8_t)(c)] & (cls))

/* ---- validators (gateway/classify/validators.py is the reference) -------- */

/* GB/T 2260 provincial codes (validators.PROVINCE_CODES). */
static const int PROVINCES[] = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43,
                                44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83};
static uint8_t province_ok[100];

static int all_digits(const uint8_t *v, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (!IS(v[i], C_DIGIT)) return 0;
    return 1;
}

static int num(const uint8_t *v, int n) {
    int x = 0;
    for (int i = 0; i < n; i++) x = x * 10 + (v[i] - '0');
    return x;
}

typedef struct {
    int year, month, day;
} Today;

static int leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* A valid YYYYMMDD from 1900-01-01 to today (validators.birth_dates). */
static int birth_date_ok(const uint8_t *v, const Today *today) {
    static const int DAYS[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = num(v, 4), m = num(v + 4, 2), d = num(v + 6, 2);
    if (y < 1900 || m < 1 || m > 12 || d < 1) return 0;
    int last = DAYS[m - 1] + (m == 2 && leap(y));
    if (d > last) return 0;
    long key = (long)y * 10000 + m * 100 + d;
    return key <= (long)today->year * 10000 + today->month * 100 + today->day;
}

/* ISO 7064 MOD 11-2 (GB 11643-1999): weights 2^(17-i) mod 11. */
static uint8_t mod11_2_check(const uint8_t *body) {
    static const int W[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; i++) sum += W[i] * (body[i] - '0');
    return (uint8_t)"10X98765432"[sum % 11];
}

/* A Resident ID's shape: everything but its check character (validators.resident_id_shape). */
static int resident_id_shape(const uint8_t *v, Py_ssize_t n, const Today *today) {
    return n == 18 && all_digits(v, 17) && province_ok[num(v, 2)] && birth_date_ok(v + 6, today);
}

static int is_resident_id(const uint8_t *v, Py_ssize_t n, const Today *today) {
    if (!resident_id_shape(v, n, today)) return 0;
    uint8_t check = v[17] == 'x' ? 'X' : v[17];
    return mod11_2_check(v) == check;
}

/* HKID: letters value A=10.., a missing first letter counts 36 (REGULATIONS.md). */
static uint8_t hkid_check(const uint8_t *letters, int nletters, const uint8_t *digits) {
    int first, second;
    if (nletters == 1) {
        first = 36;
        second = letters[0] - 55;
    } else {
        first = letters[0] - 55;
        second = letters[1] - 55;
    }
    int total = 9 * first + 8 * second;
    for (int i = 0; i < 6; i++) total += (7 - i) * (digits[i] - '0');
    int r = total % 11;
    if (r == 0) return '0';
    if (r == 1) return 'A';
    return (uint8_t)('0' + 11 - r);
}

static int is_hkid(const uint8_t *v, Py_ssize_t n) {
    if (n != 8 && n != 9) return 0;
    int nletters = (int)n - 7;
    for (int i = 0; i < nletters; i++)
        if (v[i] < 'A' || v[i] > 'Z') return 0;
    if (!all_digits(v + nletters, 6)) return 0;
    return hkid_check(v, nletters, v + nletters) == v[n - 1];
}

static int luhn_ok(const uint8_t *v, Py_ssize_t n) {
    int sum = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int d = v[n - 1 - i] - '0';
        if (i & 1) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
    }
    return sum % 10 == 0;
}

/* A card number's shape: 15-19 digits with a known IIN prefix (SPEC 3.1). */
static int bank_card_shape(const uint8_t *v, Py_ssize_t n) {
    if (n < 15 || n > 19 || !all_digits(v, n)) return 0;
    int two = num(v, 2);
    int iin = v[0] == '4' || two == 62 || (two >= 51 && two <= 55) || two == 34 || two == 37 ||
              two == 35;
    if (!iin && v[0] == '2') {
        int four = num(v, 4);
        iin = four >= 2221 && four <= 2720;
    }
    return iin;
}

/* The shape, then Luhn. */
static int is_bank_card(const uint8_t *v, Py_ssize_t n) { return bank_card_shape(v, n) && luhn_ok(v, n); }

/* GB 32100-2015: 31 characters, weights 3^i mod 31. */
static const char USCC_ALPHABET[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
static int8_t uscc_value[256];

/* A USCC's shape: 18 characters of its alphabet, the region code digits. */
static int uscc_shape(const uint8_t *v, Py_ssize_t n) {
    if (n != 18 || !all_digits(v + 2, 6)) return 0;
    for (int i = 0; i < 18; i++)
        if (uscc_value[v[i]] < 0) return 0;
    return 1;
}

static int is_uscc(const uint8_t *v, Py_ssize_t n) {
    if (!uscc_shape(v, n)) return 0;
    int total = 0, weight = 1;
    for (int i = 0; i < 17; i++) {
        total += uscc_value[v[i]] * weight;
        weight = weight * 3 % 31;
    }
    return uscc_value[v[17]] == (31 - total % 31) % 31;
}

/* ---- distinct value sets -------------------------------------------------- */

typedef struct Entry {
    Py_hash_t hash;
    Py_ssize_t len;
    int32_t source; /* the column source it was seen in, SOURCE_NONE or SOURCE_ASIDE */
    uint8_t data[];
} Entry;

typedef struct Block {
    struct Block *next;
    size_t used, size;
    /* entries follow, each aligned to 8 bytes */
} Block;

typedef struct {
    Entry **slots; /* open addressing, linear probing; NULL = empty */
    Py_ssize_t cap, n;
} ValueSet;

typedef struct {
    int active;
    long long start, end;
    int rank, label, source;
    uint8_t *value;
    Py_ssize_t len, cap;
} Slot;

/* One column of one table: per chance-tested validator, the values of its length
 * (candidates), those with its shape (everything but the check), and its findings. */
typedef struct {
    int table, column;
    long long candidates[CH_COUNT], shaped[CH_COUNT], valid[CH_COUNT];
    unsigned aside; /* bit ch: set aside */
} Source;

typedef struct {
    PyObject_HEAD
    /* per expression id */
    Py_ssize_t nspecs;
    uint8_t *ops;
    int *spec_label;
    int *spec_arg;
    /* per label */
    Py_ssize_t nlabels;
    int *rank;
    int *group; /* slot index: 0 for the precedence group, label + 1 otherwise */
    long long *counts;
    ValueSet *values;
    Slot *slots;   /* nlabels + 1 */
    int *order;    /* slot indices in first-use order */
    int norder;
    int label_ix[LB_COUNT];
    /* hotwords */
    int nwords[HW_NATIVE];
    uint8_t words[HW_NATIVE][MAX_HOTWORDS][HOTWORD_WINDOW]; /* a longer word never fits the window */
    int word_len[HW_NATIVE][MAX_HOTWORDS];
    int word_whole[HW_NATIVE][MAX_HOTWORDS];
    Today today;
    Py_ssize_t max_distinct, max_total, tracked;
    int capped;
    long long tail_bytes;
    SHA256_CTX inner, outer;
    Block *arena;
    /* scratch */
    long long *hits;
    Py_ssize_t hits_cap;
    uint8_t *early;
    Py_ssize_t early_cap;
    /* column profiles: the current member's table (-1: none), its delimiter, the
     * absolute offset of the newline before its first row, its columns' sources */
    int table, ntables;
    uint8_t table_sep;
    long long table_from;
    int col_source[MAX_COLUMNS];
    Source *sources;
    Py_ssize_t nsources, sources_cap;
} Core;

/* A read-only view of the window a hit is handled in. */
typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    long long base; /* absolute stream offset of p[0] */
} Win;

static inline uint8_t win_at(const Win *w, Py_ssize_t i) { return (i >= 0 && i < w->n) ? w->p[i] : '\n'; }

static Entry *arena_entry(Core *self, const uint8_t *v, Py_ssize_t n, Py_hash_t hash) {
    size_t need = (sizeof(Entry) + (size_t)n + 7) & ~(size_t)7;
    Block *b = self->arena;
    if (b == NULL || b->size - b->used < need) {
        size_t size = need > ARENA_BLOCK ? need : ARENA_BLOCK;
        b = PyMem_RawMalloc(sizeof(Block) + size);
        if (b == NULL) return NULL;
        b->next = self->arena;
        b->used = 0;
        b->size = size;
        self->arena = b;
    }
    Entry *e = (Entry *)((uint8_t *)(b + 1) + b->used);
    b->used += need;
    e->hash = hash;
    e->len = n;
    memcpy(e->data, v, (size_t)n);
    return e;
}

static int set_grow(ValueSet *s) {
    Py_ssize_t cap = s->cap ? s->cap * 2 : 64;
    Entry **slots = PyMem_RawCalloc((size_t)cap, sizeof(Entry *));
    if (slots == NULL) return -1;
    for (Py_ssize_t i = 0; i < s->cap; i++) {
        Entry *e = s->slots[i];
        if (e == NULL) continue;
        Py_ssize_t j = (Py_ssize_t)((size_t)e->hash & (size_t)(cap - 1));
        while (slots[j] != NULL) j = (j + 1) & (cap - 1);
        slots[j] = e;
    }
    PyMem_RawFree(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

#if PY_VERSION_HEX < 0x030E0000
/* Declared by Python.h up to 3.12; 3.13 moved the declaration to an internal
 * header but still exports the function (3.14 adds Py_HashBuffer). */
PyAPI_FUNC(Py_hash_t) _Py_HashBytes(const void *, Py_ssize_t);
#endif

static Py_hash_t hash_bytes(const uint8_t *v, Py_ssize_t n) {
    /* Python's keyed SipHash: values come from uploads, so the table must not
     * be floodable with chosen collisions. */
#if PY_VERSION_HEX >= 0x030E0000
    return Py_HashBuffer(v, n);
#else
    return _Py_HashBytes(v, n);
#endif
}

/* The chance-tested validator of a label index, or -1. */
static int chance_of(const Core *self, int label) {
    for (int ch = 0; ch < CH_COUNT; ch++)
        if (self->label_ix[ch] == label) return ch;
    return -1;
}

/* matcher._accept: count a finding, remember its value within the bounds; a
 * finding in a table column (source >= 0) counts towards its profile too. */
static int accept(Core *self, int label, const uint8_t *v, Py_ssize_t n, int source) {
    if (label < 0 || label >= self->nlabels) {
        PyErr_SetString(PyExc_IndexError, "label index out of range");
        return -1;
    }
    self->counts[label] += 1;
    if (source >= 0) {
        int ch = source < self->nsources ? chance_of(self, label) : -1;
        if (ch >= 0)
            self->sources[source].valid[ch] += 1;
        else
            source = SOURCE_NONE;
    }
    ValueSet *s = &self->values[label];
    Py_hash_t h = hash_bytes(v, n);
    if (s->cap) {
        Py_ssize_t j = (Py_ssize_t)((size_t)h & (size_t)(s->cap - 1));
        for (Entry *e; (e = s->slots[j]) != NULL; j = (j + 1) & (s->cap - 1))
            if (e->hash == h && e->len == n && memcmp(e->data, v, (size_t)n) == 0) {
                if (e->source == SOURCE_ASIDE) { /* seen again after its column was set aside */
                    e->source = source;
                    s->n += 1;
                } else if (e->source != source) {
                    e->source = SOURCE_NONE; /* seen in two places: never set aside */
                }
                return 0;
            }
    }
    if (s->n >= self->max_distinct || self->tracked >= self->max_total) {
        self->capped = 1;
        return 0;
    }
    if ((s->n + 1) * 2 > s->cap && set_grow(s) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    Entry *e = arena_entry(self, v, n, h);
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->source = source;
    Py_ssize_t j = (Py_ssize_t)((size_t)h & (size_t)(s->cap - 1));
    while (s->slots[j] != NULL) j = (j + 1) & (s->cap - 1);
    s->slots[j] = e;
    s->n += 1;
    self->tracked += 1;
    return 0;
}

static int slot_set(Slot *slot, long long start, long long end, int rank, int label, const uint8_t *v,
                    Py_ssize_t n, int source) {
    if (n > slot->cap) {
        uint8_t *buf = PyMem_RawRealloc(slot->value, (size_t)n);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        slot->value = buf;
        slot->cap = n;
    }
    memcpy(slot->value, v, (size_t)n);
    slot->len = n;
    slot->active = 1;
    slot->start = start;
    slot->end = end;
    slot->rank = rank;
    slot->label = label;
    slot->source = source;
    return 0;
}

/* matcher._propose: 1 when the candidate is now pending, 0 when it lost, -1 on error. */
static int propose(Core *self, int label, long long start, long long end, const uint8_t *v, Py_ssize_t n,
                   int source) {
    if (label < 0 || label >= self->nlabels) {
        PyErr_SetString(PyExc_IndexError, "label index out of range");
        return -1;
    }
    int g = self->group[label];
    Slot *slot = &self->slots[g];
    int rank = self->rank[label];
    if (!slot->active) {
        self->order[self->norder++] = g;
        return slot_set(slot, start, end, rank, label, v, n, source) < 0 ? -1 : 1;
    }
    if (start < slot->end) {
        if (rank > slot->rank || (rank == slot->rank && end - start <= slot->end - slot->start)) return 0;
    } else if (accept(self, slot->label, slot->value, slot->len, slot->source) < 0) {
        return -1;
    }
    return slot_set(slot, start, end, rank, label, v, n, source) < 0 ? -1 : 1;
}

/* ---- the native handlers (mirror TextMatcher._h_*) ------------------------ */

static Py_ssize_t run_start(const Win *w, Py_ssize_t end, Py_ssize_t longest, uint8_t cls) {
    Py_ssize_t low = end - longest - 1;
    if (low < 0) low = 0;
    for (Py_ssize_t k = end - 1; k >= low; k--)
        if (!IS(win_at(w, k), cls)) return k + 1;
    return low;
}

static int fraction(const Win *w, Py_ssize_t p) {
    return win_at(w, p) == '.' && p > 0 && IS(win_at(w, p - 1), C_DIGIT);
}

/* Absolute start of the last built-in hotword of `cls` in the 32 bytes before window index `s`. */
static long long hotword_start(const Core *self, const Win *w, int cls, Py_ssize_t s) {
    Py_ssize_t low = s - HOTWORD_WINDOW;
    if (low < 0) low = 0;
    uint8_t region[HOTWORD_WINDOW];
    Py_ssize_t rlen = s - low;
    for (Py_ssize_t i = 0; i < rlen; i++) {
        uint8_t c = win_at(w, low + i);
        region[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
    }
    long long found = NEVER;
    for (int k = 0; k < self->nwords[cls]; k++) {
        const uint8_t *word = self->words[cls][k];
        Py_ssize_t wl = self->word_len[cls][k];
        for (Py_ssize_t i = rlen - wl; i >= 0; i--) {
            if (memcmp(region + i, word, (size_t)wl) != 0) continue;
            Py_ssize_t at = low + i;
            if (!self->word_whole[cls][k] ||
                !((at > 0 && IS(win_at(w, at - 1), C_LETTER)) || IS(win_at(w, at + wl), C_LETTER))) {
                if (at + w->base > found) found = at + w->base;
                break;
            }
        }
    }
    return found;
}

static int near_hotword(const Core *self, const Win *w, int cls, Py_ssize_t s) {
    return hotword_start(self, w, cls, s) >= s + w->base - HOTWORD_WINDOW;
}

/* "+852"/"852"/"(852)" right before window index p (the boundary byte). */
static int hk_prefix(const Win *w, Py_ssize_t p) {
    uint8_t c = win_at(w, p);
    if (c == ' ' || c == '-') {
        p -= 1;
        if (p < 0) return 0;
        c = win_at(w, p);
    }
    if (c == ')')
        return p >= 4 && win_at(w, p - 4) == '(' && win_at(w, p - 3) == '8' && win_at(w, p - 2) == '5' &&
               win_at(w, p - 1) == '2';
    return p >= 3 && win_at(w, p - 2) == '8' && win_at(w, p - 1) == '5' && c == '2' &&
           !IS(win_at(w, p - 3), C_ALNUM);
}

#define LBL(self, which) ((self)->label_ix[which])
#define TRY(expr)                 \
    do {                          \
        if ((expr) < 0) return -1; \
    } while (0)

static inline int line_pad(uint8_t c) { return c == ' ' || c == '\t' || c == '"'; }

/* The column of the table the current member is that the value at window indices
 * [s, end) lies in, as a source index (created on first use), or SOURCE_NONE: not
 * a table, before its first row, no line start within COLUMN_REACH, or past the
 * bounds; with the delimiter '\n' (plain text), on a line with anything else.
 * Cells are split as matcher._column_source splits them: by the delimiter outside
 * quotes. */
static int column_source(Core *self, const Win *w, Py_ssize_t s, Py_ssize_t end) {
    if (self->table < 0) return SOURCE_NONE;
    Py_ssize_t low = s > COLUMN_REACH ? s - COLUMN_REACH : 0, line = s - 1;
    while (line >= low && w->p[line] != '\n') line--;
    if (line < low || w->base + line < self->table_from) return SOURCE_NONE;
    int column = 0, quoted = 0;
    uint8_t sep = self->table_sep;
    if (sep == '\n') {
        for (Py_ssize_t i = line + 1; i < s; i++)
            if (!line_pad(w->p[i])) return SOURCE_NONE;
        Py_ssize_t after = end;
        while (after < w->n && (line_pad(w->p[after]) || w->p[after] == '\r')) after++;
        if (after >= w->n || w->p[after] != '\n') return SOURCE_NONE;
    } else {
        for (Py_ssize_t i = line + 1; i < s; i++) {
            uint8_t c = w->p[i];
            if (c == '"')
                quoted = !quoted;
            else if (c == sep && !quoted)
                column++;
        }
    }
    if (column >= MAX_COLUMNS) return SOURCE_NONE;
    int source = self->col_source[column];
    if (source >= 0) return source;
    if (self->nsources >= MAX_SOURCES) return SOURCE_NONE;
    if (self->nsources == self->sources_cap) {
        Py_ssize_t cap = self->sources_cap ? self->sources_cap * 2 : 16;
        Source *grown = PyMem_RawRealloc(self->sources, (size_t)cap * sizeof(Source));
        if (grown == NULL) return SOURCE_NONE; /* no profile: the hits count */
        self->sources = grown;
        self->sources_cap = cap;
    }
    source = (int)self->nsources++;
    memset(&self->sources[source], 0, sizeof(Source));
    self->sources[source].table = self->table;
    self->sources[source].column = column;
    self->col_source[column] = source;
    return source;
}

/* Count a value of a chance-tested validator's length, and whether it has its shape. */
static inline void profile(Core *self, int source, int ch, int shaped) {
    if (source < 0) return;
    self->sources[source].candidates[ch] += 1;
    self->sources[source].shaped[ch] += shaped;
}

static int h_digits(Core *self, const Win *w, Py_ssize_t e, long long t) {
    Py_ssize_t end = e - 1;
    Py_ssize_t start = run_start(w, end, 19, C_DIGIT_X);
    if (win_at(w, start - 1) == '.' && fraction(w, start - 1)) return 0;
    const uint8_t *run = w->p + start;
    Py_ssize_t n = end - start;
    long long first = t - 1 - n;
    /* Only the lengths a profile tests look up their column. */
    int src = (n == 11 || (n >= 15 && n <= 19)) ? column_source(self, w, start, end) : SOURCE_NONE;
    if (n == 18) {
        profile(self, src, CH_RESIDENT_ID, resident_id_shape(run, n, &self->today));
        profile(self, src, CH_USCC, uscc_shape(run, n));
        profile(self, src, CH_CARD, bank_card_shape(run, n));
        if (is_resident_id(run, n, &self->today)) {
            uint8_t upper[18];
            memcpy(upper, run, 18);
            if (upper[17] == 'x') upper[17] = 'X';
            int r = propose(self, LBL(self, LB_RESIDENT_ID), first, t - 1, upper, 18, src);
            if (r != 0) return r < 0 ? -1 : 0;
        }
        if (is_uscc(run, n)) TRY(propose(self, LBL(self, LB_USCC), first, t - 1, run, n, src));
        if (run[17] <= '9' && is_bank_card(run, n))
            TRY(propose(self, LBL(self, LB_CARD), first, t - 1, run, n, src));
    } else if (n == 8) {
        if (run[0] >= '2' && (hk_prefix(w, start - 1) || near_hotword(self, w, HW_PHONE, start)))
            TRY(propose(self, LBL(self, LB_HK_PHONE), first, t - 1, run, n, SOURCE_NONE));
    } else if (n == 11) {
        /* Both phone readings share a shape: eleven digits, the first not 0. */
        int shaped = all_digits(run, 11) && run[0] != '0';
        profile(self, src, CH_CN_PHONE, shaped);
        profile(self, src, CH_HK_PHONE, shaped);
        if (run[0] == '1' && run[1] >= '3')
            TRY(propose(self, LBL(self, LB_CN_PHONE), first, t - 1, run, n, src));
        else if (run[0] == '8' && run[1] == '5' && run[2] == '2' && run[3] >= '2')
            TRY(propose(self, LBL(self, LB_HK_PHONE), first, t - 1, run + 3, 8, src));
    } else if (n == 13) {
        if (run[0] == '8' && run[1] == '6' && run[2] == '1' && run[3] >= '3')
            TRY(propose(self, LBL(self, LB_CN_PHONE), first, t - 1, run + 2, 11, SOURCE_NONE));
    } else {
        if (n == 15 && memcmp(run, "00861", 5) == 0 && run[5] >= '3')
            TRY(propose(self, LBL(self, LB_CN_PHONE), first, t - 1, run + 4, 11, SOURCE_NONE));
        profile(self, src, CH_CARD, bank_card_shape(run, n));
        if (is_bank_card(run, n)) TRY(propose(self, LBL(self, LB_CARD), first, t - 1, run, n, src));
    }
    return 0;
}

static int h_uscc(Core *self, const Win *w, Py_ssize_t e, long long t, int label) {
    if (e < 19) return 0;
    const uint8_t *value = w->p + e - 19;
    if (fraction(w, e - 20)) return 0;
    if (!all_digits(value, 18) && is_uscc(value, 18))
        TRY(propose(self, label, t - 19, t - 1, value, 18, SOURCE_NONE));
    return 0;
}

/* Grouped shapes (matcher._GROUP_SHAPES), longest first; d = digit, s = separator. */
static const struct {
    const char *mask;
    int which;
} SHAPES[] = {
    {"ddddsddddsddddsddddsddd", LB_CARD}, {"ddddsddddsddddsddddsdd", LB_CARD},
    {"ddddsddddsddddsddddsd", LB_CARD},   {"ddddsddddsddddsdddd", LB_CARD},
    {"ddddsddddsddddsddd", LB_CARD},      {"ddddsddddddsddddd", LB_CARD},
    {"dddsddddsdddd", LB_CN_PHONE},       {"ddddsdddd", LB_HK_PHONE},
};
#define NSHAPES ((int)(sizeof(SHAPES) / sizeof(SHAPES[0])))

static int group_before(const Win *w, Py_ssize_t p, uint8_t sep) {
    Py_ssize_t low = p - GROUP_DIGITS_MAX;
    if (low < 0) low = 0;
    Py_ssize_t k = p;
    while (k >= low && IS(win_at(w, k), C_DIGIT)) k--;
    if (k < low) return 0;
    uint8_t c = win_at(w, k);
    return k < 0 || (c != ' ' && c != '-') || c == sep;
}

/* One grouped number at window [begin, end), absolute end t - 2: 1 when now pending. */
static int grouped(Core *self, const Win *w, int which, Py_ssize_t begin, Py_ssize_t end, long long t,
                   uint8_t sep) {
    uint8_t lead = win_at(w, begin);
    if (which == LB_CN_PHONE) {
        if (lead != '1' || win_at(w, begin + 1) < '3') return 0;
    } else if (which == LB_HK_PHONE && lead < '2') {
        return 0;
    }
    uint8_t before = win_at(w, begin - 1);
    if (IS(before, C_ALNUM) || (before == '.' && IS(win_at(w, begin - 2), C_DIGIT))) return 0;
    if (before == sep && IS(win_at(w, begin - 2), C_DIGIT) && group_before(w, begin - 2, sep) &&
        !hk_prefix(w, begin - 1) && !(begin >= 3 && win_at(w, begin - 3) == '8' && win_at(w, begin - 2) == '6'))
        return 0;
    uint8_t digits[GROUPED_MAX + 2];
    Py_ssize_t n = 0;
    for (Py_ssize_t i = begin; i < end && n < (Py_ssize_t)sizeof(digits); i++) {
        uint8_t c = win_at(w, i);
        if (c != sep) digits[n++] = c;
    }
    long long first = t - 2 - (end - begin);
    int label = LBL(self, which);
    if (which == LB_CN_PHONE) return propose(self, label, first, t - 2, digits, n, SOURCE_NONE);
    if (which == LB_HK_PHONE) {
        if (!(hk_prefix(w, begin - 1) || near_hotword(self, w, HW_PHONE, begin))) return 0;
        return propose(self, label, first, t - 2, digits, n, SOURCE_NONE);
    }
    if (!is_bank_card(digits, n)) return 0;
    return propose(self, label, first, t - 2, digits, n, SOURCE_NONE);
}

/* Try the shapes `cls[0:len]` ends with, longest first, until one is pending. */
static int try_shapes(Core *self, const Win *w, const char *cls, Py_ssize_t len, Py_ssize_t end, long long t,
                      uint8_t sep) {
    for (int i = 0; i < NSHAPES; i++) {
        Py_ssize_t m = (Py_ssize_t)strlen(SHAPES[i].mask);
        if (len < m || memcmp(cls + len - m, SHAPES[i].mask, (size_t)m) != 0) continue;
        int r = grouped(self, w, SHAPES[i].which, end - m, end, t, sep);
        if (r != 0) return r;
    }
    return 0;
}

static int h_grouped(Core *self, const Win *w, Py_ssize_t e, long long t, int arg) {
    uint8_t sep = arg ? '-' : ' ';
    Py_ssize_t end = e - 2;
    Py_ssize_t low = end - GROUPED_MAX - 2;
    if (low < 0) low = 0;
    Py_ssize_t k = end - 1;
    while (k >= low && (IS(win_at(w, k), C_DIGIT) || win_at(w, k) == sep)) k--;
    Py_ssize_t rs = k + 1, len = end - rs;
    char cls[GROUPED_MAX + 3];
    if (len < 0 || len > (Py_ssize_t)sizeof(cls)) return 0;
    for (Py_ssize_t i = 0; i < len; i++) cls[i] = win_at(w, rs + i) == sep ? 's' : 'd';
    TRY(try_shapes(self, w, cls, len, end, t, sep));
    /* Or the number ends before a last group that is no group of it (a CVV, an age). */
    Py_ssize_t cut = len - SHORT_GROUP;
    if (cut > 0) {
        Py_ssize_t last = -1;
        for (Py_ssize_t i = len - 1; i >= cut; i--)
            if (cls[i] == 's') {
                last = i;
                break;
            }
        if (last >= 0) {
            Py_ssize_t shorter = end - (len - last);
            TRY(try_shapes(self, w, cls, last, shorter, t - (end - shorter), sep));
        }
    }
    return 0;
}

static int travel_doc(Core *self, const Win *w, const uint8_t *v, Py_ssize_t n, Py_ssize_t s) {
    uint8_t letter = v[0];
    if (n == 11) {
        if ((letter != 'H' && letter != 'M') || !all_digits(v + 1, 10)) return 0;
    } else {
        int plain = strchr("EGKHMC", letter) != NULL && letter != 0 && all_digits(v + 1, n - 1);
        int lettered = (letter == 'E' || letter == 'C') && v[1] >= 'A' && v[1] <= 'Z' && v[1] != 'I' &&
                       v[1] != 'O' && all_digits(v + 2, n - 2);
        if (!plain && !lettered) return 0;
    }
    long long passport = hotword_start(self, w, HW_PASSPORT, s);
    long long permit = hotword_start(self, w, HW_PERMIT, s);
    long long limit = s + w->base - HOTWORD_WINDOW;
    int near_passport = passport >= limit, near_permit = permit >= limit;
    if (!near_passport && !near_permit) return 0;
    int which = -1;
    if (n == 11 || letter == 'M' || letter == 'C')
        which = near_permit ? LB_TRAVEL_PERMIT : -1;
    else if (letter == 'E' || letter == 'G')
        which = near_passport ? LB_CN_PASSPORT : -1;
    else if (letter == 'K')
        which = near_passport ? LB_HK_PASSPORT : -1;
    else if (letter != 'H' || !all_digits(v + 1, n - 1))
        which = -1;
    else if (near_passport && near_permit)
        which = passport > permit ? LB_HK_PASSPORT : LB_TRAVEL_PERMIT;
    else
        which = near_passport ? LB_HK_PASSPORT : LB_TRAVEL_PERMIT;
    return which < 0 ? 0 : accept(self, LBL(self, which), v, n, SOURCE_NONE);
}

static int h_letters(Core *self, const Win *w, Py_ssize_t e) {
    Py_ssize_t end = e - 1;
    Py_ssize_t start = run_start(w, end, 11, C_ALNUM);
    if (fraction(w, start - 1)) return 0;
    const uint8_t *token = w->p + start;
    Py_ssize_t n = end - start;
    if ((n == 8 || n == 9) && is_hkid(token, n)) TRY(accept(self, LBL(self, LB_HK_ID), token, n, SOURCE_NONE));
    if (n == 9 || n == 11) TRY(travel_doc(self, w, token, n, start));
    return 0;
}

static int h_hkid_brackets(Core *self, const Win *w, Py_ssize_t e, int label) {
    Py_ssize_t opening = e - 3; /* "(" of "(3)" */
    Py_ssize_t start = run_start(w, opening, 8, C_ALNUM);
    if (fraction(w, start - 1)) return 0;
    uint8_t value[16];
    Py_ssize_t n = opening - start;
    if (n < 0 || n + 1 > (Py_ssize_t)sizeof(value)) return 0;
    memcpy(value, w->p + start, (size_t)n);
    value[n++] = win_at(w, e - 2);
    if (is_hkid(value, n)) TRY(accept(self, label, value, n, SOURCE_NONE));
    return 0;
}

static int h_email(Core *self, const Win *w, Py_ssize_t e, int label) {
    Py_ssize_t end = e - 2;
    Py_ssize_t lo = end - EMAIL_DOMAIN_MAX;
    if (lo < 0) lo = 0;
    Py_ssize_t at = -1;
    for (Py_ssize_t k = end - 1; k >= lo; k--)
        if (win_at(w, k) == '@') {
            at = k;
            break;
        }
    if (at < 0) return 0;
    Py_ssize_t low = at - EMAIL_LOCAL_MAX - 1;
    if (low < 0) low = 0;
    Py_ssize_t k = -1;
    for (Py_ssize_t j = at - 1; j >= low; j--)
        if (!IS(win_at(w, j), C_EMAIL)) {
            k = j;
            break;
        }
    if (k < 0) return 0; /* a local part longer than RFC 5321 allows */
    Py_ssize_t start = k + 1;
    while (start < at && win_at(w, start) == '.') start++; /* a local part never starts with "." */
    if (start >= at) return 0;
    uint8_t value[EMAIL_LOCAL_MAX + EMAIL_DOMAIN_MAX + 8];
    Py_ssize_t n = end - start;
    if (n > (Py_ssize_t)sizeof(value)) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = win_at(w, start + i);
        value[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
    }
    return accept(self, label, value, n, SOURCE_NONE);
}

/* ---- Core type --------------------------------------------------------------- */

static void Core_dealloc(Core *self) {
    if (self->values != NULL)
        for (Py_ssize_t i = 0; i < self->nlabels; i++) PyMem_RawFree(self->values[i].slots);
    if (self->slots != NULL)
        for (Py_ssize_t i = 0; i <= self->nlabels; i++) PyMem_RawFree(self->slots[i].value);
    for (Block *b = self->arena; b != NULL;) {
        Block *next = b->next;
        PyMem_RawFree(b);
        b = next;
    }
    PyMem_RawFree(self->ops);
    PyMem_RawFree(self->spec_label);
    PyMem_RawFree(self->spec_arg);
    PyMem_RawFree(self->rank);
    PyMem_RawFree(self->group);
    PyMem_RawFree(self->counts);
    PyMem_RawFree(self->values);
    PyMem_RawFree(self->slots);
    PyMem_RawFree(self->order);
    PyMem_RawFree(self->hits);
    PyMem_RawFree(self->early);
    PyMem_RawFree(self->sources);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int int_at(PyObject *seq, Py_ssize_t i, int *out) {
    long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value out of range");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int load_ints(PyObject *obj, const char *what, Py_ssize_t expect, int **out) {
    PyObject *seq = PySequence_Fast(obj, what);
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (expect >= 0 && n != expect) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items, got %zd", what, expect, n);
        Py_DECREF(seq);
        return -1;
    }
    int *buf = PyMem_RawCalloc((size_t)(n ? n : 1), sizeof(int));
    if (buf == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (int_at(seq, i, &buf[i]) < 0) {
            PyMem_RawFree(buf);
            Py_DECREF(seq);
            return -1;
        }
    Py_DECREF(seq);
    *out = buf;
    return 0;
}

static int load_hotwords(Core *self, PyObject *hotwords) {
    PyObject *classes = PySequence_Fast(hotwords, "hotwords must be a sequence");
    if (classes == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(classes) != HW_NATIVE) {
        PyErr_SetString(PyExc_ValueError, "hotwords: expected the phone, passport and permit classes");
        Py_DECREF(classes);
        return -1;
    }
    for (int cls = 0; cls < HW_NATIVE; cls++) {
        PyObject *words = PySequence_Fast(PySequence_Fast_GET_ITEM(classes, cls), "hotword class");
        if (words == NULL) goto fail;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(words);
        if (n > MAX_HOTWORDS) {
            PyErr_SetString(PyExc_ValueError, "too many hotwords in one class");
            Py_DECREF(words);
            goto fail;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            const char *word;
            Py_ssize_t len;
            int whole;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(words, k), "y#p", &word, &len, &whole)) {
                Py_DECREF(words);
                goto fail;
            }
            if (len < 1 || len > HOTWORD_WINDOW) {
                PyErr_SetString(PyExc_ValueError, "hotword length out of range");
                Py_DECREF(words);
                goto fail;
            }
            memcpy(self->words[cls][k], word, (size_t)len);
            self->word_len[cls][k] = (int)len;
            self->word_whole[cls][k] = whole;
        }
        self->nwords[cls] = (int)n;
        Py_DECREF(words);
    }
    Py_DECREF(classes);
    return 0;
fail:
    Py_DECREF(classes);
    return -1;
}

static void hmac_init(Core *self, const uint8_t *secret, Py_ssize_t n) {
    uint8_t key[SHA256_CBLOCK] = {0}, pad[SHA256_CBLOCK];
    if (n > SHA256_CBLOCK)
        SHA256(secret, (size_t)n, key);
    else
        memcpy(key, secret, (size_t)n);
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = key[i] ^ 0x36;
    SHA256_Init(&self->inner);
    SHA256_Update(&self->inner, pad, sizeof(pad));
    for (int i = 0; i < SHA256_CBLOCK; i++) pad[i] = key[i] ^ 0x5c;
    SHA256_Init(&self->outer);
    SHA256_Update(&self->outer, pad, sizeof(pad));
}

static const char *CORE_KWLIST[] = {"ops", "spec_labels", "spec_args", "ranks", "groups", "labels",
                                    "hotwords", "today", "secret", "max_distinct", "max_total",
                                    "tail_bytes", NULL};

static int Core_init(Core *self, PyObject *args, PyObject *kwargs) {
    PyObject *ops, *spec_labels, *spec_args, *ranks, *groups, *labels, *hotwords;
    int year, month, day;
    const char *secret;
    Py_ssize_t secret_len, max_distinct, max_total, tail_bytes;
    if (self->ops != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Core is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SOOOOOO(iii)y#nnn", (char **)CORE_KWLIST, &ops,
                                     &spec_labels, &spec_args, &ranks, &groups, &labels, &hotwords, &year,
                                     &month, &day, &secret, &secret_len, &max_distinct, &max_total,
                                     &tail_bytes))
        return -1;
    Py_ssize_t nspecs = PyBytes_GET_SIZE(ops);
    self->nspecs = nspecs;
    self->ops = PyMem_RawMalloc((size_t)(nspecs ? nspecs : 1));
    if (self->ops == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(self->ops, PyBytes_AS_STRING(ops), (size_t)nspecs);
    if (load_ints(spec_labels, "spec_labels", nspecs, &self->spec_label) < 0 ||
        load_ints(spec_args, "spec_args", nspecs, &self->spec_arg) < 0 ||
        load_ints(ranks, "ranks", -1, &self->rank) < 0)
        return -1;
    self->nlabels = PySequence_Size(ranks);
    int *label_ix = NULL;
    if (load_ints(groups, "groups", self->nlabels, &self->group) < 0 ||
        load_ints(labels, "labels", LB_COUNT, &label_ix) < 0)
        return -1;
    memcpy(self->label_ix, label_ix, sizeof(self->label_ix));
    PyMem_RawFree(label_ix);
    for (Py_ssize_t i = 0; i < nspecs; i++) {
        if (self->ops[i] > OP_EMAIL) {
            PyErr_SetString(PyExc_ValueError, "unknown operation");
            return -1;
        }
        if (self->ops[i] != OP_PYTHON && (self->spec_label[i] < 0 || self->spec_label[i] >= self->nlabels)) {
            PyErr_SetString(PyExc_ValueError, "spec label out of range");
            return -1;
        }
    }
    for (int i = 0; i < LB_COUNT; i++)
        if (self->label_ix[i] < 0 || self->label_ix[i] >= self->nlabels) {
            PyErr_SetString(PyExc_ValueError, "label index out of range");
            return -1;
        }
    for (Py_ssize_t i = 0; i < self->nlabels; i++)
        if (self->group[i] < 0 || self->group[i] > self->nlabels) {
            PyErr_SetString(PyExc_ValueError, "group out of range");
            return -1;
        }
    if (load_hotwords(self, hotwords) < 0) return -1;
    if (month < 1 || month > 12 || day < 1 || day > 31) {
        PyErr_SetString(PyExc_ValueError, "today: not a date");
        return -1;
    }
    self->today = (Today){year, month, day};
    if (max_distinct < 0 || max_total < 0 || tail_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "bounds must be positive");
        return -1;
    }
    self->max_distinct = max_distinct;
    self->max_total = max_total;
    self->tail_bytes = tail_bytes;
    self->counts = PyMem_RawCalloc((size_t)self->nlabels + 1, sizeof(long long));
    self->values = PyMem_RawCalloc((size_t)self->nlabels + 1, sizeof(ValueSet));
    self->slots = PyMem_RawCalloc((size_t)self->nlabels + 1, sizeof(Slot));
    self->order = PyMem_RawCalloc((size_t)self->nlabels + 1, sizeof(int));
    if (!self->counts || !self->values || !self->slots || !self->order) {
        PyErr_NoMemory();
        return -1;
    }
    hmac_init(self, (const uint8_t *)secret, secret_len);
    self->table = -1;
    return 0;
}

/* A label index argument, checked against the core's labels before any cast. */
static int label_arg(const Core *self, PyObject *arg, int *out) {
    long label = PyLong_AsLong(arg);
    if (label == -1 && PyErr_Occurred()) return -1;
    if (label < 0 || label >= self->nlabels) {
        PyErr_SetString(PyExc_IndexError, "label index out of range");
        return -1;
    }
    *out = (int)label;
    return 0;
}

static PyObject *Core_accept(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer value;
    int label;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "accept(label, value)");
        return NULL;
    }
    if (label_arg(self, args[0], &label) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &value, PyBUF_SIMPLE) < 0) return NULL;
    int r = accept(self, label, value.buf, value.len, SOURCE_NONE);
    PyBuffer_Release(&value);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Core_propose(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer value;
    int label;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "propose(label, start, end, value)");
        return NULL;
    }
    if (label_arg(self, args[0], &label) < 0) return NULL;
    long long start = PyLong_AsLongLong(args[1]);
    long long end = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (PyObject_GetBuffer(args[3], &value, PyBUF_SIMPLE) < 0) return NULL;
    int r = propose(self, label, start, end, value.buf, value.len, SOURCE_NONE);
    PyBuffer_Release(&value);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Core_commit(Core *self, PyObject *Py_UNUSED(ignored)) {
    /* The member ended: its pending candidates are findings (first-use order). */
    int failed = 0;
    for (int i = 0; i < self->norder; i++) {
        Slot *slot = &self->slots[self->order[i]];
        if (slot->active && !failed && accept(self, slot->label, slot->value, slot->len, slot->source) < 0)
            failed = 1;
        slot->active = 0;
    }
    self->norder = 0;
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Core_drop_pending(Core *self, PyObject *Py_UNUSED(ignored)) {
    for (int i = 0; i < self->norder; i++) self->slots[self->order[i]].active = 0;
    self->norder = 0;
    Py_RETURN_NONE;
}

static PyObject *Core_stats(Core *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(self->nlabels);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->nlabels; i++) {
        PyObject *item = Py_BuildValue("(Ln)", self->counts[i], self->values[i].n);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *Core_digests(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    /* HMAC-SHA-256(secret, prefix + value)[:16] of every distinct value of one label
     * (aside true: of the values set aside as chance-level instead). */
    Py_buffer prefix;
    int label, aside = 0;
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "digests(label, prefix[, aside])");
        return NULL;
    }
    if (label_arg(self, args[0], &label) < 0) return NULL;
    if (nargs == 3 && (aside = PyObject_IsTrue(args[2])) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &prefix, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyFrozenSet_New(NULL);
    ValueSet *s = &self->values[label];
    for (Py_ssize_t i = 0; out != NULL && i < s->cap; i++) {
        Entry *e = s->slots[i];
        if (e == NULL || (e->source == SOURCE_ASIDE) != aside) continue;
        uint8_t inner[SHA256_DIGEST_LENGTH], outer[SHA256_DIGEST_LENGTH];
        SHA256_CTX ctx = self->inner;
        SHA256_Update(&ctx, prefix.buf, (size_t)prefix.len);
        SHA256_Update(&ctx, e->data, (size_t)e->len);
        SHA256_Final(inner, &ctx);
        ctx = self->outer;
        SHA256_Update(&ctx, inner, sizeof(inner));
        SHA256_Final(outer, &ctx);
        PyObject *digest = PyBytes_FromStringAndSize((const char *)outer, DIGEST_BYTES);
        if (digest == NULL || PySet_Add(out, digest) < 0) Py_CLEAR(out);
        Py_XDECREF(digest);
    }
    PyBuffer_Release(&prefix);
    return out;
}

static PyObject *Core_values(Core *self, PyObject *arg) {
    /* The distinct values of one label (tests compare them with the reference matcher's). */
    int label;
    if (label_arg(self, arg, &label) < 0) return NULL;
    PyObject *out = PyFrozenSet_New(NULL);
    ValueSet *s = &self->values[label];
    for (Py_ssize_t i = 0; out != NULL && i < s->cap; i++) {
        Entry *e = s->slots[i];
        if (e == NULL || e->source == SOURCE_ASIDE) continue;
        PyObject *v = PyBytes_FromStringAndSize((const char *)e->data, e->len);
        if (v == NULL || PySet_Add(out, v) < 0) Py_CLEAR(out);
        Py_XDECREF(v);
    }
    return out;
}

static PyObject *Core_table(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    /* table(sep, start) -> id: the current member is a table from the newline at
     * absolute offset start on, its cells split by the byte sep ('\n': one value
     * per line); its hits count towards its columns' profiles. table(-1, 0): not
     * a table (-1). */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "table(sep, start)");
        return NULL;
    }
    long sep = PyLong_AsLong(args[0]);
    long long start = PyLong_AsLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (sep < -1 || sep > 255 || sep == '"' || sep == '\r' || start < 0) {
        PyErr_SetString(PyExc_ValueError, "table: a delimiter byte (not a quote) and an offset");
        return NULL;
    }
    if (sep < 0) {
        self->table = -1;
        return PyLong_FromLong(-1);
    }
    self->table = self->ntables++;
    self->table_sep = (uint8_t)sep;
    self->table_from = start;
    for (int i = 0; i < MAX_COLUMNS; i++) self->col_source[i] = -1;
    return PyLong_FromLong(self->table);
}

static PyObject *Core_profiles(Core *self, PyObject *Py_UNUSED(ignored)) {
    /* profiles() -> [(source, table, column, ((candidates, shaped, valid) per CH))]. */
    PyObject *out = PyList_New(self->nsources);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->nsources; i++) {
        const Source *src = &self->sources[i];
        PyObject *counts = PyTuple_New(CH_COUNT);
        if (counts == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        for (int ch = 0; ch < CH_COUNT; ch++) {
            PyObject *c = Py_BuildValue("(LLL)", src->candidates[ch], src->shaped[ch], src->valid[ch]);
            if (c == NULL) {
                Py_DECREF(counts);
                Py_DECREF(out);
                return NULL;
            }
            PyTuple_SET_ITEM(counts, ch, c);
        }
        PyObject *item = Py_BuildValue("(niiN)", i, src->table, src->column, counts);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *Core_set_aside(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    /* set_aside(source, ch): a column's findings of one validator are chance-level:
     * they leave the counts, and the values seen only there the distinct values.
     * Once per source and validator; later calls change nothing. */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_aside(source, ch)");
        return NULL;
    }
    Py_ssize_t source = PyLong_AsSsize_t(args[0]);
    long ch = PyLong_AsLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (source < 0 || source >= self->nsources || ch < 0 || ch >= CH_COUNT) {
        PyErr_SetString(PyExc_IndexError, "set_aside: no such source or validator");
        return NULL;
    }
    Source *src = &self->sources[source];
    if (src->aside & (1u << ch)) Py_RETURN_NONE;
    src->aside |= 1u << ch;
    int label = self->label_ix[ch];
    self->counts[label] -= src->valid[ch];
    ValueSet *s = &self->values[label];
    for (Py_ssize_t i = 0; i < s->cap; i++) {
        Entry *e = s->slots[i];
        if (e != NULL && e->source == (int32_t)source) {
            e->source = SOURCE_ASIDE;
            s->n -= 1;
        }
    }
    Py_RETURN_NONE;
}

static int cmp_hits(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Make matcher._window / matcher._base what the Python handlers read. */
static int publish(PyObject *matcher, PyObject *window, long long base) {
    PyObject *b = PyLong_FromLongLong(base);
    if (b == NULL) return -1;
    int r = PyObject_SetAttrString(matcher, "_window", window) < 0 ||
                    PyObject_SetAttrString(matcher, "_base", b) < 0
                ? -1
                : 0;
    Py_DECREF(b);
    return r;
}

static int call_python(PyObject *handlers, Py_ssize_t pid, PyObject *starts, long long hit, Py_ssize_t e,
                       long long t) {
    PyObject *handler = PyList_GET_ITEM(handlers, pid);
    long long f = 0;
    if (PyDict_GET_SIZE(starts)) {
        PyObject *key = PyLong_FromLongLong(hit);
        if (key == NULL) return -1;
        PyObject *start = PyDict_GetItemWithError(starts, key); /* borrowed */
        if (start != NULL) {
            f = PyLong_AsLongLong(start);
            if ((f == -1 && PyErr_Occurred()) || PyDict_DelItem(starts, key) < 0) {
                Py_DECREF(key);
                return -1;
            }
        }
        Py_DECREF(key);
        if (start == NULL && PyErr_Occurred()) return -1;
    }
    PyObject *argv[4] = {PyLong_FromSsize_t(e), PyLong_FromLongLong(t), PyLong_FromSsize_t(pid),
                         PyLong_FromLongLong(f)};
    PyObject *result = NULL;
    if (argv[0] && argv[1] && argv[2] && argv[3]) result = PyObject_Vectorcall(handler, argv, 4, NULL);
    for (int i = 0; i < 4; i++) Py_XDECREF(argv[i]);
    if (result == NULL) return -1;
    Py_DECREF(result);
    return 0;
}

static PyObject *Core_process(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    /* process(hits, chunk, offset, tail, starts, handlers, matcher): matcher._process. */
    if (nargs != 7 || !PyList_Check(args[0]) || !PyBytes_Check(args[1]) || !PyBytes_Check(args[3]) ||
        !PyDict_Check(args[4]) || !PyList_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "process(hits: list, chunk: bytes, offset: int, tail: bytes, "
                                         "starts: dict, handlers: list, matcher)");
        return NULL;
    }
    PyObject *hits_list = args[0], *chunk = args[1], *tail = args[3], *starts = args[4];
    PyObject *handlers = args[5], *matcher = args[6];
    long long offset = PyLong_AsLongLong(args[2]);
    if (offset == -1 && PyErr_Occurred()) return NULL;
    if (PyList_GET_SIZE(handlers) != self->nspecs) {
        PyErr_SetString(PyExc_ValueError, "one handler per expression");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(hits_list);
    if (n > self->hits_cap) {
        long long *buf = PyMem_RawRealloc(self->hits, (size_t)n * sizeof(long long));
        if (buf == NULL) return PyErr_NoMemory();
        self->hits = buf;
        self->hits_cap = n;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long h = PyLong_AsLongLong(PyList_GET_ITEM(hits_list, i));
        if (h == -1 && PyErr_Occurred()) return NULL;
        self->hits[i] = h;
    }
    qsort(self->hits, (size_t)n, sizeof(long long), cmp_hits);

    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(chunk);
    Py_ssize_t data_len = PyBytes_GET_SIZE(chunk), tail_len = PyBytes_GET_SIZE(tail);
    Py_ssize_t head = data_len < self->tail_bytes ? data_len : (Py_ssize_t)self->tail_bytes;
    /* Early hits: the tail + the chunk's first tail_bytes (see matcher._process). */
    if (tail_len + head > self->early_cap) {
        uint8_t *buf = PyMem_RawRealloc(self->early, (size_t)(tail_len + head));
        if (buf == NULL) return PyErr_NoMemory();
        self->early = buf;
        self->early_cap = tail_len + head;
    }
    memcpy(self->early, PyBytes_AS_STRING(tail), (size_t)tail_len);
    memcpy(self->early + tail_len, data, (size_t)head);
    Win w = {self->early, tail_len + head, offset - tail_len};
    long long late = offset + self->tail_bytes;
    int early = 1, published = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long hit = self->hits[i];
        long long end = hit >> ID_BITS;
        Py_ssize_t pid = (Py_ssize_t)(hit & ID_MASK);
        if (early && end >= late) {
            early = 0;
            published = 0;
            w = (Win){data, data_len, offset};
        }
        Py_ssize_t e = (Py_ssize_t)(end - w.base);
        if (pid >= self->nspecs || e < 1 || e > w.n) {
            PyErr_Format(PyExc_RuntimeError, "hit %lld (expression %zd) lies outside its window", end, pid);
            return NULL;
        }
        int r;
        switch (self->ops[pid]) {
        case OP_DIGITS:
            r = h_digits(self, &w, e, end);
            break;
        case OP_USCC:
            r = h_uscc(self, &w, e, end, self->spec_label[pid]);
            break;
        case OP_GROUPED:
            r = h_grouped(self, &w, e, end, self->spec_arg[pid]);
            break;
        case OP_LETTERS:
            r = h_letters(self, &w, e);
            break;
        case OP_HKID_BRACKETS:
            r = h_hkid_brackets(self, &w, e, self->spec_label[pid]);
            break;
        case OP_EMAIL:
            r = h_email(self, &w, e, self->spec_label[pid]);
            break;
        default:
            if (!published) {
                PyObject *window = early ? PyBytes_FromStringAndSize((const char *)w.p, w.n) : Py_NewRef(chunk);
                if (window == NULL) return NULL;
                r = publish(matcher, window, w.base);
                Py_DECREF(window);
                if (r < 0) return NULL;
                published = 1;
            }
            r = call_python(handlers, pid, starts, hit, e, end);
        }
        if (r < 0) return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Core_methods[] = {
    {"table", (PyCFunction)(void (*)(void))Core_table, METH_FASTCALL,
     "table(sep, start) -> id: the member is a table (sep -1: it is not)."},
    {"profiles", (PyCFunction)Core_profiles, METH_NOARGS,
     "profiles() -> [(source, table, column, ((candidates, shaped, valid), ...))]: the column profiles."},
    {"set_aside", (PyCFunction)(void (*)(void))Core_set_aside, METH_FASTCALL,
     "set_aside(source, ch): one column's findings of one validator are chance-level."},
    {"process", (PyCFunction)(void (*)(void))Core_process, METH_FASTCALL,
     "Handle one chunk's hits: natively for the identifier kinds, else by the Python handler."},
    {"accept", (PyCFunction)(void (*)(void))Core_accept, METH_FASTCALL, "Count one finding of a label."},
    {"propose", (PyCFunction)(void (*)(void))Core_propose, METH_FASTCALL,
     "A validated candidate: resolve overlaps; whether it is now pending."},
    {"commit", (PyCFunction)Core_commit, METH_NOARGS, "The member ended: count its pending candidates."},
    {"drop_pending", (PyCFunction)Core_drop_pending, METH_NOARGS, "Forget pending candidates."},
    {"stats", (PyCFunction)Core_stats, METH_NOARGS, "(count, distinct) per label."},
    {"digests", (PyCFunction)(void (*)(void))Core_digests, METH_FASTCALL,
     "Truncated HMAC-SHA-256 of prefix + value for every distinct value of a label."},
    {"values", (PyCFunction)Core_values, METH_O, "The distinct values of a label."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Core_get_capped(Core *self, void *Py_UNUSED(closure)) { return PyBool_FromLong(self->capped); }

static PyGetSetDef Core_getset[] = {
    {"capped", (getter)Core_get_capped, NULL, "Whether a distinct-value bound was reached.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.classify._native.Core",
    .tp_doc = "Counting state and native identifier handlers of one TextMatcher.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_getset = Core_getset,
};

/* ---- module-level validators, for differential tests ---------------------- */

static PyObject *mod_validate(PyObject *Py_UNUSED(module), PyObject *args) {
    const char *name, *raw;
    Py_ssize_t n;
    Today today = {9999, 12, 31};
    if (!PyArg_ParseTuple(args, "sy#|(iii)", &name, &raw, &n, &today.year, &today.month, &today.day)) return NULL;
    const uint8_t *v = (const uint8_t *)raw;
    int ok;
    if (strcmp(name, "cn_resident_id") == 0)
        ok = is_resident_id(v, n, &today);
    else if (strcmp(name, "uscc") == 0)
        ok = is_uscc(v, n);
    else if (strcmp(name, "bank_card") == 0)
        ok = is_bank_card(v, n);
    else if (strcmp(name, "hkid") == 0)
        ok = is_hkid(v, n);
    else {
        PyErr_Format(PyExc_KeyError, "unknown validator %s", name);
        return NULL;
    }
    return PyBool_FromLong(ok);
}

/* ---- runs of bases: the token rule (matcher.genetic_runs_py is the reference) -- */

/* SPEC 3.1 sensitive.genetic counts a run of >= 60 bases outside the genomic
 * formats; issue 13: only as a token of its own, so base64 and PEM blocks are
 * no genetic data. matcher.py's "runs of bases: the token rule" states the
 * rule; this is the same function step by step, with the same state and hits
 * (tests/classify/test_native.py). Its tables are built in Python from
 * detectors.GENETIC_* and handed over by genetic_setup() at import, which
 * matcher.py checks with genetic_tables(). */

enum { G_BASE, G_TOKEN, G_SPACE, G_BREAK, G_OTHER, G_ESCAPE, G_CLASSES };
enum { ST_NONE, ST_GLUE, ST_FRESH, ST_PENDING };
enum { PD_NONE, PD_AFTER, PD_NEXT };
enum { DEC_NEED, DEC_CLEAN, DEC_GLUE, DEC_NEXT };
#define F_BACKSLASH 1
#define ARMOR_DASHES 5
#define GENETIC_KINDS 4

static uint8_t g_class[256];   /* G_* of every byte */
static uint8_t g_escaped[256]; /* G_* of a byte after a backslash (G_OTHER: no escape) */
static uint8_t g_base[256];    /* 1: a base; 2: a base that is an escape's letter ("\n") */
static Py_ssize_t g_min = 0, g_space_max = 0;
static long long g_kind[GENETIC_KINDS]; /* count, pending, commit, drop: offsets from pid */
enum { K_COUNT, K_PENDING, K_COMMIT, K_DROP };

/* The tail before a chunk and the chunk: the bytes a chunk's decisions read. */
typedef struct {
    const uint8_t *data, *tail;
    long long offset, low, end;
} GText;

static inline uint8_t g_at(const GText *v, long long a) {
    return a >= v->offset ? v->data[a - v->offset] : v->tail[a - v->low];
}

typedef struct {
    int cls, w;
    uint8_t c;
    long long last;
} GUnit;

/* The unit at a (an escape is one unit of two bytes); 0: not here yet. */
static int g_unit(const GText *v, long long a, GUnit *u) {
    if (a >= v->end) return 0;
    uint8_t c = g_at(v, a);
    int cls = g_class[c];
    if (cls != G_ESCAPE) {
        *u = (GUnit){cls, 1, c, a};
        return 1;
    }
    if (a + 1 >= v->end) return 0;
    uint8_t d = g_at(v, a + 1);
    int escaped = g_escaped[d];
    if (escaped == G_OTHER)
        *u = (GUnit){G_OTHER, 1, c, a + 1};
    else
        *u = (GUnit){escaped, 2, d, a + 1};
    return 1;
}

/* The unit that ends at b (b >= low). */
static void g_unit_before(const GText *v, long long b, GUnit *u) {
    uint8_t c = g_at(v, b);
    if (b > v->low && g_at(v, b - 1) == '\\' && g_escaped[c] != G_OTHER) {
        *u = (GUnit){g_escaped[c], 2, c, b};
        return;
    }
    int cls = g_class[c];
    *u = (GUnit){cls == G_ESCAPE ? G_OTHER : cls, 1, c, b};
}

/* A neighbouring line's token, read up to g_min units: base64's? */
typedef struct {
    Py_ssize_t units;
    int other, dashes, run, letter, data, padded;
} GToken;

static void g_token_add(GToken *t, const GUnit *u) {
    t->units++;
    t->other |= u->cls == G_TOKEN;
    t->run = u->c == '-' ? t->run + 1 : 0;
    t->dashes |= t->run >= ARMOR_DASHES;
    t->letter |= IS(u->c, C_LETTER) != 0;
    t->padded = u->c == '=' && t->data;
    t->data |= u->c != '=';
}

static int g_shows_base64(const GToken *t, int padding) {
    if (!t->other) return 0;
    return t->units >= g_min || (t->dashes && t->letter) || (padding && t->padded);
}

/* _genetic_top: ST_GLUE or ST_FRESH for the run whose first base is at s. */
static int g_top(const GText *v, long long s) {
    long long b = s - 1;
    GUnit u;
    if (b < v->low) return ST_FRESH;
    g_unit_before(v, b, &u);
    if (u.cls <= G_TOKEN) return u.c == '=' ? ST_FRESH : ST_GLUE;
    Py_ssize_t blanks = 0;
    while (u.cls == G_SPACE) {
        blanks++;
        b -= u.w;
        if (blanks > g_space_max || b < v->low) return ST_FRESH;
        g_unit_before(v, b, &u);
    }
    if (u.cls != G_BREAK) return ST_FRESH;
    b -= u.w; /* the line above: its last token */
    blanks = 0;
    for (;;) {
        if (b < v->low) return ST_FRESH;
        g_unit_before(v, b, &u);
        if (u.cls != G_SPACE) break;
        if (++blanks > g_space_max) return ST_FRESH;
        b -= u.w;
    }
    GToken t = {0};
    while (u.cls <= G_TOKEN) {
        g_token_add(&t, &u);
        if (t.units == g_min) break;
        b -= u.w;
        if (b < v->low) break;
        g_unit_before(v, b, &u);
    }
    return g_shows_base64(&t, 0) ? ST_GLUE : ST_FRESH;
}

/* _genetic_after: the decision for the run that ends before p, the last byte
 * read for it and, for DEC_NEXT, where the next line's run starts. */
static int g_after(const GText *v, long long p, long long *last, long long *start) {
    GUnit u;
    if (!g_unit(v, p, &u)) return DEC_NEED;
    *last = u.last;
    if (u.cls <= G_TOKEN) return DEC_GLUE;
    long long a = p;
    Py_ssize_t blanks = 0;
    while (u.cls == G_SPACE) {
        if (++blanks > g_space_max) return DEC_CLEAN;
        a += u.w;
        if (!g_unit(v, a, &u)) return DEC_NEED;
        *last = u.last;
    }
    if (u.cls != G_BREAK) return DEC_CLEAN;
    a += u.w; /* the line below: its first token */
    blanks = 0;
    for (;;) {
        if (!g_unit(v, a, &u)) return DEC_NEED;
        *last = u.last;
        if (u.cls != G_SPACE) break;
        if (++blanks > g_space_max) return DEC_CLEAN;
        a += u.w;
    }
    *start = a;
    GToken t = {0};
    while (u.cls <= G_TOKEN) {
        g_token_add(&t, &u);
        if (t.units == g_min) return t.other ? DEC_GLUE : DEC_NEXT;
        a += u.w;
        if (!g_unit(v, a, &u)) return DEC_NEED;
        *last = u.last;
    }
    return g_shows_base64(&t, 1) ? DEC_GLUE : DEC_CLEAN;
}

/* _GeneticScan */
typedef struct {
    GText text;
    int open, pending, status;
    long long pos, pid;
    PyObject *hits;
} GScan;

static int g_hit(GScan *g, int kind, long long last) {
    PyObject *h = PyLong_FromLongLong(((last + 1) << ID_BITS) | (g->pid + g_kind[kind]));
    if (h == NULL) return -1;
    int r = PyList_Append(g->hits, h);
    Py_DECREF(h);
    return r;
}

static int g_resolve(GScan *g) {
    long long last = 0, start = 0;
    int decision = g_after(&g->text, g->pos, &last, &start);
    if (decision == DEC_NEED) return 0;
    g->pending = PD_NONE;
    if (decision == DEC_NEXT) {
        g->pending = PD_NEXT;
        g->pos = start;
    } else if (g->status == ST_PENDING) {
        return g_hit(g, decision == DEC_CLEAN ? K_COMMIT : K_DROP, last);
    }
    return 0;
}

/* The status of the run that starts at s (carried: from an earlier chunk); -1 on error. */
static int g_begin(GScan *g, long long s, int carried) {
    if (carried && g->open != ST_NONE) return g->open;
    if (g->pending == PD_NEXT) {
        g->pending = PD_NONE;
        if (g->pos == s) return g->status;
        if (g->status == ST_PENDING && g_hit(g, K_COMMIT, s - 1) < 0) return -1;
    }
    return g_top(&g->text, s);
}

/* A run of bases from s up to the non-base at j (absolute offsets). */
static int g_run(GScan *g, long long s, long long j, int carried) {
    int status = g_begin(g, s, carried);
    if (status < 0) return -1;
    g->open = ST_NONE;
    long long last = 0, start = 0;
    int decision = g_after(&g->text, j, &last, &start);
    if (decision == DEC_NEED || decision == DEC_NEXT) {
        if (status != ST_GLUE) {
            if (g_hit(g, K_PENDING, j) < 0) return -1;
            status = ST_PENDING;
        }
        g->pending = decision == DEC_NEED ? PD_AFTER : PD_NEXT;
        g->status = status;
        g->pos = decision == DEC_NEED ? j : start;
        return 0;
    }
    if (decision == DEC_GLUE) return status == ST_PENDING ? g_hit(g, K_DROP, last) : 0;
    if (status == ST_FRESH) return g_hit(g, K_COUNT, j);
    if (status == ST_PENDING) return g_hit(g, K_PENDING, j) < 0 ? -1 : g_hit(g, K_COMMIT, last);
    return 0;
}

static PyObject *g_state(const GScan *g, long long run, int backslash) {
    int open = run >= g_min ? g->open : ST_NONE;
    long long flags = (backslash ? F_BACKSLASH : 0) | open << 1 | g->pending << 3 |
                      (g->pending ? g->status << 5 : 0);
    return Py_BuildValue("(LLL)", run, flags, g->pending ? g->pos : 0LL);
}

static PyObject *mod_genetic_runs(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    /* genetic_runs(data, offset, tail, state, pid, hits) -> state: matcher.genetic_runs_py.
     * Finds the runs by probing every 60th byte: a run of 60 holds each probe
     * position it spans, so prose costs ~n/40 reads. */
    long long run, flags, pos;
    if (nargs != 6 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2]) || !PyTuple_Check(args[3]) ||
        !PyList_Check(args[5]) || !PyArg_ParseTuple(args[3], "LLL;state: (run, flags, position)", &run, &flags, &pos)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError,
                            "genetic_runs(data: bytes, offset: int, tail: bytes, state: tuple, pid: int, hits: list)");
        return NULL;
    }
    if (g_min < 1) {
        PyErr_SetString(PyExc_RuntimeError, "genetic_setup() was not called");
        return NULL;
    }
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    long long offset = PyLong_AsLongLong(args[1]);
    long long pid = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t tail_n = PyBytes_GET_SIZE(args[2]);
    /* A decision left open reads on from pos: it must lie in the tail (every read stays in bounds). */
    long long pending = flags >> 3 & 3;
    if (run < 0 || pos < 0 || flags < 0 || flags >= 128 || pending > PD_NEXT ||
        (pending == PD_AFTER && (pos < offset - tail_n || pos > offset)) || pid < 0 ||
        pid + GENETIC_KINDS - 1 > ID_MASK || offset < tail_n) {
        PyErr_SetString(PyExc_ValueError, "bad state, offset, tail or pid");
        return NULL;
    }
    if (n == 0) return Py_NewRef(args[3]);
    GScan g = {{data, (const uint8_t *)PyBytes_AS_STRING(args[2]), offset, offset - tail_n, offset + n},
               (int)(flags >> 1 & 3),
               (int)(flags >> 3 & 3),
               (int)(flags >> 5 & 3),
               pos,
               pid,
               args[5]};
    if (g.pending == PD_AFTER && g_resolve(&g) < 0) return NULL;
    int prev_bs = (flags & F_BACKSLASH) != 0, backslash = data[n - 1] == '\\';
/* The escape letters ("\n", "\t") are no bases. The probes test bases alone:
 * an escape letter can only start a run of them, since the backslash before
 * it is no base, so only a run's first byte is checked for one. */
#define IS_BASE(i) (g_base[data[i]] != 0)
#define ESCAPE_AT(i) (g_base[data[i]] == 2 && ((i) > 0 ? data[(i) - 1] == '\\' : prev_bs))
#define RUN(s, j, carried)                                   \
    do {                                                     \
        if (g_run(&g, (s), (j), (carried)) < 0) return NULL; \
    } while (0)
    Py_ssize_t first = 0;
    if (!ESCAPE_AT(0))
        while (first < n && IS_BASE(first)) first++;
    if (first == n) {
        if (run + n >= g_min) {
            int status = g_begin(&g, offset - run, run > 0);
            if (status < 0) return NULL;
            g.open = status;
        }
        return g_state(&g, run + n, backslash);
    }
    if (run + first >= g_min) RUN(offset - run, offset + first, 1);
    g.open = ST_NONE;
    /* data[p - 1] is a non-base; [p, known] are known bases (empty when known < p). */
    Py_ssize_t p = first + 1, known = first;
    while (p + g_min <= n) {
        Py_ssize_t top = p + g_min - 1, k = top;
        while (k > known && IS_BASE(k)) k--;
        if (k > known) { /* a non-base at k: no run of 60 starts at or before it */
            known = top;
            p = k + 1;
            continue;
        }
        if (ESCAPE_AT(p)) { /* [p + 1, top] are bases, p is none */
            known = top;
            p++;
            continue;
        }
        Py_ssize_t j = top + 1; /* [p, top] are bases: find the run's end */
        while (j < n && IS_BASE(j)) j++;
        if (j == n) {
            int status = g_begin(&g, offset + p, 0);
            if (status < 0) return NULL;
            g.open = status;
            return g_state(&g, n - p, backslash);
        }
        RUN(offset + p, offset + j, 0);
        p = j + 1;
        known = j;
    }
#undef RUN
    Py_ssize_t k = n - 1;
    while (k > first && IS_BASE(k)) k--; /* data[first] is none, or an escape letter */
    Py_ssize_t last_run = n - 1 - k;
    if (last_run > 0 && ESCAPE_AT(k + 1)) last_run--;
#undef ESCAPE_AT
#undef IS_BASE
    return g_state(&g, last_run, backslash);
}

static PyObject *mod_genetic_setup(PyObject *Py_UNUSED(module), PyObject *args) {
    /* genetic_setup(classes, escaped, min_run, space_max, kinds): the rule's tables, from Python. */
    const char *classes, *escaped;
    Py_ssize_t nc, ne, min_run, space_max;
    long long kinds[GENETIC_KINDS];
    if (!PyArg_ParseTuple(args, "y#y#nn(LLLL)", &classes, &nc, &escaped, &ne, &min_run, &space_max, &kinds[0],
                          &kinds[1], &kinds[2], &kinds[3]))
        return NULL;
    if (nc != 256 || ne != 256 || min_run < 1 || min_run > (1 << 20) || space_max < 0 || space_max > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "genetic_setup: bad tables");
        return NULL;
    }
    for (int c = 0; c < 256; c++) {
        uint8_t cls = (uint8_t)classes[c], esc = (uint8_t)escaped[c];
        /* The probe loop and the escapes rely on: "\\" is the only escape
         * byte, a line break is one byte, an escape never stands for a base. */
        if (cls >= G_CLASSES || (cls == G_ESCAPE) != (c == '\\') || (cls == G_BREAK) != (c == '\n') ||
            (esc != G_BREAK && esc != G_SPACE && esc != G_TOKEN && esc != G_OTHER)) {
            PyErr_SetString(PyExc_ValueError, "genetic_setup: bad byte class");
            return NULL;
        }
    }
    for (int i = 0; i < GENETIC_KINDS; i++)
        if (kinds[i] < 0 || kinds[i] >= GENETIC_KINDS) {
            PyErr_SetString(PyExc_ValueError, "genetic_setup: bad hit kind");
            return NULL;
        }
    for (int c = 0; c < 256; c++) {
        g_class[c] = (uint8_t)classes[c];
        g_escaped[c] = (uint8_t)escaped[c];
        g_base[c] = g_class[c] != G_BASE ? 0 : g_escaped[c] != G_OTHER ? 2 : 1;
    }
    for (int i = 0; i < GENETIC_KINDS; i++) g_kind[i] = kinds[i];
    g_min = min_run;
    g_space_max = space_max;
    Py_RETURN_NONE;
}

static PyObject *mod_genetic_tables(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored)) {
    /* What genetic_runs uses: (classes, escaped, min_run, space_max, kinds). */
    return Py_BuildValue("(y#y#nn(LLLL))", (const char *)g_class, (Py_ssize_t)256, (const char *)g_escaped,
                         (Py_ssize_t)256, g_min, g_space_max, g_kind[0], g_kind[1], g_kind[2], g_kind[3]);
}

/* ---- the whole fold (charset.fold): a table of code points ------------------------ */

/* The table charset.py derives from unicodedata (charset.folding_table), handed
 * over once by fold_setup: for each code point that changes, sorted, the UTF-8
 * it becomes ("" to drop it). fold() is one pass: ASCII skipped eight bytes at
 * a time; a character whose lead byte starts no entry (most CJK ideographs)
 * skipped once its continuation bytes are checked; every other character
 * decoded strictly as Python's UTF-8 decoder does (bytes that are not UTF-8
 * pass through unchanged, as surrogateescape round-trips them) and looked up
 * by its code point in an index (2 bytes per code point, calloc'ed: only the
 * pages holding entries are ever touched). */
static uint16_t *fold_index = NULL; /* code point -> entry + 1 (0: unchanged) */
static uint32_t *fold_offs = NULL;  /* entries + 1 offsets into fold_blob */
static char *fold_blob = NULL;
static uint8_t fold_lead[256];      /* 1: some entry's UTF-8 starts with this byte */
/* fold_lead by nibbles for the vector skip: every lead is C2-F4, so byte b is one when
 * fold_lead_low[b & 15] has bit (b >> 4) - 0xC. */
static uint8_t fold_lead_low[16];
static Py_ssize_t fold_growth = 0;  /* the most bytes an entry adds to its character */

/* The code point of the UTF-8 character at p and its length, or 0 when the bytes
 * there are not one (RFC 3629: no overlong forms, no surrogates, none past U+10FFFF). */
static int utf8_char(const uint8_t *p, const uint8_t *end, uint32_t *cp) {
    uint8_t b0 = p[0];
    Py_ssize_t left = end - p;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (left < 2 || (p[1] & 0xC0) != 0x80) return 0;
        *cp = ((uint32_t)(b0 & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (left < 3 || (p[2] & 0xC0) != 0x80) return 0;
        uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
        if (p[1] < lo || p[1] > hi) return 0;
        *cp = ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (left < 4 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
        if (p[1] < lo || p[1] > hi) return 0;
        *cp = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
              ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        return 4;
    }
    return 0;
}

/* The first byte at or after p that starts an entry's UTF-8 (a lead byte in
 * fold_lead), or end: ASCII eight bytes at a time, the rest byte by byte. Only
 * those bytes need decoding: a lead byte is never a continuation byte, so it
 * starts a character (or an invalid byte) wherever it is, and every character
 * the table changes starts with one. */
static const uint8_t *fold_skip_scalar(const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t high = w & 0x8080808080808080ULL;
            if (high) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                p += __builtin_ctzll(high) >> 3; /* to the first byte that is not ASCII */
#endif
                break;
            }
            p += 8;
        }
        if (p == end) break;
        if (fold_lead[*p]) return p;
        p++;
    }
    return end;
}

#if defined(HAVE_AVX2)
/* The same 32 bytes at a time: a block with a byte from 0x80 is looked up by
 * nibbles (CJK text, whose leads E4-E9 start no entry, is passed over whole). */
__attribute__((target("avx2"))) static const uint8_t *fold_skip_avx2(const uint8_t *p, const uint8_t *end) {
    const __m256i low = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)fold_lead_low));
    const __m256i high = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 1, 2, 4, 8);
    const __m256i nibble = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
    while (end - p >= 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
        if (_mm256_movemask_epi8(v)) {
            __m256i lo = _mm256_shuffle_epi8(low, _mm256_and_si256(v, nibble));
            __m256i hi = _mm256_shuffle_epi8(high, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
            uint32_t leads = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_and_si256(lo, hi), zero));
            if (leads) return p + __builtin_ctz(leads);
        }
        p += 32;
    }
    return fold_skip_scalar(p, end);
}
#endif

/* The skip in use: AVX2 where the processor has it (chosen at import). */
static const uint8_t *(*fold_skip)(const uint8_t *, const uint8_t *) = fold_skip_scalar;

/* The next character at or after p that the table changes (its length in *n, its
 * entry in *at), or end. */
static const uint8_t *next_folded(const uint8_t *p, const uint8_t *end, int *n, uint32_t *at) {
    uint32_t cp;
    while ((p = fold_skip(p, end)) < end) {
        int len = utf8_char(p, end, &cp);
        if (len == 0) {
            p++; /* not UTF-8: this byte passes through, the next may start a character */
            continue;
        }
        uint16_t entry = fold_index[cp];
        if (entry) {
            *n = len;
            *at = (uint32_t)entry - 1;
            return p;
        }
        p += len;
    }
    return end;
}

static PyObject *mod_fold(PyObject *Py_UNUSED(module), PyObject *arg) {
    /* fold(data) -> bytes: the same object when nothing changes. */
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "fold(data: bytes)");
        return NULL;
    }
    if (fold_index == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fold: fold_setup was not called");
        return NULL;
    }
    const uint8_t *start = (const uint8_t *)PyBytes_AS_STRING(arg);
    const uint8_t *end = start + PyBytes_GET_SIZE(arg);
    int n;
    uint32_t at;
    const uint8_t *p = next_folded(start, end, &n, &at);
    if (p == end) return Py_NewRef(arg);
    /* Every changed character is two bytes or more: the output fits in this much
     * (a replacement may be longer than its character, U+2177 -> "viii"). */
    Py_ssize_t size = end - start, cap = size + (size / 2) * fold_growth;
    PyObject *out = PyBytes_FromStringAndSize(NULL, cap);
    if (out == NULL) return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    memcpy(o, start, (size_t)(p - start));
    o += p - start;
    while (p < end) {
        uint32_t len = fold_offs[at + 1] - fold_offs[at];
        memcpy(o, fold_blob + fold_offs[at], len);
        o += len;
        p += n;
        const uint8_t *next = next_folded(p, end, &n, &at);
        memcpy(o, p, (size_t)(next - p));
        o += next - p;
        p = next;
    }
    if (_PyBytes_Resize(&out, (Py_ssize_t)(o - (uint8_t *)PyBytes_AS_STRING(out))) < 0) return NULL;
    return out;
}

static PyObject *mod_fold_setup(PyObject *Py_UNUSED(module), PyObject *args) {
    /* fold_setup(code_points, offsets, blob): the table, as native-endian uint32 arrays
     * (code points sorted; offsets one more than them, into blob). */
    Py_buffer cps, offs, blob;
    if (!PyArg_ParseTuple(args, "y*y*y*", &cps, &offs, &blob)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = cps.len / 4;
    uint16_t *new_index = NULL;
    uint32_t *new_offs = NULL;
    char *new_blob = NULL;
    uint8_t new_lead[256] = {0};
    Py_ssize_t growth = 0;
    if (cps.len % 4 || offs.len != (n + 1) * 4 || n >= 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "fold_setup: offsets must be one more than code points");
        goto done;
    }
    new_index = PyMem_RawCalloc(0x110000, sizeof(uint16_t));
    new_offs = PyMem_RawMalloc((size_t)(n + 1) * 4);
    new_blob = PyMem_RawMalloc((size_t)(blob.len ? blob.len : 1));
    if (new_index == NULL || new_offs == NULL || new_blob == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(new_offs, offs.buf, (size_t)(n + 1) * 4);
    memcpy(new_blob, blob.buf, (size_t)blob.len);
    const uint32_t *points = cps.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t cp;
        memcpy(&cp, points + i, 4);
        if (cp < 0x80 || cp >= 0x110000 || (cp >= 0xD800 && cp < 0xE000) || new_index[cp] ||
            new_offs[i] > new_offs[i + 1] || new_offs[i + 1] > (uint32_t)blob.len) {
            PyErr_SetString(PyExc_ValueError, "fold_setup: a code point repeated or out of range");
            goto done;
        }
        new_index[cp] = (uint16_t)(i + 1);
        int width = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        new_lead[cp < 0x800 ? 0xC0 | (cp >> 6) : cp < 0x10000 ? 0xE0 | (cp >> 12) : 0xF0 | (cp >> 18)] = 1;
        Py_ssize_t grows = (Py_ssize_t)(new_offs[i + 1] - new_offs[i]) - width;
        if (grows > growth) growth = grows;
    }
    PyMem_RawFree(fold_index);
    PyMem_RawFree(fold_offs);
    PyMem_RawFree(fold_blob);
    fold_index = new_index;
    fold_offs = new_offs;
    fold_blob = new_blob;
    memcpy(fold_lead, new_lead, sizeof(fold_lead));
    memset(fold_lead_low, 0, sizeof(fold_lead_low));
    for (int b = 0xC0; b < 0x100; b++)
        if (fold_lead[b]) fold_lead_low[b & 15] |= (uint8_t)(1u << ((b >> 4) - 0xC));
    fold_growth = growth;
    new_index = NULL;
    new_offs = NULL;
    new_blob = NULL;
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(new_index);
    PyMem_RawFree(new_offs);
    PyMem_RawFree(new_blob);
    PyBuffer_Release(&cps);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&blob);
    return result;
}

/* ---- base64 and hex runs (decode.transforms): where the next one is reported ---- */

/* Bit 1: a character of the standard base64 alphabet (A-Z a-z 0-9 + /); bit 2:
 * a decimal digit. */
static uint8_t run_class[256];

static void init_run_class(void) {
    for (int c = 0; c < 256; c++) {
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '+' || c == '/';
        int digit = c >= '0' && c <= '9';
        run_class[c] = (uint8_t)((alpha || digit ? 1 : 0) | (digit ? 2 : 0));
    }
}

/* The exact scan of data[i:stop] (see mod_alphabet_run): the report's end or -1;
 * *run and *digits are the counts where it stopped. */
static Py_ssize_t run_scalar(const uint8_t *data, Py_ssize_t i, Py_ssize_t stop, Py_ssize_t *run_io,
                             Py_ssize_t *digits_io, Py_ssize_t min_run, Py_ssize_t min_digits) {
    Py_ssize_t run = *run_io, digits = *digits_io;
    Py_ssize_t m = min_run < min_digits ? min_run : min_digits;
    while (i < stop) {
        if (run == 0 && m > 1) {
            /* No run open at i. Let data[k..known] be the alphabet characters known
             * to be in a row from k (none while known < k): a report needs them to
             * reach p = k + m - 1, so p is probed and the bytes back to known are
             * checked from p down; a byte outside the alphabet there starts the
             * next candidate after it. */
            Py_ssize_t k = i, known = i - 1;
            for (;;) {
                Py_ssize_t p = k + m - 1;
                if (p >= stop) { /* no report can end here: the counts at stop */
                    Py_ssize_t lower = known > k - 1 ? known : k - 1, b = stop - 1;
                    while (b > lower && (run_class[data[b]] & 1)) b--;
                    run = b == lower ? stop - k : stop - (b + 1);
                    Py_ssize_t d = stop;
                    while (d > stop - run && (run_class[data[d - 1]] & 2)) d--;
                    digits = stop - d;
                    *run_io = run;
                    *digits_io = digits;
                    return -1;
                }
                Py_ssize_t b = p;
                while (b > known && (run_class[data[b]] & 1)) b--;
                if (b == known) {
                    /* data[k..p] are all in the alphabet: reports may end from p on */
                    run = p - k;
                    Py_ssize_t d = p;
                    while (d > k && (run_class[data[d - 1]] & 2)) d--;
                    digits = p - d;
                    i = p;
                    break;
                }
                k = b + 1;
                known = p;
            }
            continue;
        }
        uint8_t c = run_class[data[i++]];
        if (c & 1) {
            run++;
            digits = (c & 2) ? digits + 1 : 0;
            if ((digits == 0 && run >= min_run) || digits >= min_digits) {
                *run_io = run;
                *digits_io = digits;
                return i;
            }
        } else {
            run = digits = 0;
        }
    }
    *run_io = run;
    *digits_io = digits;
    return -1;
}

#if defined(__SSE2__)
/* Bit t set: data[t] is in the standard base64 alphabet (64 bytes, 4 x 16). */
static uint64_t alphabet_mask64_sse2(const uint8_t *data) {
    const __m128i case_bit = _mm_set1_epi8(0x20), below_a = _mm_set1_epi8('a' - 1),
                  above_z = _mm_set1_epi8('z' + 1), below_0 = _mm_set1_epi8('0' - 1),
                  above_9 = _mm_set1_epi8('9' + 1), plus = _mm_set1_epi8('+'), slash = _mm_set1_epi8('/');
    uint64_t mask = 0;
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(data + 16 * k));
        /* Bytes from 0x80 are negative to these signed compares: never in a range. */
        __m128i folded = _mm_or_si128(v, case_bit); /* A-Z onto a-z; nothing else lands there */
        __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(folded, below_a), _mm_cmplt_epi8(folded, above_z));
        __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, below_0), _mm_cmplt_epi8(v, above_9));
        __m128i other = _mm_or_si128(_mm_cmpeq_epi8(v, plus), _mm_cmpeq_epi8(v, slash));
        __m128i any = _mm_or_si128(_mm_or_si128(letter, digit), other);
        mask |= (uint64_t)(uint16_t)_mm_movemask_epi8(any) << (16 * k);
    }
    return mask;
}

#if defined(HAVE_AVX2)
/* The same with AVX2, by nibbles: a byte is in the alphabet when its low nibble's
 * entry and its high nibble's share a bit. High nibble 2 (bit 0: + /), 3 (bit 1:
 * digits), 4 and 6 (bit 2: letters from 1), 5 and 7 (bit 3: letters to A); 8-F
 * (and 0, 1) have none. Two byte shuffles per 32 bytes. */
__attribute__((target("avx2"))) static uint64_t alphabet_mask64_avx2(const uint8_t *data) {
    const __m256i high = _mm256_setr_epi8(0, 0, 1, 2, 4, 8, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 4, 8,
                                          0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i low = _mm256_setr_epi8(10, 14, 14, 14, 14, 14, 14, 14, 14, 14, 12, 5, 4, 4, 4, 5, 10, 14, 14, 14,
                                         14, 14, 14, 14, 14, 14, 12, 5, 4, 4, 4, 5);
    const __m256i nibble = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
    uint64_t mask = 0;
    for (int k = 0; k < 2; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(data + 32 * k));
        __m256i lo = _mm256_shuffle_epi8(low, _mm256_and_si256(v, nibble));
        __m256i hi = _mm256_shuffle_epi8(high, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
        __m256i none = _mm256_cmpeq_epi8(_mm256_and_si256(lo, hi), zero);
        mask |= (uint64_t)(uint32_t)~_mm256_movemask_epi8(none) << (32 * k);
    }
    return mask;
}
#endif

/* The mask in use: AVX2 where the processor has it (chosen at import). */
static uint64_t (*alphabet_mask64)(const uint8_t *) = alphabet_mask64_sse2;
#endif

/* The search of mod_alphabet_run over data[i:stop] with the counts in *run_io and
 * *digits_io: the report's end or -1, the counts where it stopped. */
static Py_ssize_t alphabet_search(const uint8_t *data, Py_ssize_t i, Py_ssize_t stop, Py_ssize_t *run_io,
                                  Py_ssize_t *digits_io, Py_ssize_t min_run, Py_ssize_t min_digits) {
    Py_ssize_t run = *run_io, digits = *digits_io;
    Py_ssize_t m = min_run < min_digits ? min_run : min_digits;
#if defined(__SSE2__)
    /* 64 bytes at a time where no report can end: a block is scanned exactly only
     * when the run carried into it plus its leading alphabet bytes reach m, or a
     * run inside it is at least the largest power of two not over m long. */
    if (m <= 64 && min_digits >= min_run) {
        /* A run of 64 inside a block is the whole block: the inner test is for m < 64. */
        Py_ssize_t power = 1;
        while (power * 2 <= m) power *= 2;
        int stale = 0; /* digits not counted since the last block passed over */
        while (stop - i >= 64) {
            uint64_t w = alphabet_mask64(data + i);
            if (w != ~0ULL && run + __builtin_ctzll(~w) < m) {
                uint64_t x = w;
                if (power < 64)
                    for (Py_ssize_t shift = 1; shift < power; shift *= 2) x &= x >> shift;
                if (power == 64 || x == 0) {
                    run = __builtin_clzll(~w); /* the alphabet bytes that end the block */
                    stale = 1;
                    i += 64;
                    continue;
                }
            }
            if (stale) {
                Py_ssize_t d = i;
                while (d > i - run && (run_class[data[d - 1]] & 2)) d--;
                digits = i - d;
                stale = 0;
            }
            Py_ssize_t end = run_scalar(data, i, i + 64, &run, &digits, min_run, min_digits);
            if (end >= 0) {
                    *run_io = run;
                    *digits_io = digits;
                    return end;
                }
            i += 64;
        }
        if (stale) {
            Py_ssize_t d = i;
            while (d > i - run && (run_class[data[d - 1]] & 2)) d--;
            digits = i - d;
        }
    }
#endif
    *run_io = run;
    *digits_io = digits;
    return run_scalar(data, i, stop, run_io, digits_io, min_run, min_digits);
}

/* The arguments alphabet_run and next_run share: data, then six integers (start,
 * stop, run, digits, min_run, min_digits), checked for range; 0 with an error set
 * when they are not. */
static int run_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_ssize_t v[6]) {
    if (nargs != 7 || !PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s(data, start, stop, run, digits, min_run, min_digits)", name);
        return 0;
    }
    for (int k = 0; k < 6; k++) {
        v[k] = PyLong_AsSsize_t(args[k + 1]);
        if (v[k] == -1 && PyErr_Occurred()) return 0;
    }
    if (v[0] < 0 || v[1] > PyBytes_GET_SIZE(args[0]) || v[0] > v[1] || v[2] < 0 || v[3] < 0 || v[3] > v[2] ||
        v[4] < 1 || v[5] < 1) {
        PyErr_Format(PyExc_ValueError, "%s: bounds or counts out of range", name);
        return 0;
    }
    return 1;
}

static PyObject *mod_alphabet_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    /* alphabet_run(data, start, stop, run, digits, min_run, min_digits) -> (end, run, digits).
     *
     * What transforms.alphabet_run_py does, without looking at every byte: the
     * first i in data[start:stop] ending `min_run` alphabet characters in a row
     * with a character that is not a digit, or `min_digits` digits in a row,
     * counting the `run` alphabet characters and `digits` digits in a row just
     * before start; end is i + 1 (-1 when there is none) and run and digits are
     * the counts where the scan stopped. A report needs m = min(min_run,
     * min_digits) alphabet characters in a row: with none open, the byte m - 1
     * after a candidate start is probed and the bytes back from it checked, and
     * a byte outside the alphabet rules out every start up to it. Prose moves
     * in steps of about m with a word's length of work each; only a run that
     * reaches m characters is walked byte by byte. */
    Py_ssize_t v[6];
    if (!run_args(args, nargs, "alphabet_run", v)) return NULL;
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t i = v[0], stop = v[1], run = v[2], digits = v[3], min_run = v[4], min_digits = v[5];
    Py_ssize_t end = alphabet_search(data, i, stop, &run, &digits, min_run, min_digits);
    return Py_BuildValue("nnn", end, run, digits);
}

/* ---- the next run worth decoding (decode.transforms): digests passed over ---------- */

/* Characters a run may hold besides the standard alphabet: base64url's - and _. */
static inline int run_ext(uint8_t c) { return (run_class[c] & 1) || c == '-' || c == '_'; }

static inline int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static inline int b64_value(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' || c == '-' ? 62 : 63; /* '/' or '_' (only run characters come here) */
}

/* Base64 (or base64url) of chars[0:n]: whole quanta, then a last partial one of
 * two or three characters, as transforms._decode_chars decodes them. */
static Py_ssize_t decode_b64(const uint8_t *c, Py_ssize_t n, uint8_t *out) {
    Py_ssize_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t v = (uint32_t)b64_value(c[i]) << 18 | (uint32_t)b64_value(c[i + 1]) << 12 |
                     (uint32_t)b64_value(c[i + 2]) << 6 | (uint32_t)b64_value(c[i + 3]);
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    if (n - i >= 2) {
        uint32_t v = (uint32_t)b64_value(c[i]) << 18 | (uint32_t)b64_value(c[i + 1]) << 12;
        if (n - i == 3) v |= (uint32_t)b64_value(c[i + 2]) << 6;
        out[o++] = (uint8_t)(v >> 16);
        if (n - i == 3) out[o++] = (uint8_t)(v >> 8);
    }
    return o;
}

/* Leading bytes (at an offset) of what the decoder opens or refuses by name: the
 * compressions and archives, and every registered format with a fixed magic number. */
static const struct {
    uint16_t offset;
    uint8_t length;
    const char *bytes;
} RUN_MAGICS[] = {
    {0, 2, "\x1f\x8b"}, {0, 4, "\x28\xb5\x2f\xfd"}, {0, 3, "BZh"}, {0, 6, "\xfd" "7zXZ\x00"},
    {0, 2, "PK"}, {0, 4, "%PDF"}, {0, 4, "\x89PNG"}, {0, 3, "\xff\xd8\xff"}, {0, 2, "II"},
    {0, 2, "MM"}, {0, 4, "GIF8"}, {0, 4, "RIFF"}, {0, 6, "SQLite"}, {0, 3, "PAR"},
    {0, 4, "\x89HDF"}, {0, 3, "CDF"}, {0, 3, "BAM"}, {0, 3, "BCF"}, {0, 4, "CRAM"},
    {0, 4, "\xd0\xcf\x11\xe0"}, {0, 5, "ARROW"}, {0, 4, "FEA1"}, {0, 3, "ORC"}, {0, 3, "Obj"},
    {0, 6, "\x93NUMPY"}, {0, 4, "GGUF"}, {0, 2, "7z"}, {0, 4, "Rar!"}, {0, 4, "\x04\x22\x4d\x18"},
    {0, 2, "\x1f\x9d"}, {0, 2, "\x1f\xa0"}, {0, 8, "Salted__"}, {0, 18, "age-encryption.org"},
    {0, 4, "\xff\xff\xff\xff"},
    {0, 2, "\x80\x02"}, {0, 2, "\x80\x03"}, {0, 2, "\x80\x04"}, {0, 2, "\x80\x05"}, {0, 1, "\x08"},
    {0, 1, "\x84"}, {0, 1, "\x85"}, {0, 1, "\x86"}, {0, 1, "\x8c"}, {0, 1, "\x8d"}, {0, 1, "\x8e"},
    {0, 1, "\xc1"}, {0, 1, "\xc3"}, {0, 2, "\x02\x00"}, {0, 2, "\x08\x00"}, {128, 4, "DICM"},
    {4, 4, "ftyp"}, {257, 5, "ustar"}, {8, 1, "{"}, {0, 2, "\xff\xfe"}, {0, 2, "\xfe\xff"},
};

/* Whether a long run's decoded bytes may be something the full verdict opens: text
 * (valid UTF-8, or NULs enough for UTF-16) or a magic number above. */
static int run_worth_decoding(const uint8_t *b, Py_ssize_t n) {
    if (n == 0) return 0;
    Py_ssize_t nuls = 0;
    for (Py_ssize_t i = 0; i < n; i++) nuls += b[i] == 0;
    if (nuls * 8 >= n) return 1;
    for (size_t k = 0; k < sizeof(RUN_MAGICS) / sizeof(RUN_MAGICS[0]); k++) {
        Py_ssize_t at = RUN_MAGICS[k].offset, len = RUN_MAGICS[k].length;
        if (at + len <= n && memcmp(b + at, RUN_MAGICS[k].bytes, (size_t)len) == 0) return 1;
    }
    for (Py_ssize_t i = 0; i + 5 <= n; i++) /* a PDF behind junk: readers look for it */
        if (b[i] == '%' && memcmp(b + i, "%PDF-", 5) == 0) return 1;
    uint32_t cp;
    for (const uint8_t *p = b, *end = b + n; p < end;) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        int len = utf8_char(p, end, &cp);
        if (len == 0) return 0;
        p += len;
    }
    return 1;
}

/* Longest run the core decides on alone (longer ones go to the state machine). */
#define RUN_DECIDE_MAX 512
/* transforms.RUN_WALK_CHARS, WRAP_MIN_CHARS, WRAP_MAX_CHARS, RUN_DECIDE_CHARS. */
#define RUN_WALK 64
#define RUN_WRAP_MIN 32
#define RUN_WRAP_MAX 1024
#define RUN_KIND_CHARS 64

static PyObject *mod_next_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    /* next_run(data, start, stop, run, digits, min_run, min_digits) -> (end, run, digits).
     *
     * alphabet_run(data, start, stop, run, digits, min_run, min_digits), passing over
     * the runs that are certainly noise: complete (followed by what cannot
     * continue them: not the end of the data, not a line break after a line as
     * wide as a wrapped block), at most RUN_DECIDE_MAX characters, not all
     * digits, starting inside the data, and decoding (as hex when all hex, and as
     * base64) to bytes that are neither text nor a known magic number. Digests
     * and signatures in logs cost no Python. The run the search reports is
     * returned as alphabet_run would report it; the state machine reads it. */
    Py_ssize_t v[6];
    if (!run_args(args, nargs, "next_run", v)) return NULL;
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t start = v[0], i = v[0], stop = v[1], run = v[2], digits = v[3], length = v[4], min_digits = v[5];
    if (length > RUN_WALK || min_digits < length) {
        PyErr_SetString(PyExc_ValueError, "next_run: min_run over 64 or min_digits under it");
        return NULL;
    }
    uint8_t decoded[RUN_DECIDE_MAX];
    for (;;) {
        Py_ssize_t end = alphabet_search(data, i, stop, &run, &digits, length, min_digits);
        if (end < 0) return Py_BuildValue("nnn", (Py_ssize_t)-1, run, digits);
        Py_ssize_t stretch = end - length, lower = stretch - RUN_WALK;
        if (lower < start) lower = start;
        Py_ssize_t s = stretch;
        while (s > lower && run_ext(data[s - 1])) s--;
        Py_ssize_t e = end;
        while (e < stop && run_ext(data[e])) e++;
        int decide = stretch >= start && !(s == start && s > stretch - RUN_WALK) && e < stop &&
                     e - s <= RUN_DECIDE_MAX;
        Py_ssize_t after = e;
        if (decide) {
            int pads = 0;
            while (after < stop && pads < 2 && data[after] == '=') {
                after++;
                pads++;
            }
            if (pads == 0 && (data[e] == '\r' || data[e] == '\n')) {
                int hex_kind = 1; /* the kind is hex when its first characters are all hex */
                for (Py_ssize_t k = s; k < e && k < s + RUN_KIND_CHARS; k++)
                    hex_kind &= hex_value(data[k]) >= 0;
                Py_ssize_t width = e - s;
                if (!hex_kind && width >= RUN_WRAP_MIN && width <= RUN_WRAP_MAX && width % 4 == 0)
                    decide = 0; /* may go on on the next line */
            } else if (pads > 0 && after == stop && pads < 2) {
                decide = 0; /* more padding may follow */
            }
        }
        if (decide) {
            int all_digits = 1, all_hex = 1;
            for (Py_ssize_t k = s; k < e; k++) {
                all_digits &= (run_class[data[k]] & 2) != 0;
                all_hex &= hex_value(data[k]) >= 0;
            }
            if (all_digits) decide = 0; /* maybe the hex of numbers: the state machine's rules */
            if (decide && all_hex) {
                Py_ssize_t n = 0;
                for (Py_ssize_t k = s; k + 1 < e; k += 2)
                    decoded[n++] = (uint8_t)(hex_value(data[k]) << 4 | hex_value(data[k + 1]));
                if (run_worth_decoding(decoded, n)) decide = 0;
            }
            if (decide && run_worth_decoding(decoded, decode_b64(data + s, e - s, decoded))) decide = 0;
        }
        if (!decide) return Py_BuildValue("nnn", end, run, digits);
        i = after; /* noise: the search goes on after it */
        run = digits = 0;
    }
}

/* find_any: the first byte of data[i:stop] that is one of up to four bytes (the
 * set repeats its first byte to fill four), or -1. One pass where bytes.find
 * would make one per byte: the transforms' watch looks for the bytes their
 * markers start with in every chunk of text, and clean text has none. */
static Py_ssize_t find_any_scalar(const uint8_t *data, Py_ssize_t i, Py_ssize_t stop, const uint8_t set[4]) {
    for (; i < stop; i++) {
        uint8_t b = data[i];
        if (b == set[0] || b == set[1] || b == set[2] || b == set[3]) return i;
    }
    return -1;
}

#if defined(__SSE2__)
static Py_ssize_t find_any_sse2(const uint8_t *data, Py_ssize_t i, Py_ssize_t stop, const uint8_t set[4]) {
    const __m128i a = _mm_set1_epi8((char)set[0]), b = _mm_set1_epi8((char)set[1]),
                  c = _mm_set1_epi8((char)set[2]), d = _mm_set1_epi8((char)set[3]);
    for (; stop - i >= 16; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(data + i));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, a), _mm_cmpeq_epi8(v, b)),
                                   _mm_or_si128(_mm_cmpeq_epi8(v, c), _mm_cmpeq_epi8(v, d)));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return i + __builtin_ctz((unsigned)mask);
    }
    return find_any_scalar(data, i, stop, set);
}
#endif

#if defined(HAVE_AVX2)
__attribute__((target("avx2"))) static Py_ssize_t find_any_avx2(const uint8_t *data, Py_ssize_t i,
                                                                 Py_ssize_t stop, const uint8_t set[4]) {
    const __m256i a = _mm256_set1_epi8((char)set[0]), b = _mm256_set1_epi8((char)set[1]),
                  c = _mm256_set1_epi8((char)set[2]), d = _mm256_set1_epi8((char)set[3]);
    for (; stop - i >= 32; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(data + i));
        __m256i hit = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(v, a), _mm256_cmpeq_epi8(v, b)),
                                      _mm256_or_si256(_mm256_cmpeq_epi8(v, c), _mm256_cmpeq_epi8(v, d)));
        uint32_t mask = (uint32_t)_mm256_movemask_epi8(hit);
        if (mask) return i + __builtin_ctz(mask);
    }
    return find_any_scalar(data, i, stop, set);
}
#endif

/* The search in use: the widest the processor has (chosen at import). */
static Py_ssize_t (*find_any)(const uint8_t *, Py_ssize_t, Py_ssize_t, const uint8_t[4]) = find_any_scalar;

static PyObject *mod_find_any(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    /* find_any(data, start, stop, chars) -> int: the index of the first byte of
     * data[start:stop] that is in chars (1 to 4 bytes), or -1. */
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "find_any(data, start, stop, chars)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(args[3]);
    if (start < 0 || start > stop || stop > PyBytes_GET_SIZE(args[0]) || n < 1 || n > 4) {
        PyErr_SetString(PyExc_ValueError, "find_any: bounds out of range or not 1 to 4 chars");
        return NULL;
    }
    const uint8_t *chars = (const uint8_t *)PyBytes_AS_STRING(args[3]);
    uint8_t set[4];
    for (int k = 0; k < 4; k++) set[k] = chars[k < n ? k : 0];
    return PyLong_FromSsize_t(find_any((const uint8_t *)PyBytes_AS_STRING(args[0]), start, stop, set));
}

/* ---- digit windows: where the digit database can match (detectors.py, issue 17) ---- */

/* Every match of the digit database holds a core (detectors.DIGIT_CORE_*): six
 * digits in a row, or a digit, one separator (space or "-") and four digits,
 * or an AWS key id's prefix "AKIA" / "ASIA" (a key id may hold no digit). A
 * core ends at t[5] when t[0..5] reads "dddddd" or "ds dddd" (d a digit, s a
 * digit or a separator), or t[2..5] reads one of the prefixes. Number-rich
 * prose has numbers every few words but almost no core ("12.5 mg/L",
 * "n = 248", "2019-2023"), so the database is scanned only around the cores,
 * not over every byte. */
#define DIGIT_CORE_RUN 6
#define DIGIT_CORE_GROUP 4
static const char DIGIT_CORE_SEPARATORS[] = " -";
static const char *const DIGIT_CORE_WORDS[] = {"AKIA", "ASIA"};

static inline int core_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline int core_sep(uint8_t c) { return c == ' ' || c == '-'; }

/* Whether a core ends at text[k] (k >= 3: a word needs four bytes, digits six). */
static inline int core_ends(const uint8_t *text, Py_ssize_t k) {
    if (text[k - 3] == 'A' && (text[k - 2] == 'K' || text[k - 2] == 'S') && text[k - 1] == 'I' && text[k] == 'A')
        return 1;
    return k >= 5 && core_digit(text[k]) && core_digit(text[k - 1]) && core_digit(text[k - 2]) &&
           core_digit(text[k - 3]) && (core_digit(text[k - 4]) || core_sep(text[k - 4])) && core_digit(text[k - 5]);
}

/* Candidate bits of the cores ending in a block: bit k set when a core may end
 * at block[k] with all its bytes in the block, for k >= 5 (bits 0-4 are
 * cleared: those ends were the previous block's). Exact for the digits; for the
 * words, "A?IA" (the caller checks each with core_ends: such capitals are rare,
 * and two compares fewer per vector keep the search as fast as without the
 * words). d: digits, s: separators, a, i: the bytes "A" and "I". */
static inline uint64_t core_bits(uint64_t d, uint64_t s, uint64_t a, uint64_t i) {
    uint64_t digits = d & (d << 1) & (d << 2) & (d << 3) & ((d | s) << 4) & (d << 5);
    uint64_t words = a & (i << 1) & (a << 3);
    return (digits | words) & ~(uint64_t)0x1F;
}

static uint64_t core_mask64_scalar(const uint8_t *data) {
    uint64_t d = 0, s = 0, a = 0, i = 0;
    for (int k = 0; k < 64; k++) {
        uint8_t c = data[k];
        d |= (uint64_t)core_digit(c) << k;
        s |= (uint64_t)core_sep(c) << k;
        a |= (uint64_t)(c == 'A') << k;
        i |= (uint64_t)(c == 'I') << k;
    }
    return core_bits(d, s, a, i);
}

#if defined(__SSE2__)
static uint64_t core_mask64_sse2(const uint8_t *data) {
    const __m128i below_0 = _mm_set1_epi8('0' - 1), above_9 = _mm_set1_epi8('9' + 1), space = _mm_set1_epi8(' '),
                  dash = _mm_set1_epi8('-'), big_a = _mm_set1_epi8('A'), big_i = _mm_set1_epi8('I');
    uint64_t d = 0, s = 0, a = 0, i = 0;
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(data + 16 * k));
        /* Bytes from 0x80 are negative to these signed compares: never digits. */
        __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, below_0), _mm_cmplt_epi8(v, above_9));
        __m128i sep = _mm_or_si128(_mm_cmpeq_epi8(v, space), _mm_cmpeq_epi8(v, dash));
        d |= (uint64_t)(uint16_t)_mm_movemask_epi8(digit) << (16 * k);
        s |= (uint64_t)(uint16_t)_mm_movemask_epi8(sep) << (16 * k);
        a |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, big_a)) << (16 * k);
        i |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, big_i)) << (16 * k);
    }
    return core_bits(d, s, a, i);
}

#if defined(HAVE_AVX2)
__attribute__((target("avx2"))) static uint64_t core_mask64_avx2(const uint8_t *data) {
    const __m256i below_0 = _mm256_set1_epi8('0' - 1), above_9 = _mm256_set1_epi8('9' + 1),
                  space = _mm256_set1_epi8(' '), dash = _mm256_set1_epi8('-'), big_a = _mm256_set1_epi8('A'),
                  big_i = _mm256_set1_epi8('I');
    uint64_t d = 0, s = 0, a = 0, i = 0;
    for (int k = 0; k < 2; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(data + 32 * k));
        __m256i digit = _mm256_and_si256(_mm256_cmpgt_epi8(v, below_0), _mm256_cmpgt_epi8(above_9, v));
        __m256i sep = _mm256_or_si256(_mm256_cmpeq_epi8(v, space), _mm256_cmpeq_epi8(v, dash));
        d |= (uint64_t)(uint32_t)_mm256_movemask_epi8(digit) << (32 * k);
        s |= (uint64_t)(uint32_t)_mm256_movemask_epi8(sep) << (32 * k);
        a |= (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, big_a)) << (32 * k);
        i |= (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, big_i)) << (32 * k);
    }
    return core_bits(d, s, a, i);
}
#endif
#endif

/* The mask in use: the widest the processor has (chosen at import). */
static uint64_t (*core_mask64)(const uint8_t *) = core_mask64_scalar;

/* The most bytes a digit_windows reach may be (the seam is copied to the stack). */
#define DIGIT_REACH_MAX 512

/* The windows being built: a flat list of [start, stop) pairs and the open one. */
typedef struct {
    PyObject *out;
    Py_ssize_t a, b;    /* the open window; none while a > b */
    Py_ssize_t flushed; /* bytes in the windows of the list */
} Windows;

static int windows_flush(Windows *w) {
    if (w->a > w->b) return 0;
    w->flushed += w->b - w->a;
    PyObject *x = PyLong_FromSsize_t(w->a), *y = PyLong_FromSsize_t(w->b);
    int failed = x == NULL || y == NULL || PyList_Append(w->out, x) < 0 || PyList_Append(w->out, y) < 0;
    Py_XDECREF(x);
    Py_XDECREF(y);
    w->a = 1;
    w->b = 0;
    return failed ? -1 : 0;
}

/* The window of a core ending at e, clipped to [lo, hi): merged with the open one
 * when they overlap. */
static int windows_add(Windows *w, Py_ssize_t e, Py_ssize_t reach, Py_ssize_t skip, Py_ssize_t lo,
                       Py_ssize_t hi) {
    Py_ssize_t a = e + 1 - reach, b = e + 1 + reach + skip;
    if (a < lo) a = lo;
    if (b > hi) b = hi;
    if (w->a <= w->b && a <= w->b) {
        if (b > w->b) w->b = b;
        return 0;
    }
    if (windows_flush(w) < 0) return -1;
    w->a = a;
    w->b = b;
    return 0;
}

/* Whether the windows so far make the text dense: they cover dense bytes or more,
 * and half the text searched (to the core ending at e) or more. */
static int windows_dense(const Windows *w, Py_ssize_t e, Py_ssize_t t, Py_ssize_t dense) {
    Py_ssize_t covered = w->flushed + (w->a <= w->b ? w->b - w->a : 0);
    return dense > 0 && covered >= dense && 2 * covered >= e + 1 + t;
}

/* The whole text as one window: [-t, n). */
static PyObject *windows_whole(Windows *w, Py_ssize_t t, Py_ssize_t n) {
    Py_DECREF(w->out);
    return Py_BuildValue("[nn]", -t, n);
}

static PyObject *mod_digit_windows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    /* digit_windows(data, tail, reach, skip, dense) -> [a0, b0, a1, b1, ...]: windows of
     * tail[-reach:] + data, sorted and apart, in offsets from data's start (a window
     * may start up to reach bytes back in the tail), that hold every match of the
     * digit database ending in data. A match holds a core and is at most reach
     * bytes wide, so it lies in [e + 1 - reach, e + 1 + reach) of a core ending at
     * e. Each core found gives [e + 1 - reach, e + 1 + reach + skip), clipped to the
     * text, and the cores ending in the next skip bytes are not looked for: their
     * windows are inside that one. Once the windows cover dense bytes or more
     * and half the text searched so far (dense text: a CSV of read counts, an
     * identifier every ~200 bytes), the search stops and the whole text is one
     * window, [-t, n) (0: the search never stops early). */
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "digit_windows(data, tail, reach, skip, dense)");
        return NULL;
    }
    Py_ssize_t reach = PyLong_AsSsize_t(args[2]), skip = PyLong_AsSsize_t(args[3]);
    Py_ssize_t dense = PyLong_AsSsize_t(args[4]);
    if ((reach == -1 || skip == -1 || dense == -1) && PyErr_Occurred()) return NULL;
    if (reach < DIGIT_CORE_RUN || reach > DIGIT_REACH_MAX || skip < 0 || dense < 0) {
        PyErr_SetString(PyExc_ValueError, "digit_windows: reach out of range, or skip or dense negative");
        return NULL;
    }
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]), tail_n = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t t = tail_n < reach ? tail_n : reach;
    Windows w = {PyList_New(0), 1, 0, 0};
    if (w.out == NULL) return NULL;
    /* The seam: the tail's last t bytes and data's first five, where the cores that
     * end before data[5] are (a match ending in data may hold no other core); a
     * word ends three bytes or more into it, digits five. */
    uint8_t seam[DIGIT_REACH_MAX + DIGIT_CORE_RUN];
    Py_ssize_t head = n < DIGIT_CORE_RUN - 1 ? n : DIGIT_CORE_RUN - 1;
    memcpy(seam, PyBytes_AS_STRING(args[1]) + tail_n - t, (size_t)t);
    memcpy(seam + t, data, (size_t)head);
    Py_ssize_t pos = -t; /* the first core end still looked for */
    for (Py_ssize_t k = 3; k < t + head; k++) {
        Py_ssize_t e = k - t;
        if (e < pos || !core_ends(seam, k)) continue;
        if (windows_add(&w, e, reach, skip, -t, n) < 0) goto fail;
        pos = e + skip + 1;
    }
    /* The rest of data, 59 core ends per 64-byte block (a core's six bytes in it). */
    if (pos < DIGIT_CORE_RUN - 1) pos = DIGIT_CORE_RUN - 1;
    while (pos < n) {
        Py_ssize_t e = -1;
        for (; n - (pos - (DIGIT_CORE_RUN - 1)) >= 64; pos += 64 - (DIGIT_CORE_RUN - 1)) {
            uint64_t bits = core_mask64(data + pos - (DIGIT_CORE_RUN - 1));
            while (bits) { /* the candidates, checked */
                Py_ssize_t c = pos - (DIGIT_CORE_RUN - 1) + __builtin_ctzll(bits);
                if (core_ends(data, c)) {
                    e = c;
                    break;
                }
                bits &= bits - 1;
            }
            if (e >= 0) break;
        }
        if (e < 0) {
            for (; pos < n && !core_ends(data, pos); pos++) {
            }
            if (pos >= n) break;
            e = pos;
        }
        if (windows_add(&w, e, reach, skip, -t, n) < 0) goto fail;
        if (windows_dense(&w, e, t, dense)) return windows_whole(&w, t, n);
        pos = e + skip + 1;
    }
    if (windows_flush(&w) < 0) goto fail;
    return w.out;
fail:
    Py_DECREF(w.out);
    return NULL;
}

/* find_lead: the first lead byte of data[i:stop] whose next byte is marked in
 * follow (256 bytes, one per byte value), or -1. The transforms' percent search
 * looks for "%" and a hex digit: lab notes hold thousands of "%" a megabyte
 * ("95% CI", "12.5%"), none of them an escape, and trying the pattern at each
 * (or a regex scan) cost more than the rest of the decode. */
static Py_ssize_t find_lead_scalar(const uint8_t *data, Py_ssize_t n, Py_ssize_t i, Py_ssize_t stop, uint8_t lead,
                                   const uint8_t *follow) {
    while (i < stop) {
        const uint8_t *p = memchr(data + i, lead, (size_t)(stop - i));
        if (p == NULL) return -1;
        i = p - data;
        if (i + 1 < n && follow[data[i + 1]]) return i;
        i++;
    }
    return -1;
}

static PyObject *mod_find_lead(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    /* find_lead(data, start, stop, lead, follow) -> int (-1 when start >= stop, as bytes.find). */
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[3]) || !PyBytes_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "find_lead(data, start, stop, lead, follow)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || stop > n || PyBytes_GET_SIZE(args[3]) != 1 ||
        PyBytes_GET_SIZE(args[4]) != 256) {
        PyErr_SetString(PyExc_ValueError, "find_lead: bounds out of range, or not one lead and 256 follow bytes");
        return NULL;
    }
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    uint8_t lead = (uint8_t)PyBytes_AS_STRING(args[3])[0];
    return PyLong_FromSsize_t(
        find_lead_scalar(data, n, start, stop, lead, (const uint8_t *)PyBytes_AS_STRING(args[4])));
}

/* Point the vector code at "avx2" or "sse2" (or leave it with NULL); 0 when the
 * processor or the build has no such code. */
static int use_simd(const char *name) {
#if defined(__SSE2__)
    if (name == NULL) {
#if defined(HAVE_AVX2)
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? use_simd("avx2") : use_simd("sse2");
#else
        return use_simd("sse2");
#endif
    }
    if (strcmp(name, "sse2") == 0) {
        alphabet_mask64 = alphabet_mask64_sse2;
        fold_skip = fold_skip_scalar;
        find_any = find_any_sse2;
        core_mask64 = core_mask64_sse2;
        return 1;
    }
#if defined(HAVE_AVX2)
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) {
        alphabet_mask64 = alphabet_mask64_avx2;
        fold_skip = fold_skip_avx2;
        find_any = find_any_avx2;
        core_mask64 = core_mask64_avx2;
        return 1;
    }
#endif
#else
    (void)name;
#endif
    return 0;
}

static PyObject *mod_simd(PyObject *Py_UNUSED(module), PyObject *args) {
    /* simd([name]) -> name: the vector code the run search, the fold and find_any use ("avx2",
     * "sse2" or "none"); with a name the processor has, switch to it (tests). */
    const char *want = NULL;
    if (!PyArg_ParseTuple(args, "|s", &want)) return NULL;
    if (want != NULL && !use_simd(want)) {
        PyErr_Format(PyExc_ValueError, "simd: %s is not available", want);
        return NULL;
    }
#if defined(HAVE_AVX2)
    if (alphabet_mask64 == alphabet_mask64_avx2) return PyUnicode_FromString("avx2");
#endif
#if defined(__SSE2__)
    return PyUnicode_FromString("sse2");
#else
    return PyUnicode_FromString("none");
#endif
}

static PyMethodDef module_methods[] = {
    {"alphabet_run", (PyCFunction)(void (*)(void))mod_alphabet_run, METH_FASTCALL,
     "alphabet_run(data, start, stop, run, digits, min_run, min_digits) -> (end, run, digits): "
     "where the next base64 or hex run is reported, as transforms.alphabet_run_py."},
    {"simd", mod_simd, METH_VARARGS,
     "simd([name]) -> name: the vector code of the run search, the fold, find_any and digit_windows "
     "(avx2, sse2, none); "
     "switch it (tests)."},
    {"digit_windows", (PyCFunction)(void (*)(void))mod_digit_windows, METH_FASTCALL,
     "digit_windows(data, tail, reach, skip, dense) -> [a0, b0, ...]: the windows around the digit cores where "
     "the digit database can match."},
    {"find_lead", (PyCFunction)(void (*)(void))mod_find_lead, METH_FASTCALL,
     "find_lead(data, start, stop, lead, follow) -> int: the first lead byte of data[start:stop] whose next "
     "byte is marked in follow (256 bytes), or -1."},
    {"find_any", (PyCFunction)(void (*)(void))mod_find_any, METH_FASTCALL,
     "find_any(data, start, stop, chars) -> int: the first byte of data[start:stop] in chars (1-4), or -1."},
    {"next_run", (PyCFunction)(void (*)(void))mod_next_run, METH_FASTCALL,
     "next_run(data, start, stop, run, digits, min_run, min_digits) -> (end, run, digits): alphabet_run past "
     "runs that are certainly noise (digests, signatures)."},
    {"fold", (PyCFunction)mod_fold, METH_O,
     "fold(data) -> bytes: complete UTF-8 normalised by the table fold_setup gave, as charset.fold."},
    {"fold_setup", mod_fold_setup, METH_VARARGS,
     "fold_setup(code_points, offsets, blob): the fold table (from charset.folding_table)."},
    {"genetic_runs", (PyCFunction)(void (*)(void))mod_genetic_runs, METH_FASTCALL,
     "genetic_runs(data, offset, tail, state, pid, hits) -> state: the token rule's hits for runs of bases."},
    {"genetic_setup", mod_genetic_setup, METH_VARARGS,
     "genetic_setup(classes, escaped, min_run, space_max, kinds): the token rule's tables (from matcher.py)."},
    {"genetic_tables", mod_genetic_tables, METH_NOARGS,
     "genetic_tables() -> (classes, escaped, min_run, space_max, kinds): the tables genetic_runs uses."},
    {"validate", mod_validate, METH_VARARGS,
     "validate(name, value[, (year, month, day)]): one native validator (cn_resident_id, uscc, "
     "bank_card, hkid)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.classify._native",
    .m_doc = "Compiled core of the text matcher.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    init_tables();
    init_run_class();
    use_simd(NULL);
    memset(province_ok, 0, sizeof(province_ok));
    for (size_t i = 0; i < sizeof(PROVINCES) / sizeof(PROVINCES[0]); i++) province_ok[PROVINCES[i]] = 1;
    memset(uscc_value, -1, sizeof(uscc_value));
    for (int i = 0; USCC_ALPHABET[i]; i++) uscc_value[(uint8_t)USCC_ALPHABET[i]] = (int8_t)i;
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddIntConstant(m, "OP_PYTHON", OP_PYTHON) < 0 ||
        PyModule_AddIntConstant(m, "OP_DIGITS", OP_DIGITS) < 0 ||
        PyModule_AddIntConstant(m, "OP_USCC", OP_USCC) < 0 ||
        PyModule_AddIntConstant(m, "OP_GROUPED", OP_GROUPED) < 0 ||
        PyModule_AddIntConstant(m, "OP_LETTERS", OP_LETTERS) < 0 ||
        PyModule_AddIntConstant(m, "OP_HKID_BRACKETS", OP_HKID_BRACKETS) < 0 ||
        PyModule_AddIntConstant(m, "OP_EMAIL", OP_EMAIL) < 0 ||
        PyModule_AddIntConstant(m, "G_BASE", G_BASE) < 0 || PyModule_AddIntConstant(m, "G_TOKEN", G_TOKEN) < 0 ||
        PyModule_AddIntConstant(m, "G_SPACE", G_SPACE) < 0 || PyModule_AddIntConstant(m, "G_BREAK", G_BREAK) < 0 ||
        PyModule_AddIntConstant(m, "G_OTHER", G_OTHER) < 0 ||
        PyModule_AddIntConstant(m, "G_ESCAPE", G_ESCAPE) < 0 ||
        PyModule_AddIntConstant(m, "DIGIT_CORE_RUN", DIGIT_CORE_RUN) < 0 ||
        PyModule_AddIntConstant(m, "DIGIT_CORE_GROUP", DIGIT_CORE_GROUP) < 0 ||
        PyModule_AddIntConstant(m, "DIGIT_REACH_MAX", DIGIT_REACH_MAX) < 0 ||
        PyModule_AddObject(m, "DIGIT_CORE_SEPARATORS", PyBytes_FromString(DIGIT_CORE_SEPARATORS)) < 0 ||
        PyModule_AddObject(m, "DIGIT_CORE_WORDS",
                           Py_BuildValue("(yy)", DIGIT_CORE_WORDS[0], DIGIT_CORE_WORDS[1])) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
