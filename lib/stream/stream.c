/* stream.c - the tensor stream: a sequence of zstd frames, each holding one
 * safetensors document (one record).  doc/stream-format.md is the spec;
 * the limits and error cases here follow it. */
#include "stream/stream.h"

#include <cjson/cJSON.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Largest decompressed record a reader accepts (64 GiB).  A variable, not a
 * constant, only so that the fuzzer can lower it; nothing else touches it. */
uint64_t esg_stream_max_record = (uint64_t)64 << 30;
/* Most tensors / metadata entries in one record (the record API is linear). */
#define MAX_ENTRIES 16384
/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define JSON_INT_MAX 9007199254740992.0
#define ZSTD_SKIPPABLE_MASK 0xFFFFFFF0u
#define ZSTD_SKIPPABLE_MAGIC 0x184D2A50u

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (unsigned char)v;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF):
 * the safetensors header must be valid UTF-8. */
static int utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		size_t len;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			len = 2, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if (n - i < len)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

/* Bytes of a tensor of this dtype and shape, checking every dimension. */
static int shape_bytes(const char *name, esg_dtype dt, int ndim, const int64_t *shape,
		       uint64_t *out)
{
	uint64_t n = esg_dtype_size(dt);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return esg_set_error("tensor '%s': negative dimension %" PRId64 " in shape",
					     name, shape[i]);
		if (shape[i] && n > (uint64_t)INT64_MAX / (uint64_t)shape[i])
			return esg_set_error("tensor '%s': shape too large (overflows 64 bits)", name);
		n *= (uint64_t)shape[i];
	}
	*out = n;
	return 0;
}

/* Quoted-name comparisons for duplicate checks. */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first name occurring twice in names[0..n) (reorders names), or NULL. */
static const char *find_duplicate(const char **names, size_t n)
{
	qsort(names, n, sizeof *names, cmp_str);
	for (size_t i = 1; i < n; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			return names[i];
	return NULL;
}

/* ---- encoding -------------------------------------------------------- */

static cJSON *json_u64(uint64_t v)
{
	char b[24];
	snprintf(b, sizeof b, "%" PRIu64, v);
	return cJSON_CreateRaw(b);   /* exact, never "1e+15" */
}

/* Everything encode and the writer must refuse, checked before any output. */
static int check_record(const esg_record *r)
{
	if (r->n_tensors > MAX_ENTRIES || r->n_meta > MAX_ENTRIES)
		return esg_set_error("record has %zu tensors and %zu metadata keys (limit %d each)",
				     r->n_tensors, r->n_meta, MAX_ENTRIES);
	size_t n = r->n_tensors > r->n_meta ? r->n_tensors : r->n_meta;
	const char **names = malloc((n ? n : 1) * sizeof *names);
	if (!names)
		return esg_set_error("out of memory");
	int rc = 0;
	for (size_t i = 0; i < r->n_tensors && !rc; i++) {
		const esg_tensor *t = &r->tensors[i];
		uint64_t nb;
		names[i] = t->name;
		if (!t->name || !*t->name)
			rc = esg_set_error("tensor %zu has an empty name", i);
		else if (!utf8_valid((const unsigned char *)t->name, strlen(t->name)))
			rc = esg_set_error("tensor name '%s' is not valid UTF-8", t->name);
		else if (strcmp(t->name, "__metadata__") == 0)
			rc = esg_set_error("tensor name '__metadata__' is reserved by safetensors");
		else if ((unsigned)t->dtype >= ESG_DTYPE_COUNT || t->ndim < 0 || t->ndim > ESG_MAX_DIMS)
			rc = esg_set_error("tensor '%s': bad dtype %d or rank %d", t->name,
					   (int)t->dtype, t->ndim);
		else if (shape_bytes(t->name, t->dtype, t->ndim, t->shape, &nb) < 0)
			rc = -1;
		else if (nb && !t->data)
			rc = esg_set_error("tensor '%s' has no data", t->name);
	}
	const char *dup;
	if (!rc && (dup = find_duplicate(names, r->n_tensors)))
		rc = esg_set_error("duplicate tensor name '%s'", dup);
	for (size_t i = 0; i < r->n_meta && !rc; i++) {
		names[i] = r->meta_keys[i];
		if (!r->meta_keys[i] || !r->meta_vals[i])
			rc = esg_set_error("metadata entry %zu is NULL", i);
		else if (!utf8_valid((const unsigned char *)r->meta_keys[i], strlen(r->meta_keys[i])))
			rc = esg_set_error("metadata key '%s' is not valid UTF-8", r->meta_keys[i]);
		else if (!utf8_valid((const unsigned char *)r->meta_vals[i], strlen(r->meta_vals[i])))
			rc = esg_set_error("metadata '%s': value is not valid UTF-8", r->meta_keys[i]);
	}
	if (!rc && (dup = find_duplicate(names, r->n_meta)))
		rc = esg_set_error("duplicate metadata key '%s'", dup);
	free(names);
	const char *v = esg_meta_get(r, "esg.format");
	if (!rc && v && strcmp(v, ESG_FORMAT_VERSION) != 0)
		rc = esg_set_error("record says esg.format '%.40s'; this writer writes version %s",
				   v, ESG_FORMAT_VERSION);
	return rc;
}

/* The JSON header of r, space-padded to a multiple of 8 bytes (as the
 * safetensors library does), and the size of the data buffer.  New string. */
static char *header_json(const esg_record *r, size_t *hlen, uint64_t *dlen)
{
	if (check_record(r) < 0)
		return NULL;
	cJSON *root = cJSON_CreateObject();
	cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
	int bad = !meta;
	if (!esg_meta_get(r, "esg.format"))
		bad |= !cJSON_AddStringToObject(meta, "esg.format", ESG_FORMAT_VERSION);
	for (size_t i = 0; i < r->n_meta; i++)
		bad |= !cJSON_AddStringToObject(meta, r->meta_keys[i], r->meta_vals[i]);
	uint64_t off = 0;
	for (size_t i = 0; i < r->n_tensors && !bad; i++) {
		const esg_tensor *t = &r->tensors[i];
		uint64_t nb;
		shape_bytes(t->name, t->dtype, t->ndim, t->shape, &nb);   /* checked above */
		cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
		bad |= !cJSON_AddStringToObject(o, "dtype", esg_dtype_name(t->dtype));
		for (int d = 0; d < t->ndim; d++)
			bad |= !cJSON_AddItemToArray(shape, json_u64((uint64_t)t->shape[d]));
		bad |= !cJSON_AddItemToObject(o, "shape", shape);
		bad |= !cJSON_AddItemToArray(offs, json_u64(off));
		bad |= !cJSON_AddItemToArray(offs, json_u64(off + nb));
		bad |= !cJSON_AddItemToObject(o, "data_offsets", offs);
		bad |= !cJSON_AddItemToObject(root, t->name, o);
		off += nb;
	}
	char *js = bad ? NULL : cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!js) {
		esg_set_error("out of memory building the safetensors header");
		return NULL;
	}
	size_t n = strlen(js), pad = (8 - n % 8) % 8;
	char *padded = realloc(js, n + pad + 1);
	if (!padded) {
		free(js);
		esg_set_error("out of memory building the safetensors header");
		return NULL;
	}
	memset(padded + n, ' ', pad);
	padded[n + pad] = 0;
	*hlen = n + pad;
	*dlen = off;
	return padded;
}

void *esg_safetensors_encode(const esg_record *r, size_t *size)
{
	size_t hlen;
	uint64_t dlen;
	char *h = header_json(r, &hlen, &dlen);
	if (!h)
		return NULL;
	if (dlen > SIZE_MAX - 8 - hlen) {
		free(h);
		esg_set_error("record too large to encode in memory");
		return NULL;
	}
	unsigned char *buf = malloc(8 + hlen + dlen);
	if (!buf) {
		free(h);
		esg_set_error("out of memory encoding a %" PRIu64 "-byte record", 8 + hlen + dlen);
		return NULL;
	}
	put_le64(buf, hlen);
	memcpy(buf + 8, h, hlen);
	free(h);
	unsigned char *p = buf + 8 + hlen;
	for (size_t i = 0; i < r->n_tensors; i++) {
		size_t nb = esg_tensor_nbytes(&r->tensors[i]);
		if (nb)
			memcpy(p, r->tensors[i].data, nb);
		p += nb;
	}
	*size = 8 + hlen + dlen;
	return buf;
}

/* ---- decoding -------------------------------------------------------- */

/* One tensor entry of the header, before it becomes a record tensor. */
struct entry {
	const char *name;
	esg_dtype dtype;
	int ndim;
	int64_t shape[ESG_MAX_DIMS];
	uint64_t begin, end;
	size_t index;
};

static int cmp_entry(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* A non-negative integral JSON number that a double holds exactly. */
static int json_uint(const cJSON *v, uint64_t *out)
{
	if (!cJSON_IsNumber(v))
		return -1;
	double d = v->valuedouble;
	if (!(d >= 0 && d <= JSON_INT_MAX) || (double)(uint64_t)d != d)
		return -1;
	*out = (uint64_t)d;
	return 0;
}

/* The checks on the 8-byte header size, shared with the reader's early
 * look at a frame (so a header bomb is refused before it is inflated).
 * docsize is UINT64_MAX when not known yet. */
static int check_header_size(uint64_t hn, uint64_t docsize)
{
	if (hn > ESG_MAX_HEADER_BYTES)
		return esg_set_error("safetensors header size %" PRIu64 " exceeds the limit of %u bytes"
				     " (corrupt data, or not a tensor stream)", hn, ESG_MAX_HEADER_BYTES);
	if (docsize != UINT64_MAX && hn > docsize - 8)
		return esg_set_error("safetensors header size %" PRIu64 " runs past the end of the "
				     "%" PRIu64 "-byte document", hn, docsize);
	return 0;
}

static int parse_meta(esg_record *r, const cJSON *meta)
{
	if (cJSON_IsNull(meta))
		return 0;
	if (!cJSON_IsObject(meta))
		return esg_set_error("__metadata__ is not a JSON object");
	size_t n = 0;
	for (const cJSON *m = meta->child; m; m = m->next)
		n++;
	if (n > MAX_ENTRIES)
		return esg_set_error("__metadata__ has %zu keys (limit %d)", n, MAX_ENTRIES);
	const char **keys = malloc((n ? n : 1) * sizeof *keys);
	if (!keys)
		return esg_set_error("out of memory");
	n = 0;
	int rc = 0;
	for (const cJSON *m = meta->child; m && !rc; m = m->next) {
		keys[n++] = m->string;
		if (!cJSON_IsString(m))
			rc = esg_set_error("metadata '%s' is not a string (safetensors metadata maps "
					   "strings to strings)", m->string);
	}
	const char *dup;
	if (!rc && (dup = find_duplicate(keys, n)))
		rc = esg_set_error("duplicate metadata key '%s'", dup);
	free(keys);
	for (const cJSON *m = meta->child; m && !rc; m = m->next)
		rc = esg_meta_set(r, m->string, m->valuestring);
	return rc;
}

static int parse_entry(const cJSON *v, uint64_t dlen, struct entry *e)
{
	const char *name = v->string;
	if (!cJSON_IsObject(v))
		return esg_set_error("tensor '%s': header entry is not a JSON object", name);
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(v, "dtype");
	const cJSON *sh = cJSON_GetObjectItemCaseSensitive(v, "shape");
	const cJSON *off = cJSON_GetObjectItemCaseSensitive(v, "data_offsets");
	if (!dt)
		return esg_set_error("tensor '%s': missing dtype", name);
	if (!cJSON_IsString(dt))
		return esg_set_error("tensor '%s': dtype is not a string", name);
	if (esg_dtype_parse(dt->valuestring, &e->dtype) < 0)
		return esg_prefix_error("tensor '%s'", name);
	if (!cJSON_IsArray(sh))
		return esg_set_error("tensor '%s': %s", name, sh ? "shape is not an array" : "missing shape");
	int nd = cJSON_GetArraySize(sh);
	if (nd > ESG_MAX_DIMS)
		return esg_set_error("tensor '%s': shape has %d dimensions (limit %d)", name, nd, ESG_MAX_DIMS);
	e->ndim = 0;
	for (const cJSON *d = sh->child; d; d = d->next) {
		uint64_t u;
		if (cJSON_IsNumber(d) && d->valuedouble < 0)
			return esg_set_error("tensor '%s': negative dimension %g in shape", name, d->valuedouble);
		if (json_uint(d, &u) < 0)
			return esg_set_error("tensor '%s': shape holds something other than a "
					     "non-negative integer", name);
		e->shape[e->ndim++] = (int64_t)u;
	}
	if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_uint(off->child, &e->begin) < 0 ||
	    json_uint(off->child->next, &e->end) < 0)
		return esg_set_error("tensor '%s': %s", name, off ? "data_offsets is not [BEGIN, END] "
				     "(two non-negative integers)" : "missing data_offsets");
	if (e->begin > e->end)
		return esg_set_error("tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before "
				     "they begin", name, e->begin, e->end);
	if (e->end > dlen)
		return esg_set_error("tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] run past the "
				     "%" PRIu64 "-byte data buffer", name, e->begin, e->end, dlen);
	uint64_t nb;
	if (shape_bytes(name, e->dtype, e->ndim, e->shape, &nb) < 0)
		return -1;
	if (nb != e->end - e->begin) {
		char s[160];
		esg_shape_str(e->ndim, e->shape, s, sizeof s);
		return esg_set_error("tensor '%s': shape %s of %s needs %" PRIu64 " bytes but "
				     "data_offsets span %" PRIu64, name, s, esg_dtype_name(e->dtype),
				     nb, e->end - e->begin);
	}
	e->name = name;
	return 0;
}

/* Sorted by offset, the tensors must tile the data buffer exactly. */
static int check_coverage(const struct entry *e, size_t n, uint64_t dlen)
{
	uint64_t at = 0;
	for (size_t i = 0; i < n; i++) {
		if (e[i].begin > at)
			return esg_set_error("data buffer bytes %" PRIu64 "..%" PRIu64 " belong to no "
					     "tensor (gap before tensor '%s')", at, e[i].begin, e[i].name);
		if (e[i].begin < at)
			return esg_set_error("tensor '%s' overlaps tensor '%s' in the data buffer",
					     e[i].name, e[i - 1].name);
		at = e[i].end;
	}
	if (n == 0 && dlen)
		return esg_set_error("%" PRIu64 " bytes of data but no tensors", dlen);
	if (at != dlen)
		return esg_set_error("%" PRIu64 " trailing bytes after the last tensor's data", dlen - at);
	return 0;
}

static int check_format(const esg_record *r)
{
	const char *v = esg_meta_get(r, "esg.format");
	if (v && strcmp(v, ESG_FORMAT_VERSION) != 0)
		return esg_set_error("unsupported stream format version '%.40s' (this reader knows %s)",
				     v, ESG_FORMAT_VERSION);
	return 0;
}

/* Parse the header JSON into r's metadata and a sorted, checked entry list. */
static int parse_header(esg_record *r, const cJSON *root, uint64_t dlen,
			struct entry **entries, size_t *count)
{
	size_t n = 0, k = 0;
	int seen_meta = 0;
	for (const cJSON *v = root->child; v; v = v->next)
		n++;
	if (n > MAX_ENTRIES + 1)
		return esg_set_error("header has %zu entries (limit %d tensors)", n, MAX_ENTRIES);
	struct entry *e = calloc(n ? n : 1, sizeof *e);
	const char **names = malloc((n ? n : 1) * sizeof *names);
	if (!e || !names) {
		free(e), free(names);
		return esg_set_error("out of memory");
	}
	int rc = 0;
	for (const cJSON *v = root->child; v && !rc; v = v->next) {
		if (strcmp(v->string, "__metadata__") == 0) {
			rc = seen_meta++ ? esg_set_error("duplicate __metadata__ in header") : parse_meta(r, v);
			continue;
		}
		e[k].index = k;
		rc = parse_entry(v, dlen, &e[k]);
		names[k] = e[k].name;
		k++;
	}
	const char *dup;
	if (!rc && (dup = find_duplicate(names, k)))
		rc = esg_set_error("duplicate tensor name '%s'", dup);
	free(names);
	if (!rc) {
		qsort(e, k, sizeof *e, cmp_entry);
		rc = check_coverage(e, k, dlen);
	}
	if (!rc)
		rc = check_format(r);
	if (rc) {
		free(e);
		return -1;
	}
	*entries = e;
	*count = k;
	return 0;
}

/* "\u0000" would silently cut a C string short (names, metadata). */
static int has_nul_escape(const char *h, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (h[i] == '\\') {
			if (h[i + 1] == 'u' && n - i >= 6 && !memcmp(h + i + 2, "0000", 4))
				return 1;
			i++;   /* skip the escaped character */
		}
	return 0;
}

esg_record *esg_safetensors_decode(const void *buf, size_t size)
{
	const unsigned char *p = buf;
	if (size < 8) {
		esg_set_error("document is %zu bytes, too short for the 8-byte safetensors header size", size);
		return NULL;
	}
	uint64_t hn = le64(p);
	if (check_header_size(hn, size) < 0)
		return NULL;
	const char *h = (const char *)p + 8;
	if (hn < 2 || h[0] != '{') {
		esg_set_error("safetensors header does not start with '{'");
		return NULL;
	}
	if (!utf8_valid((const unsigned char *)h, hn)) {
		esg_set_error("safetensors header is not valid UTF-8");
		return NULL;
	}
	if (has_nul_escape(h, hn)) {
		esg_set_error("safetensors header holds a NUL character (\\u0000) in a string");
		return NULL;
	}
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(h, hn, &end, 0);
	if (!root || !cJSON_IsObject(root)) {
		size_t at = end && end >= h && end <= h + hn ? (size_t)(end - h) : 0;
		cJSON_Delete(root);
		esg_set_error("safetensors header is not valid JSON (error at byte %zu of %" PRIu64 ")", at, hn);
		return NULL;
	}
	for (; end < h + hn; end++)
		if (!strchr(" \t\r\n", *end) || !*end) {
			cJSON_Delete(root);
			esg_set_error("junk after the JSON header (byte %zu of %" PRIu64 ")",
				      (size_t)(end - h), hn);
			return NULL;
		}
	const unsigned char *data = p + 8 + hn;
	uint64_t dlen = size - 8 - hn;
	esg_record *r = esg_record_new();
	struct entry *e = NULL;
	size_t n = 0;
	if (!r || parse_header(r, root, dlen, &e, &n) < 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		esg_tensor *t = esg_record_add(r, e[i].name, e[i].dtype, e[i].ndim, e[i].shape);
		if (!t)
			goto fail;
		memcpy(t->data, data + e[i].begin, e[i].end - e[i].begin);
	}
	free(e);
	cJSON_Delete(root);
	return r;
fail:
	free(e);
	cJSON_Delete(root);
	esg_record_free(r);
	return NULL;
}

/* ---- the reader ------------------------------------------------------- */

struct esg_reader {
	FILE *f;
	char *name;
	ZSTD_DCtx *dctx;
	unsigned char *in;            /* buffered input: in[pos..end) unread */
	size_t in_cap, in_pos, in_end;
	int eof;
	unsigned char *out;           /* the current record, decompressed */
	size_t out_cap;
	size_t count;
	int failed;                   /* errors are sticky */
};

/* "NAME: record N: MESSAGE"; returns -1 and marks the reader failed. */
static int rd_fail(esg_reader *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_fail(esg_reader *rd, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	rd->failed = 1;
	return esg_set_error("%s: record %zu: %s", rd->name, rd->count + 1, msg);
}

static int rd_prefix(esg_reader *rd)
{
	rd->failed = 1;
	return esg_prefix_error("%s: record %zu", rd->name, rd->count + 1);
}

esg_reader *esg_reader_open(FILE *f, const char *name)
{
	esg_reader *rd = calloc(1, sizeof *rd);
	if (!rd) {
		esg_set_error("out of memory");
		return NULL;
	}
	rd->f = f;
	rd->name = strdup(name ? name : "stream");
	rd->in_cap = ZSTD_DStreamInSize();
	rd->in = malloc(rd->in_cap);
	rd->dctx = ZSTD_createDCtx();
	if (!rd->name || !rd->in || !rd->dctx) {
		esg_reader_free(rd);
		esg_set_error("out of memory");
		return NULL;
	}
	return rd;
}

void esg_reader_free(esg_reader *rd)
{
	if (!rd)
		return;
	ZSTD_freeDCtx(rd->dctx);
	free(rd->in);
	free(rd->out);
	free(rd->name);
	free(rd);
}

size_t esg_reader_count(const esg_reader *rd)
{
	return rd->count;
}

/* Read until at least want bytes are buffered or the input ends.  Reads
 * no more than asked, so a pipe is never waited on for data that belongs
 * to a record nobody has asked for yet. */
static int fill(esg_reader *rd, size_t want)
{
	if (rd->in_pos > 0) {
		memmove(rd->in, rd->in + rd->in_pos, rd->in_end - rd->in_pos);
		rd->in_end -= rd->in_pos;
		rd->in_pos = 0;
	}
	if (want > rd->in_cap)
		want = rd->in_cap;
	while (rd->in_end < want && !rd->eof) {
		size_t got = fread(rd->in + rd->in_end, 1, want - rd->in_end, rd->f);
		rd->in_end += got;
		if (got == 0 || rd->in_end < want) {
			if (ferror(rd->f))
				return rd_fail(rd, "read error: %s", strerror(errno));
			if (feof(rd->f))
				rd->eof = 1;
		}
	}
	return 0;
}

static size_t avail(const esg_reader *rd)
{
	return rd->in_end - rd->in_pos;
}

/* Size of a zstd frame header from its descriptor byte (format spec 3.1.1.1). */
static size_t frame_header_size(unsigned char fhd)
{
	static const size_t did[4] = { 0, 1, 2, 4 }, fcs[4] = { 0, 2, 4, 8 };
	int single = fhd >> 5 & 1;
	size_t fcs_size = fcs[fhd >> 6];
	if (single && fcs_size == 0)
		fcs_size = 1;
	return 4 + 1 + !single + did[fhd & 3] + fcs_size;
}

static int looks_like_safetensors(const unsigned char *p, size_t n)
{
	return n >= 9 && le64(p) < ESG_MAX_HEADER_BYTES && p[8] == '{';
}

/* Skip one skippable frame (zstd readers ignore them; so do we). */
static int skip_frame(esg_reader *rd)
{
	if (fill(rd, 8) < 0)
		return -1;
	if (avail(rd) < 8)
		return rd_fail(rd, "truncated skippable frame header");
	uint64_t left = le32(rd->in + rd->in_pos + 4);
	rd->in_pos += 8;
	while (left) {
		if (avail(rd) == 0 && fill(rd, left < rd->in_cap ? left : rd->in_cap) < 0)
			return -1;
		if (avail(rd) == 0)
			return rd_fail(rd, "truncated skippable frame (%" PRIu64 " bytes missing)", left);
		size_t k = avail(rd) < left ? avail(rd) : left;
		rd->in_pos += k;
		left -= k;
	}
	return 0;
}

/* Position at the next zstd frame: 1 and its content size (or
 * ZSTD_CONTENTSIZE_UNKNOWN), 0 at a clean end, -1 on error. */
static int frame_start(esg_reader *rd, unsigned long long *csize)
{
	for (;;) {
		if (fill(rd, 5) < 0)
			return -1;
		if (avail(rd) == 0)
			return 0;
		const unsigned char *p = rd->in + rd->in_pos;
		if (avail(rd) < 4)
			return rd_fail(rd, "truncated frame (the input ends after %zu bytes of it)", avail(rd));
		uint32_t magic = le32(p);
		if ((magic & ZSTD_SKIPPABLE_MASK) == ZSTD_SKIPPABLE_MAGIC) {
			if (skip_frame(rd) < 0)
				return -1;
			continue;
		}
		if (magic != ZSTD_MAGICNUMBER) {
			if (fill(rd, 9) < 0)
				return -1;
			p = rd->in + rd->in_pos;
			return rd_fail(rd, "not a zstd frame (starts with bytes %02x %02x %02x %02x)%s",
				       p[0], p[1], p[2], p[3], looks_like_safetensors(p, avail(rd)) ?
				       "; this looks like an uncompressed safetensors file: compress it "
				       "with zstd" : "");
		}
		if (avail(rd) < 5)
			return rd_fail(rd, "truncated frame (the input ends inside its header)");
		size_t hs = frame_header_size(p[4]);
		if (fill(rd, hs) < 0)
			return -1;
		if (avail(rd) < hs)
			return rd_fail(rd, "truncated frame (the input ends inside its header)");
		*csize = ZSTD_getFrameContentSize(rd->in + rd->in_pos, hs);
		if (*csize == ZSTD_CONTENTSIZE_ERROR)
			return rd_fail(rd, "corrupt zstd frame header");
		return 1;
	}
}

static int zstd_fail(esg_reader *rd, size_t ret)
{
	switch (ZSTD_getErrorCode(ret)) {
	case ZSTD_error_checksum_wrong:
		return rd_fail(rd, "checksum mismatch: the data is corrupt");
	case ZSTD_error_frameParameter_windowTooLarge:
		return rd_fail(rd, "zstd frame needs a window over 128 MiB (recompress with a lower level)");
	default:
		return rd_fail(rd, "corrupt zstd frame (%s)", ZSTD_getErrorName(ret));
	}
}

/* Make room for at least one more byte of output, up to lim bytes. */
static int grow_out(esg_reader *rd, size_t lim)
{
	size_t cap = rd->out_cap < 65536 ? 65536 : rd->out_cap * 2;
	if (cap > lim)
		cap = lim;
	unsigned char *p = realloc(rd->out, cap);
	if (!p)
		return rd_fail(rd, "out of memory for a %zu-byte record", cap);
	rd->out = p;
	rd->out_cap = cap;
	return 0;
}

/* Decompress the frame at the input position into rd->out (memory grows
 * with the data actually produced, not with what the header claims). */
static int read_frame(esg_reader *rd, unsigned long long csize, size_t *size)
{
	int known = csize != ZSTD_CONTENTSIZE_UNKNOWN;
	uint64_t max = esg_stream_max_record;
	if (max > SIZE_MAX)
		max = SIZE_MAX;
	if (known && csize > max)
		return rd_fail(rd, "frame content size %llu bytes exceeds the %" PRIu64 "-byte record "
			       "limit", csize, max);
	size_t lim = known ? (size_t)csize : (size_t)max, have = 0;
	int header_checked = 0;
	ZSTD_DCtx_reset(rd->dctx, ZSTD_reset_session_only);
	for (;;) {
		if (have == rd->out_cap && have < lim && grow_out(rd, lim) < 0)
			return -1;
		ZSTD_outBuffer out = { rd->out, rd->out_cap < lim ? rd->out_cap : lim, have };
		ZSTD_inBuffer in = { rd->in + rd->in_pos, avail(rd), 0 };
		size_t ret = ZSTD_decompressStream(rd->dctx, &out, &in);
		int progress = in.pos > 0 || out.pos > have;
		rd->in_pos += in.pos;
		have = out.pos;
		if (ZSTD_isError(ret))
			return zstd_fail(rd, ret);
		if (!header_checked && have >= 8) {
			header_checked = 1;
			if (check_header_size(le64(rd->out), known ? csize : UINT64_MAX) < 0)
				return rd_prefix(rd);
		}
		if (ret == 0)
			break;
		if (progress)
			continue;
		if (avail(rd) == 0) {
			if (fill(rd, ret) < 0)
				return -1;
			if (avail(rd) == 0)
				return rd_fail(rd, "truncated frame (the input ends inside it, after %zu "
					       "decompressed bytes)", have);
		} else if (have >= lim) {
			return known ? rd_fail(rd, "zstd frame holds more than its declared %llu bytes", csize)
				     : rd_fail(rd, "record exceeds the %" PRIu64 "-byte limit", max);
		} else {
			return rd_fail(rd, "zstd decoder made no progress");
		}
	}
	*size = have;
	return 0;
}

int esg_reader_next(esg_reader *rd, esg_record **out)
{
	*out = NULL;
	if (rd->failed)
		return esg_set_error("%s: the stream already failed", rd->name);
	unsigned long long csize = 0;
	size_t size = 0;
	int rc = frame_start(rd, &csize);
	if (rc <= 0)
		return rc;
	if (read_frame(rd, csize, &size) < 0)
		return -1;
	esg_record *r = esg_safetensors_decode(rd->out, size);
	if (!r)
		return rd_prefix(rd);
	/* a big record's buffer is not kept for a stream of small ones */
	if (rd->out_cap > ((size_t)64 << 20) && size < rd->out_cap / 4) {
		free(rd->out);
		rd->out = NULL;
		rd->out_cap = 0;
	}
	rd->count++;
	*out = r;
	return 1;
}

/* ---- the writer ------------------------------------------------------- */

struct esg_writer {
	FILE *f;
	ZSTD_CCtx *cctx;
	unsigned char *buf;
	size_t cap;
	int failed;
};

esg_writer *esg_writer_open(FILE *f, int level)
{
	if (level && (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())) {
		esg_set_error("zstd level %d out of range (%d to %d)", level, ZSTD_minCLevel(),
			      ZSTD_maxCLevel());
		return NULL;
	}
	esg_writer *w = calloc(1, sizeof *w);
	if (!w) {
		esg_set_error("out of memory");
		return NULL;
	}
	w->f = f;
	w->cap = ZSTD_CStreamOutSize();
	w->buf = malloc(w->cap);
	w->cctx = ZSTD_createCCtx();
	if (!w->buf || !w->cctx ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel,
						level ? level : ZSTD_CLEVEL_DEFAULT)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1))) {
		ZSTD_freeCCtx(w->cctx);
		free(w->buf);
		free(w);
		esg_set_error("cannot set up the zstd compressor");
		return NULL;
	}
	return w;
}

/* Compress n bytes (ZSTD_e_continue) or finish the frame (ZSTD_e_end). */
static int feed(esg_writer *w, const void *p, size_t n, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = { p, n, 0 };
	for (;;) {
		ZSTD_outBuffer out = { w->buf, w->cap, 0 };
		size_t ret = ZSTD_compressStream2(w->cctx, &out, &in, mode);
		if (ZSTD_isError(ret))
			return esg_set_error("zstd compression failed: %s", ZSTD_getErrorName(ret));
		if (out.pos && fwrite(w->buf, 1, out.pos, w->f) != out.pos)
			return esg_set_error("cannot write the stream: %s", strerror(errno));
		if (mode == ZSTD_e_end ? ret == 0 : in.pos == in.size)
			return 0;
	}
}

int esg_writer_put(esg_writer *w, const esg_record *r)
{
	if (w->failed)
		return esg_set_error("the stream writer already failed");
	size_t hlen;
	uint64_t dlen;
	char *h = header_json(r, &hlen, &dlen);
	if (!h)
		return -1;
	unsigned char len[8];
	put_le64(len, hlen);
	ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_only);
	int rc = ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(w->cctx, 8 + hlen + dlen)) ?
		 esg_set_error("zstd refused the record size") : 0;
	if (!rc)
		rc = feed(w, len, 8, ZSTD_e_continue);
	if (!rc)
		rc = feed(w, h, hlen, ZSTD_e_continue);
	free(h);
	for (size_t i = 0; i < r->n_tensors && !rc; i++)
		rc = feed(w, r->tensors[i].data, esg_tensor_nbytes(&r->tensors[i]), ZSTD_e_continue);
	if (!rc)
		rc = feed(w, NULL, 0, ZSTD_e_end);
	if (rc)
		w->failed = 1;   /* a half-written frame: nothing after it is readable */
	return rc;
}

int esg_writer_close(esg_writer *w)
{
	if (!w)
		return 0;
	int rc = w->failed ? -1 : 0;
	if (fflush(w->f) != 0 || ferror(w->f))
		rc = esg_set_error("cannot write the stream: %s", strerror(errno ? errno : EIO));
	else if (rc)
		esg_set_error("the stream is incomplete (an earlier write failed)");
	ZSTD_freeCCtx(w->cctx);
	free(w->buf);
	free(w);
	return rc;
}
