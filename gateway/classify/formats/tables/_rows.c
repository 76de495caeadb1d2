/* Compiled rendering of Arrow columns as CSV lines (docs/formats.md "Tables"),
 * and Parquet's page headers (page_header, at the end).
 *
 * render_rows(columns, start, stop, budget, max_cell, max_row) writes rows
 * start..stop of a batch as the text common.py's Arrow path writes them: one
 * line per row, cells joined by commas, a null cell empty, a string cell that
 * holds a comma, a quote or a line break quoted (RFC 4180), integers as
 * decimal digits, dates as ISO dates, whole-number floats of identifier size
 * as digits and other floats empty. It reads the columns' Arrow buffers in
 * place, in one pass and without the GIL, where the Arrow path casts every
 * column to strings and has Arrow's CSV writer join them (a third of the time,
 * measured on the benchmark's Parquet table).
 *
 * A column is a tuple (common.py builds them, _rows.pyi names the kinds):
 *   (EMPTY,)
 *   (INT,   length, offset, validity, values, width, signed)
 *   (FLOAT, length, offset, validity, values, width)
 *   (DATE,  length, offset, validity, days)
 *   (STR,   length, offset, validity, offsets, offset_width, chars, quote)
 *   (DICT,  length, offset, validity, indices, width, signed, values)
 * where validity is None or Arrow's validity bitmap, buffers are anything with
 * the buffer protocol, and a DICT's values are a STR column. Every buffer
 * length, string offset and dictionary index is checked before it is used:
 * a lie is a ValueError, never a read out of bounds.
 *
 * Returns (text, end): the lines of rows start..end-1, end the first row whose
 * line would take the text past budget bytes (at least one row is written).
 * None when a string cell is longer than max_cell bytes (the caller cuts such
 * cells on its own path). OverflowError when one row's line is longer than
 * max_row bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { K_EMPTY = 0, K_INT = 1, K_FLOAT = 2, K_DATE = 3, K_STR = 4, K_DICT = 5 };

/* Whole-number floats rendered as digits: 1e7 <= |v| < 9e18 (common.py's
 * INTEGRAL_FLOAT_MIN and _INTEGRAL_FLOAT_MAX; the module checks they agree). */
#define FLOAT_MIN 1e7
#define FLOAT_MAX 9.0e18

/* The days of 0001-01-01 and 9999-12-31 from 1970-01-01: dates rendered here. */
#define FIRST_DAY (-719162)
#define LAST_DAY 2932896

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Bytes;

/* A date column's last rendered days, direct-mapped: a column's dates repeat
 * (a batch spans far fewer days than it has rows). */
#define DAY_SLOTS 1024
typedef struct DayCache {
    int32_t days[DAY_SLOTS];
    char text[DAY_SLOTS][10];
} DayCache;

typedef struct Column {
    int kind;
    Py_ssize_t length, offset;
    Bytes validity; /* p NULL: no nulls */
    Bytes values;   /* INT/FLOAT/DATE values, STR offsets, DICT indices */
    int width;      /* bytes per value (STR: per offset) */
    int is_signed;
    Bytes chars; /* STR */
    int quote;   /* STR */
    struct Column *dict; /* DICT: its values (a STR column) */
    DayCache *days; /* DATE */
    Py_buffer views[3];
    int nviews;
} Column;

/* The text being written: straight into the bytes object returned (no copy at
 * the end), which grows with the GIL taken back for a moment when the first
 * size (estimate()) was short, and shrinks to what was written. */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    PyObject *bytes;
    PyThreadState *released; /* while the GIL is released */
} Out;

/* The row loop runs without the GIL: no Python API below here until render_rows. */
enum { OK = 0, LONG_CELL = 1, NO_MEMORY = -1, LIE = -2, LONG_ROW = -3 };

static int out_grow(Out *o, Py_ssize_t more) {
    Py_ssize_t cap = o->cap ? o->cap : 1 << 16;
    while (cap < o->len + more) {
        if (cap > PY_SSIZE_T_MAX / 4) return NO_MEMORY;
        cap *= 2;
    }
    PyEval_RestoreThread(o->released);
    /* On failure _PyBytes_Resize frees the object and leaves NULL. */
    int failed = _PyBytes_Resize(&o->bytes, cap) < 0;
    if (failed) PyErr_Clear(); /* render_rows raises MemoryError for NO_MEMORY */
    o->released = PyEval_SaveThread();
    if (failed) return NO_MEMORY;
    o->p = PyBytes_AS_STRING(o->bytes);
    o->cap = cap;
    return OK;
}

static inline int out_reserve(Out *o, Py_ssize_t more) {
    return o->len + more <= o->cap ? OK : out_grow(o, more);
}

static void column_release(Column *c) {
    for (int i = 0; i < c->nviews; i++) PyBuffer_Release(&c->views[i]);
    c->nviews = 0;
    PyMem_Free(c->days);
    c->days = NULL;
    if (c->dict != NULL) {
        column_release(c->dict);
        PyMem_Free(c->dict);
        c->dict = NULL;
    }
}

/* A buffer argument (None allowed when optional) as bytes held until release. */
static int take_buffer(Column *c, PyObject *obj, Bytes *out, int optional, const char *what) {
    out->p = NULL;
    out->n = 0;
    if (obj == Py_None) {
        if (optional) return 0;
        PyErr_Format(PyExc_ValueError, "render_rows: %s missing", what);
        return -1;
    }
    Py_buffer *view = &c->views[c->nviews];
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) return -1;
    c->nviews++;
    out->p = view->buf;
    out->n = view->len;
    return 0;
}

static int int_arg(PyObject *t, Py_ssize_t i, Py_ssize_t *out) {
    *out = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, i));
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int bad(const char *what) {
    PyErr_Format(PyExc_ValueError, "render_rows: %s", what);
    return -1;
}

static int column_parse(Column *c, PyObject *t);

/* The common head of every kind but EMPTY: length, offset, validity. */
static int parse_head(Column *c, PyObject *t) {
    if (int_arg(t, 1, &c->length) < 0 || int_arg(t, 2, &c->offset) < 0) return -1;
    if (c->length < 0 || c->offset < 0 || c->offset > PY_SSIZE_T_MAX / 16 - c->length)
        return bad("bad length or offset");
    if (take_buffer(c, PyTuple_GET_ITEM(t, 3), &c->validity, 1, "validity") < 0) return -1;
    if (c->validity.p != NULL && c->validity.n < (c->offset + c->length + 7) / 8)
        return bad("validity bitmap too short");
    return 0;
}

static int parse_width(Column *c, PyObject *t, Py_ssize_t i) {
    Py_ssize_t width;
    if (int_arg(t, i, &width) < 0) return -1;
    if (width != 1 && width != 2 && width != 4 && width != 8) return bad("bad width");
    c->width = (int)width;
    return 0;
}

static int parse_values(Column *c, PyObject *t, Py_ssize_t extra) {
    if (take_buffer(c, PyTuple_GET_ITEM(t, 4), &c->values, 0, "values") < 0) return -1;
    if (c->values.n / c->width < c->offset + c->length + extra) return bad("values buffer too short");
    return 0;
}

/* Whether a STR column's characters hold a byte that may need quoting (memchr
 * over all of them at once is a fraction of a look at each cell's bytes). */
static int any_special(const Column *c) {
    int64_t first, last;
    if (c->width == 4) {
        int32_t a, b;
        memcpy(&a, c->values.p + c->offset * 4, 4);
        memcpy(&b, c->values.p + (c->offset + c->length) * 4, 4);
        first = a;
        last = b;
    } else {
        memcpy(&first, c->values.p + c->offset * 8, 8);
        memcpy(&last, c->values.p + (c->offset + c->length) * 8, 8);
    }
    /* Offsets out of order or bounds are found cell by cell (a ValueError then). */
    if (first < 0 || last < first || last > c->chars.n) return 1;
    const uint8_t *p = c->chars.p + first;
    size_t n = (size_t)(last - first);
    return n && (memchr(p, ',', n) || memchr(p, '"', n) || memchr(p, '\n', n) || memchr(p, '\r', n));
}

static int column_parse(Column *c, PyObject *t) {
    memset(c, 0, sizeof(*c));
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 1) return bad("a column is not a tuple");
    Py_ssize_t kind;
    if (int_arg(t, 0, &kind) < 0) return -1;
    c->kind = (int)kind;
    static const Py_ssize_t sizes[] = {1, 7, 6, 5, 8, 8};
    if (kind < K_EMPTY || kind > K_DICT || PyTuple_GET_SIZE(t) != sizes[kind]) return bad("bad column tuple");
    if (kind == K_EMPTY) return 0;
    if (parse_head(c, t) < 0) return -1;
    Py_ssize_t flag;
    switch (kind) {
    case K_INT:
    case K_DICT:
        if (parse_width(c, t, 5) < 0 || int_arg(t, 6, &flag) < 0) return -1;
        c->is_signed = flag != 0;
        if (parse_values(c, t, 0) < 0) return -1;
        if (kind == K_DICT) {
            c->dict = PyMem_Calloc(1, sizeof(Column));
            if (c->dict == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            if (column_parse(c->dict, PyTuple_GET_ITEM(t, 7)) < 0) return -1;
            if (c->dict->kind != K_STR) return bad("dictionary values are not strings");
        }
        return 0;
    case K_FLOAT:
        if (parse_width(c, t, 5) < 0) return -1;
        if (c->width != 4 && c->width != 8) return bad("bad float width");
        return parse_values(c, t, 0);
    case K_DATE:
        c->width = 4;
        if (parse_values(c, t, 0) < 0) return -1;
        c->days = PyMem_Malloc(sizeof(DayCache));
        if (c->days == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (int k = 0; k < DAY_SLOTS; k++) c->days->days[k] = INT32_MIN; /* no day is cached */
        return 0;
    default: /* K_STR */
        if (parse_width(c, t, 5) < 0 || int_arg(t, 7, &flag) < 0) return -1;
        if (c->width != 4 && c->width != 8) return bad("bad offset width");
        c->quote = flag != 0;
        if (parse_values(c, t, 1) < 0) return -1;
        if (take_buffer(c, PyTuple_GET_ITEM(t, 6), &c->chars, 1, "chars") < 0) return -1;
        if (c->quote && !any_special(c)) c->quote = 0; /* no cell to look at one by one */
        return 0;
    }
}

static inline int is_null(const Column *c, Py_ssize_t i) {
    if (c->validity.p == NULL) return 0;
    Py_ssize_t bit = c->offset + i;
    return !((c->validity.p[bit >> 3] >> (bit & 7)) & 1);
}

static inline int64_t signed_at(const Bytes *b, int width, Py_ssize_t i) {
    const uint8_t *p = b->p + i * width;
    switch (width) {
    case 1: return (int8_t)p[0];
    case 2: { int16_t v; memcpy(&v, p, 2); return v; }
    case 4: { int32_t v; memcpy(&v, p, 4); return v; }
    default: { int64_t v; memcpy(&v, p, 8); return v; }
    }
}

static inline uint64_t unsigned_at(const Bytes *b, int width, Py_ssize_t i) {
    const uint8_t *p = b->p + i * width;
    switch (width) {
    case 1: return p[0];
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, p, 4); return v; }
    default: { uint64_t v; memcpy(&v, p, 8); return v; }
    }
}

/* Two decimal digits per step (a division per pair of digits, not per digit). */
static const char PAIRS[201] =
    "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
    "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/* Decimal digits of v at p (room for 20 digits); returns the length. */
static int put_unsigned(char *p, uint64_t v) {
    int n = 1;
    for (uint64_t bound = 10; n < 20 && v >= bound; bound *= 10) n++;
    char *q = p + n;
    while (v >= 100) {
        uint64_t pair = v % 100;
        v /= 100;
        q -= 2;
        memcpy(q, PAIRS + 2 * pair, 2);
    }
    if (v >= 10) {
        memcpy(q - 2, PAIRS + 2 * v, 2);
    } else {
        q[-1] = (char)('0' + v);
    }
    return n;
}

static int put_signed(char *p, int64_t v) {
    if (v >= 0) return put_unsigned(p, (uint64_t)v);
    p[0] = '-';
    return 1 + put_unsigned(p + 1, (uint64_t)0 - (uint64_t)v);
}

/* Days from 1970-01-01 as YYYY-MM-DD (the proleptic Gregorian calendar). */
static void date_text(char *p, int64_t days) {
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t day = doy - (153 * mp + 2) / 5 + 1;
    int64_t month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = yoe + era * 400 + (month <= 2);
    p[0] = (char)('0' + year / 1000);
    p[1] = (char)('0' + year / 100 % 10);
    p[2] = (char)('0' + year / 10 % 10);
    p[3] = (char)('0' + year % 10);
    p[4] = '-';
    p[5] = (char)('0' + month / 10);
    p[6] = (char)('0' + month % 10);
    p[7] = '-';
    p[8] = (char)('0' + day / 10);
    p[9] = (char)('0' + day % 10);
}

static void put_date(char *p, DayCache *cache, int32_t days) {
    unsigned slot = (unsigned)days & (DAY_SLOTS - 1);
    if (cache->days[slot] != days) {
        cache->days[slot] = days;
        date_text(cache->text[slot], days);
    }
    memcpy(p, cache->text[slot], 10);
}

/* Cell i of a STR column as (start, length) in its chars; LIE when its offsets lie. */
static int str_cell(const Column *c, Py_ssize_t i, const uint8_t **start, Py_ssize_t *length) {
    Py_ssize_t at = c->offset + i;
    int64_t begin, end;
    if (c->width == 4) {
        int32_t a, b;
        memcpy(&a, c->values.p + at * 4, 4);
        memcpy(&b, c->values.p + at * 4 + 4, 4);
        begin = a;
        end = b;
    } else {
        memcpy(&begin, c->values.p + at * 8, 8);
        memcpy(&end, c->values.p + at * 8 + 8, 8);
    }
    if (begin < 0 || end < begin || end > c->chars.n) return LIE;
    *start = c->chars.p + begin;
    *length = (Py_ssize_t)(end - begin);
    return OK;
}

/* Bytes a string cell may need quoted: a comma, a quote or a line break. */
static uint8_t special[256];

/* Append one string cell, quoted when it must be (LONG_CELL: over max_cell bytes). */
static int put_str(Out *o, const Column *c, Py_ssize_t i, Py_ssize_t max_cell) {
    if (is_null(c, i)) return OK;
    const uint8_t *s;
    Py_ssize_t n;
    if (str_cell(c, i, &s, &n) != OK) return LIE;
    if (n > max_cell) return LONG_CELL;
    uint8_t found = 0;
    if (c->quote)
        for (Py_ssize_t k = 0; k < n; k++) found |= special[s[k]];
    if (!found) {
        if (out_reserve(o, n) != OK) return NO_MEMORY;
        memcpy(o->p + o->len, s, (size_t)n);
        o->len += n;
        return OK;
    }
    if (out_reserve(o, 2 * n + 2) != OK) return NO_MEMORY;
    char *p = o->p + o->len;
    *p++ = '"';
    for (Py_ssize_t k = 0; k < n; k++) {
        *p++ = (char)s[k];
        if (s[k] == '"') *p++ = '"';
    }
    *p++ = '"';
    o->len = p - o->p;
    return OK;
}

/* Most bytes a cell of a fixed-width kind takes: a sign and 20 digits, or a date. */
#define FIXED_CELL 21

/* Append cell i of column c (room for FIXED_CELL bytes is already reserved). */
static int put_cell(Out *o, const Column *c, Py_ssize_t i, Py_ssize_t max_cell) {
    if (c->kind == K_EMPTY || is_null(c, i)) return OK;
    char *p = o->p + o->len;
    Py_ssize_t at = c->offset + i;
    switch (c->kind) {
    case K_STR:
        return put_str(o, c, i, max_cell);
    case K_INT:
        o->len += c->is_signed ? put_signed(p, signed_at(&c->values, c->width, at))
                               : put_unsigned(p, unsigned_at(&c->values, c->width, at));
        return OK;
    case K_FLOAT: {
        double v;
        if (c->width == 4) {
            float f;
            memcpy(&f, c->values.p + at * 4, 4);
            v = f;
        } else {
            memcpy(&v, c->values.p + at * 8, 8);
        }
        double size = fabs(v); /* measurements fail here, before floor */
        if (size >= FLOAT_MIN && size < FLOAT_MAX && floor(v) == v) o->len += put_signed(p, (int64_t)v);
        return OK;
    }
    case K_DATE: {
        int32_t days = (int32_t)signed_at(&c->values, 4, at);
        if (days < FIRST_DAY || days > LAST_DAY) return LIE;
        put_date(p, c->days, days);
        o->len += 10;
        return OK;
    }
    default: { /* K_DICT */
        int64_t index = c->is_signed ? signed_at(&c->values, c->width, at)
                                     : (int64_t)unsigned_at(&c->values, c->width, at);
        if (index < 0 || index >= c->dict->length) return LIE;
        return put_str(o, c->dict, (Py_ssize_t)index, max_cell);
    }
    }
}

/* Bytes rows start..stop will likely take (the text's first size): the string
 * columns' characters, and typical widths of the others (a nine-digit count, an
 * empty measurement, a date). Short, the text grows; long, it shrinks. */
static Py_ssize_t estimate(const Column *cols, Py_ssize_t ncols, Py_ssize_t start, Py_ssize_t stop,
                           Py_ssize_t budget) {
    Py_ssize_t rows = stop - start, per_row = ncols, chars = 0;
    for (Py_ssize_t k = 0; k < ncols; k++) {
        const Column *c = &cols[k];
        switch (c->kind) {
        case K_INT:
            per_row += 12;
            break;
        case K_FLOAT:
            per_row += 4;
            break;
        case K_DATE:
            per_row += 10;
            break;
        case K_STR: {
            const uint8_t *a, *b;
            Py_ssize_t n;
            /* offsets that lie are found row by row; here they only cost the estimate */
            if (rows && str_cell(c, start, &a, &n) == OK && str_cell(c, stop - 1, &b, &n) == OK && b >= a)
                chars += (Py_ssize_t)(b - a) + n;
            break;
        }
        case K_DICT:
            if (c->dict->length > 0) per_row += c->dict->chars.n / c->dict->length + 1;
            break;
        default:
            break;
        }
    }
    Py_ssize_t guess = rows < PY_SSIZE_T_MAX / 64 / (per_row + 1) ? rows * per_row + chars : budget;
    guess += guess / 8 + 4096;
    return guess < budget + 4096 ? guess : budget + 4096;
}

/* Rows start..stop into o, stopping at budget (*end: the first row not written). */
static int render(const Column *cols, Py_ssize_t ncols, Py_ssize_t start, Py_ssize_t stop,
                  Py_ssize_t budget, Py_ssize_t max_cell, Py_ssize_t max_row, Out *o, Py_ssize_t *end) {
    /* Room for a row's fixed-width cells and separators, reserved once per row;
       a string cell reserves its own. */
    Py_ssize_t fixed = ncols;
    for (Py_ssize_t k = 0; k < ncols; k++)
        if (cols[k].kind != K_EMPTY && cols[k].kind != K_STR && cols[k].kind != K_DICT) fixed += FIXED_CELL;
    Py_ssize_t row = start;
    for (; row < stop; row++) {
        Py_ssize_t begin = o->len;
        if (out_reserve(o, fixed) != OK) return NO_MEMORY;
        for (Py_ssize_t k = 0; k < ncols; k++) {
            if (k) o->p[o->len++] = ',';
            int status = put_cell(o, &cols[k], row, max_cell);
            if (status != OK) return status;
            if (cols[k].kind == K_STR || cols[k].kind == K_DICT) {
                /* a long row stops here, not after all its cells are held */
                if (o->len - begin > max_row) return LONG_ROW;
                /* the string may have used the room the cells after it count on */
                if (out_reserve(o, fixed) != OK) return NO_MEMORY;
            }
        }
        o->p[o->len++] = '\n';
        if (o->len - begin > max_row) return LONG_ROW;
        if (o->len > budget && row > start) {
            o->len = begin; /* this row starts the next text */
            break;
        }
    }
    *end = row;
    return OK;
}

static PyObject *render_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "render_rows takes 6 arguments");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "render_rows: columns must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    Py_ssize_t budget = PyLong_AsSsize_t(args[3]), max_cell = PyLong_AsSsize_t(args[4]);
    Py_ssize_t max_row = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t ncols = PySequence_Fast_GET_SIZE(seq);
    Column *cols = PyMem_Calloc(ncols ? (size_t)ncols : 1, sizeof(Column));
    Out o = {NULL, 0, 0, NULL, NULL};
    PyObject *result = NULL;
    Py_ssize_t parsed = 0, end = start;
    if (cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (ncols == 0 || start < 0 || stop < start) {
        bad("no columns, or bad rows");
        goto done;
    }
    for (; parsed < ncols; parsed++) {
        Column *c = &cols[parsed];
        int failed = column_parse(c, PySequence_Fast_ITEMS(seq)[parsed]) < 0;
        if (!failed && c->kind != K_EMPTY && c->length < stop) failed = bad("a column is shorter than its rows");
        if (failed) {
            parsed++; /* release what it took */
            goto done;
        }
    }
    o.cap = estimate(cols, ncols, start, stop, budget);
    o.bytes = PyBytes_FromStringAndSize(NULL, o.cap);
    if (o.bytes == NULL) goto done;
    o.p = PyBytes_AS_STRING(o.bytes);
    /* The object is this call's alone: written without the GIL. */
    o.released = PyEval_SaveThread();
    int status = render(cols, ncols, start, stop, budget, max_cell, max_row, &o, &end);
    PyEval_RestoreThread(o.released);
    switch (status) {
    case OK:
        if (_PyBytes_Resize(&o.bytes, o.len) == 0) result = Py_BuildValue("(Nn)", o.bytes, end);
        o.bytes = NULL; /* given to the result, or freed by the failed resize */
        break;
    case LONG_CELL:
        result = Py_NewRef(Py_None);
        break;
    case NO_MEMORY:
        PyErr_NoMemory();
        break;
    case LONG_ROW:
        PyErr_Format(PyExc_OverflowError, "a row over %zd bytes of text", max_row);
        break;
    default:
        bad("offsets, indices or dates out of bounds");
    }
done:
    for (Py_ssize_t k = 0; k < parsed; k++) column_release(&cols[k]);
    PyMem_Free(cols);
    Py_XDECREF(o.bytes);
    Py_DECREF(seq);
    return result;
}

/* -- Parquet page headers ----------------------------------------------------
 *
 * page_header(data, max_nesting) reads a page header (Thrift compact) from the
 * start of data as parquet.py's _page_header does and returns the same
 * (header bytes, page type, uncompressed size, compressed size, values), or
 * None where it does not decide: the header runs past data, is malformed,
 * nests deeper than max_nesting or holds a number past 64 bits. parquet.py
 * then reads it with _page_header, which says why (tests check the two agree
 * wherever this one decides). A count or length is checked against the bytes
 * left before any loop runs over it, so every loop step consumes a byte. */

typedef struct {
    const uint8_t *p;
    Py_ssize_t n, pos;
    int max_nesting;
} Thrift;

static int t_byte(Thrift *t, int *out) {
    if (t->pos >= t->n) return -1;
    *out = t->p[t->pos++];
    return 0;
}

static int t_varint(Thrift *t, uint64_t *out) {
    uint64_t result = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        int b;
        if (t_byte(t, &b) < 0) return -1;
        if (shift == 63 && (b & 0x7F) > 1) return -1; /* past 64 bits */
        result |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = result;
            return 0;
        }
    }
    return -1; /* longer than ten bytes */
}

static int t_zigzag(Thrift *t, int64_t *out) {
    uint64_t n;
    if (t_varint(t, &n) < 0) return -1;
    *out = (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
    return 0;
}

/* A field header: 1 (the struct's stop byte), 0 (a field: *fid, *kind), -1. */
static int t_field(Thrift *t, int64_t *fid, int *kind) {
    int head;
    if (t_byte(t, &head) < 0) return -1;
    if (head == 0) return 1;
    *kind = head & 0x0F;
    if (head >> 4) {
        *fid += head >> 4;
        return 0;
    }
    return t_zigzag(t, fid);
}

static int t_skip(Thrift *t, int kind, int depth);

static int t_item(Thrift *t, int kind, int depth) {
    if (kind == 1 || kind == 2) { /* a boolean in a map: a byte */
        t->pos++;
        return t->pos > t->n ? -1 : 0;
    }
    return t_skip(t, kind, depth);
}

static int t_skip(Thrift *t, int kind, int depth) {
    if (depth > t->max_nesting) return -1;
    uint64_t v;
    int b;
    switch (kind) {
    case 1:
    case 2:
        break;
    case 3:
        if (t_byte(t, &b) < 0) return -1;
        break;
    case 4:
    case 5:
    case 6:
        if (t_varint(t, &v) < 0) return -1;
        break;
    case 7:
        t->pos += 8;
        break;
    case 8:
        if (t_varint(t, &v) < 0 || v > (uint64_t)(t->n - t->pos)) return -1;
        t->pos += (Py_ssize_t)v;
        break;
    case 9:
    case 10: {
        int head;
        if (t_byte(t, &head) < 0) return -1;
        uint64_t size = (uint64_t)(head >> 4);
        if (size == 15 && t_varint(t, &size) < 0) return -1;
        if (size > (uint64_t)(t->n - t->pos)) return -1;
        int elem = head & 0x0F;
        if (elem == 1 || elem == 2) {
            t->pos += (Py_ssize_t)size;
            break;
        }
        for (uint64_t i = 0; i < size; i++)
            if (t->pos > t->n || t_skip(t, elem, depth + 1) < 0) return -1;
        break;
    }
    case 11: {
        if (t_varint(t, &v) < 0 || v > (uint64_t)(t->n - t->pos)) return -1;
        if (v == 0) break;
        int types;
        if (t_byte(t, &types) < 0) return -1;
        for (uint64_t i = 0; i < v; i++)
            if (t->pos > t->n || t_item(t, types >> 4, depth + 1) < 0 || t_item(t, types & 0x0F, depth + 1) < 0)
                return -1;
        break;
    }
    case 12: {
        int64_t fid = 0;
        int field_kind = 0, status;
        while ((status = t_field(t, &fid, &field_kind)) == 0)
            if (t_skip(t, field_kind, depth + 1) < 0) return -1;
        if (status < 0) return -1;
        break;
    }
    default:
        return -1;
    }
    return t->pos > t->n ? -1 : 0;
}

static PyObject *page_header(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "page_header takes 2 arguments");
        return NULL;
    }
    long max_nesting = PyLong_AsLong(args[1]);
    if (max_nesting == -1 && PyErr_Occurred()) return NULL;
    if (max_nesting < 0 || max_nesting > 1000) {
        PyErr_SetString(PyExc_ValueError, "page_header: max_nesting out of range");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    Thrift t = {view.buf, view.len, 0, (int)max_nesting};
    int64_t fields[4] = {0, 0, 0, 0}, values = 0, fid = 0;
    int kind = 0, status;
    while ((status = t_field(&t, &fid, &kind)) == 0) {
        if (fid >= 1 && fid <= 3 && kind == 5) {
            if (t_zigzag(&t, &fields[fid]) < 0) goto undecided;
        } else if ((fid == 5 || fid == 7 || fid == 8) && kind == 12) {
            int64_t sub = 0;
            int sub_kind = 0, sub_status;
            while ((sub_status = t_field(&t, &sub, &sub_kind)) == 0) {
                if (sub == 1 && sub_kind == 5) {
                    if (t_zigzag(&t, &values) < 0) goto undecided;
                } else if (t_skip(&t, sub_kind, 0) < 0) {
                    goto undecided;
                }
            }
            if (sub_status < 0) goto undecided;
        } else if (t_skip(&t, kind, 0) < 0) {
            goto undecided;
        }
    }
    if (status < 0) goto undecided;
    PyBuffer_Release(&view);
    return Py_BuildValue("(nLLLL)", t.pos, (long long)fields[1], (long long)fields[2], (long long)fields[3],
                         (long long)values);
undecided:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"render_rows", (PyCFunction)(void (*)(void))render_rows, METH_FASTCALL,
     "render_rows(columns, start, stop, budget, max_cell, max_row) -> (text, end) | None: "
     "rows of Arrow columns as CSV lines."},
    {"page_header", (PyCFunction)(void (*)(void))page_header, METH_FASTCALL,
     "page_header(data, max_nesting) -> (header bytes, type, uncompressed, compressed, values) | None: "
     "a Parquet page header, or None where parquet.py's parser must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef rows_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.classify.formats.tables._rows",
    .m_doc = "Compiled rendering of Arrow columns as CSV lines, and Parquet page headers.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rows(void) {
    special[','] = special['"'] = special['\n'] = special['\r'] = 1;
    PyObject *m = PyModule_Create(&rows_module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "EMPTY", K_EMPTY) < 0 || PyModule_AddIntConstant(m, "INT", K_INT) < 0 ||
        PyModule_AddIntConstant(m, "FLOAT", K_FLOAT) < 0 || PyModule_AddIntConstant(m, "DATE", K_DATE) < 0 ||
        PyModule_AddIntConstant(m, "STR", K_STR) < 0 || PyModule_AddIntConstant(m, "DICT", K_DICT) < 0 ||
        PyModule_AddObject(m, "FLOAT_MIN", PyFloat_FromDouble(FLOAT_MIN)) < 0 ||
        PyModule_AddObject(m, "FLOAT_MAX", PyFloat_FromDouble(FLOAT_MAX)) < 0 ||
        PyModule_AddIntConstant(m, "FIRST_DAY", FIRST_DAY) < 0 ||
        PyModule_AddIntConstant(m, "LAST_DAY", LAST_DAY) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
