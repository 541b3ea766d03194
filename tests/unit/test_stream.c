/* test_stream.c - the tensor stream and safetensors documents: round trips
 * for every dtype, and every invalid input the spec lists, each giving its
 * one-line message.
 *
 * Also two helper modes for tests/cli/stream_python.sh:
 *   test_stream --write-fixture FILE   one-record stream with every dtype
 *   test_stream --dump FILE            a text dump of every record
 */
#include "stream/stream.h"
#include "tap.h"

#include <zstd.h>

#include <stdlib.h>
#include <string.h>

extern uint64_t esg_stream_max_record;

/* ---- helpers ---------------------------------------------------------- */

/* Deterministic bytes for tensor number k: valid values for every dtype
 * (BOOL 0/1, no NaN patterns in floats since bytes stay small). */
static void fill_tensor(esg_tensor *t, int k)
{
	size_t n = esg_tensor_nbytes(t);
	unsigned char *p = t->data;
	for (size_t i = 0; i < n; i++)
		p[i] = t->dtype == ESG_BOOL ? (unsigned char)((i + (size_t)k) % 2)
					    : (unsigned char)((i * 7 + (size_t)k * 13) % 61);
}

/* A record with one tensor per dtype (shapes vary), a scalar, an empty one. */
static esg_record *every_dtype_record(int k)
{
	esg_record *r = esg_record_new();
	for (int d = 0; d < ESG_DTYPE_COUNT; d++) {
		char name[32];
		int64_t shape[3] = { 2, 3, d + 1 };
		snprintf(name, sizeof name, "t_%s", esg_dtype_name((esg_dtype)d));
		fill_tensor(esg_record_add(r, name, (esg_dtype)d, 3, shape), k + d);
	}
	int64_t zero[2] = { 4, 0 };
	fill_tensor(esg_record_add(r, "scalar", ESG_F64, 0, NULL), k);
	esg_record_add(r, "empty", ESG_F32, 2, zero);
	esg_meta_setf(r, "esg.seed", "%d", k);
	esg_meta_set(r, "esg.source", "sub-01 \"quoted\" \\ ünïcødé\ttab");
	esg_meta_set(r, "esg.args", "[\"esg-load\",\"-o\",\"x.st.zst\"]");
	return r;
}

static int same_record(const esg_record *a, const esg_record *b)
{
	if (a->n_tensors != b->n_tensors)
		return 0;
	for (size_t i = 0; i < a->n_tensors; i++) {
		const esg_tensor *x = &a->tensors[i], *y = &b->tensors[i];
		if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->ndim != y->ndim ||
		    memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim) ||
		    memcmp(x->data, y->data, esg_tensor_nbytes(x)))
			return 0;
	}
	for (size_t i = 0; i < a->n_meta; i++) {
		const char *v = esg_meta_get(b, a->meta_keys[i]);
		if (!v || strcmp(v, a->meta_vals[i]))
			return 0;
	}
	return 1;
}

/* Write records to a memory stream. */
static char *write_stream(esg_record **recs, int n, int level, size_t *size)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, size);
	esg_writer *w = esg_writer_open(f, level);
	int rc = w ? 0 : -1;
	for (int i = 0; i < n && !rc; i++)
		rc = esg_writer_put(w, recs[i]);
	if (esg_writer_close(w) < 0)
		rc = -1;
	fclose(f);
	if (rc) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* Read every record of buf; returns the number read, -1 on error (message
 * in errbuf), and keeps the records when recs is given. */
static long read_stream(const void *buf, size_t size, esg_record **recs, int max, char *errbuf)
{
	static const char empty = 0;
	FILE *f = fmemopen(size ? (void *)buf : (void *)&empty, size ? size : 1, "rb");
	if (!size)
		fgetc(f);   /* fmemopen refuses size 0: consume the one byte */
	esg_reader *rd = esg_reader_open(f, "x.st.zst");
	esg_record *r;
	long n = 0;
	int rc;
	errbuf[0] = 0;
	while ((rc = esg_reader_next(rd, &r)) == 1) {
		if (recs && n < max)
			recs[n] = r;
		else
			esg_record_free(r);
		n++;
	}
	if (rc < 0) {
		snprintf(errbuf, 1024, "%s", esg_error());
		n = -1;
	}
	if (rc == 0 && (long)esg_reader_count(rd) != n)
		n = -2;
	esg_reader_free(rd);
	fclose(f);
	return n;
}

/* A safetensors document from a header string (its length is the header
 * size unless hsize is given) and dlen data bytes. */
static unsigned char *make_doc(const char *json, uint64_t hsize, size_t dlen, size_t *size)
{
	size_t hn = strlen(json);
	*size = 8 + hn + dlen;
	unsigned char *d = calloc(1, *size);
	uint64_t v = hsize ? hsize : hn;
	for (int i = 0; i < 8; i++)
		d[i] = (unsigned char)(v >> (8 * i));
	memcpy(d + 8, json, hn);
	for (size_t i = 0; i < dlen; i++)
		d[8 + hn + i] = (unsigned char)i;
	return d;
}

/* One zstd frame with checksum and content size. */
static unsigned char *compress_frame(const void *src, size_t n, size_t *size)
{
	ZSTD_CCtx *c = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
	size_t cap = ZSTD_compressBound(n);
	unsigned char *out = malloc(cap);
	*size = ZSTD_compress2(c, out, cap, src, n);
	ZSTD_freeCCtx(c);
	return out;
}

/* The reader's message for a stream of one frame holding this document. */
static const char *doc_error(const char *json, uint64_t hsize, size_t dlen)
{
	static char err[1024];
	size_t dn, fn;
	unsigned char *d = make_doc(json, hsize, dlen, &dn);
	unsigned char *fr = compress_frame(d, dn, &fn);
	long n = read_stream(fr, fn, NULL, 0, err);
	free(d);
	free(fr);
	if (n >= 0)
		snprintf(err, sizeof err, "(no error, %ld records)", n);
	return err;
}

/* ok() that the message contains the phrase, and shows it. */
static void expect_error(const char *what, const char *msg, const char *phrase)
{
	if (!ok(strstr(msg, phrase) != NULL, "%s -> \"%s\"", what, msg))
		printf("#   wanted the phrase: %s\n", phrase);
}

/* ---- round trips ------------------------------------------------------ */

static void test_round_trip(void)
{
	esg_record *recs[3];
	for (int i = 0; i < 3; i++)
		recs[i] = every_dtype_record(i);
	size_t size;
	char *buf = write_stream(recs, 3, 0, &size);
	ok(buf != NULL, "write 3 records with every dtype (%zu bytes)", size);
	esg_record *back[3] = { 0 };
	char err[1024];
	long n = read_stream(buf, size, back, 3, err);
	ok(n == 3, "read back 3 records (%ld) %s", n, err);
	for (int i = 0; i < 3 && n == 3; i++) {
		ok(same_record(recs[i], back[i]), "record %d: every tensor, dtype, shape, byte and key equal", i + 1);
		ok(back[i]->n_meta == recs[i]->n_meta + 1 && !strcmp(esg_meta_get(back[i], "esg.format"), "1"),
		   "record %d: writer added esg.format = \"1\"", i + 1);
		ok(back[i]->tensors[ESG_DTYPE_COUNT].ndim == 0 && esg_tensor_numel(&back[i]->tensors[ESG_DTYPE_COUNT]) == 1,
		   "record %d: scalar kept rank 0", i + 1);
	}
	for (int d = 0; d < ESG_DTYPE_COUNT && n == 3; d++) {
		const esg_tensor *t = &back[1]->tensors[d];
		ok(t->dtype == (esg_dtype)d && t->shape[2] == d + 1, "dtype %s round trip", esg_dtype_name((esg_dtype)d));
	}
	for (int i = 0; i < 3; i++) {
		esg_record_free(recs[i]);
		esg_record_free(back[i]);
	}
	free(buf);

	/* every level gives the same records; level out of range refused */
	esg_record *r = every_dtype_record(7);
	char *b1 = write_stream(&r, 1, 19, &size);
	n = read_stream(b1, size, back, 1, err);
	ok(n == 1 && same_record(r, back[0]), "level 19 round trip");
	esg_record_free(back[0]);
	free(b1);
	ok(esg_writer_open(stdout, 99) == NULL && strstr(esg_error(), "out of range"),
	   "level 99 refused: %s", esg_error());
	esg_record_free(r);
}

static void test_big_record(void)
{
	/* bigger than the reader's input buffer and zstd's block size */
	esg_record *r = esg_record_new();
	int64_t shape[2] = { 1000, 1000 };
	esg_tensor *t = esg_record_add(r, "image", ESG_F32, 2, shape);
	float *v = t->data;
	uint32_t s = 1;
	for (int i = 0; i < 1000000; i++) {
		s = s * 1664525u + 1013904223u;
		v[i] = (float)(s >> 8) / 16777216.0f;
	}
	esg_record *recs[2] = { r, r };
	size_t size;
	char *buf = write_stream(recs, 2, 1, &size);
	esg_record *back[2] = { 0 };
	char err[1024];
	long n = read_stream(buf, size, back, 2, err);
	ok(n == 2 && same_record(r, back[0]) && same_record(r, back[1]),
	   "two 4 MB records of noise round trip (%zu compressed bytes)", size);
	esg_record_free(back[0]);
	esg_record_free(back[1]);
	free(buf);
	esg_record_free(r);
}

static void test_encode_layout(void)
{
	esg_record *r = esg_record_new();
	int64_t shape[1] = { 3 };
	esg_record_add(r, "b", ESG_U8, 1, shape);
	esg_record_add(r, "a", ESG_I16, 1, shape);
	esg_meta_set(r, "esg.format", "1");
	size_t n;
	unsigned char *d = esg_safetensors_encode(r, &n);
	uint64_t hn = 0;
	for (int i = 7; i >= 0; i--)
		hn = hn << 8 | d[i];
	ok(hn % 8 == 0 && n == 8 + hn + 9, "header padded to a multiple of 8 (%llu), data follows (%zu bytes)",
	   (unsigned long long)hn, n);
	const char *want = "{\"__metadata__\":{\"esg.format\":\"1\"},"
			   "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
			   "\"a\":{\"dtype\":\"I16\",\"shape\":[3],\"data_offsets\":[3,9]}}";
	ok(hn >= strlen(want) && !memcmp(d + 8, want, strlen(want)),
	   "header JSON is metadata first, then tensors in record order with contiguous offsets: %.*s",
	   (int)hn, (const char *)d + 8);
	ok(d[8 + hn - 1] == ' ' || d[8 + hn - 1] == '}', "padding is spaces");
	esg_record *b = esg_safetensors_decode(d, n);
	ok(b && b->n_meta == 1 && same_record(r, b), "decode(encode(r)) == r, esg.format not doubled");
	esg_record_free(b);
	free(d);

	/* decode orders tensors by offset, whatever the JSON order */
	const char *js = "{\"second\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
			 "\"first\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
	d = make_doc(js, 0, 4, &n);
	b = esg_safetensors_decode(d, n);
	ok(b && b->n_tensors == 2 && !strcmp(b->tensors[0].name, "first") &&
	   ((unsigned char *)b->tensors[1].data)[1] == 3, "tensors come back in data-offset order");
	ok(b && b->n_meta == 0, "a document without __metadata__ (no esg.format) is accepted");
	esg_record_free(b);
	free(d);

	/* names the encoder must refuse */
	esg_record *bad = esg_record_new();
	esg_record_add(bad, "__metadata__", ESG_U8, 1, shape);
	ok(!esg_safetensors_encode(bad, &n) && strstr(esg_error(), "reserved"),
	   "tensor named __metadata__ refused: %s", esg_error());
	esg_record_free(bad);
	bad = esg_record_new();
	esg_meta_set(bad, "esg.source", "bad \xff utf-8");
	ok(!esg_safetensors_encode(bad, &n) && strstr(esg_error(), "UTF-8"),
	   "invalid UTF-8 metadata refused: %s", esg_error());
	esg_record_free(bad);
	bad = esg_record_new();
	esg_meta_set(bad, "esg.format", "2");
	ok(!esg_safetensors_encode(bad, &n) && strstr(esg_error(), "this writer writes version 1"),
	   "a record claiming format 2 is not written as version 1: %s", esg_error());
	esg_record_free(bad);
	esg_record_free(r);
}

static void test_stream_edges(void)
{
	char err[1024];
	esg_record *r = every_dtype_record(1);
	size_t size;
	char *buf = write_stream(&r, 1, 0, &size);

	ok(read_stream("", 0, NULL, 0, err) == 0, "empty input: 0 records, no error (esg_reader_count() == 0)");
	size_t zn;
	char *zero = write_stream(NULL, 0, 0, &zn);
	ok(zero && zn == 0, "a writer closed with no records writes nothing");
	free(zero);

	/* a skippable frame before and between records is ignored */
	unsigned char skip[12] = { 0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 'e', 's', 'g', '!' };
	size_t n2 = sizeof skip * 2 + size * 2;
	unsigned char *two = malloc(n2);
	memcpy(two, skip, sizeof skip);
	memcpy(two + sizeof skip, buf, size);
	memcpy(two + sizeof skip + size, skip, sizeof skip);
	memcpy(two + 2 * sizeof skip + size, buf, size);
	ok(read_stream(two, n2, NULL, 0, err) == 2, "skippable frames are skipped %s", err);
	read_stream(two, 6, NULL, 0, err);
	expect_error("cut inside a skippable frame's header", err, "record 1: truncated skippable frame header");
	read_stream(two, 10, NULL, 0, err);
	expect_error("cut inside a skippable frame", err, "record 1: truncated skippable frame (2 bytes missing)");
	read_stream(two, sizeof skip + 6, NULL, 0, err);
	expect_error("cut after a skippable frame", err, "record 1: truncated frame");
	free(two);

	/* a frame without a content size (zstd < pipe) is accepted */
	size_t dn;
	unsigned char *d = esg_safetensors_encode(r, &dn);
	ZSTD_CCtx *c = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
	unsigned char *fr = malloc(ZSTD_compressBound(dn) + 64);
	ZSTD_outBuffer out = { fr, ZSTD_compressBound(dn) + 64, 0 };
	ZSTD_inBuffer in = { d, dn, 0 };
	size_t zr = ZSTD_compressStream2(c, &out, &in, ZSTD_e_end);
	ZSTD_freeCCtx(c);
	ok(zr == 0 && ZSTD_getFrameContentSize(fr, out.pos) == ZSTD_CONTENTSIZE_UNKNOWN,
	   "built a frame with no content size");
	esg_record *back = NULL;
	ok(read_stream(fr, out.pos, &back, 1, err) == 1 && same_record(r, back),
	   "frame with no content size and no checksum reads back %s", err);
	esg_record_free(back);
	/* ... and the record limit still holds for it */
	uint64_t old = esg_stream_max_record;
	esg_stream_max_record = 1000;
	ok(read_stream(fr, out.pos, NULL, 0, err) < 0, "unknown-size frame over the record limit fails");
	expect_error("unknown-size frame over the limit", err, "exceeds the 1000-byte limit");
	esg_stream_max_record = old;
	free(fr);
	free(d);

	/* the reader stays failed after an error */
	FILE *f = fmemopen(buf, size / 2, "rb");
	esg_reader *rd = esg_reader_open(f, "half");
	esg_record *x;
	ok(esg_reader_next(rd, &x) < 0 && esg_reader_next(rd, &x) < 0 && x == NULL,
	   "errors are sticky: %s", esg_error());
	esg_reader_free(rd);
	fclose(f);

	/* write failures reach the caller */
	f = fopen("/dev/full", "wb");
	if (f) {
		esg_writer *w = esg_writer_open(f, 0);
		int rc = esg_writer_put(w, r);
		rc |= esg_writer_close(w);
		ok(rc < 0 && strstr(esg_error(), "No space"), "writing to /dev/full fails: %s", esg_error());
		fclose(f);
	}
	free(buf);
	esg_record_free(r);
}

/* ---- invalid input ---------------------------------------------------- */

#define T1 "\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"

static void test_invalid_frames(void)
{
	char err[1024];
	esg_record *recs[2] = { every_dtype_record(1), every_dtype_record(2) };
	size_t size;
	char *buf = write_stream(recs, 2, 0, &size);
	size_t first = ZSTD_findFrameCompressedSize(buf, size);

	/* truncated in record 2, at several places */
	size_t cuts[] = { first + 2, first + 5, first + 12, first + (size - first) / 2, size - 1 };
	for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
		long n = read_stream(buf, cuts[i], NULL, 0, err);
		ok(n < 0 && strstr(err, "x.st.zst: record 2: truncated frame"),
		   "cut at byte %zu of %zu -> \"%s\"", cuts[i], size, err);
	}
	ok(read_stream(buf, first, NULL, 0, err) == 1, "cut exactly between frames: 1 record, no error");

	/* garbage, and uncompressed safetensors */
	const char *junk = "this is not a tensor stream at all";
	read_stream(junk, strlen(junk), NULL, 0, err);
	expect_error("garbage", err, "x.st.zst: record 1: not a zstd frame");
	size_t dn;
	unsigned char *d = esg_safetensors_encode(recs[0], &dn);
	read_stream(d, dn, NULL, 0, err);
	expect_error("uncompressed safetensors", err, "looks like an uncompressed safetensors file");
	free(d);
	/* garbage after a good record */
	char *tail = malloc(first + 7);
	memcpy(tail, buf, first);
	memcpy(tail + first, "GARBAGE", 7);
	read_stream(tail, first + 7, NULL, 0, err);
	expect_error("garbage after record 1", err, "record 2: not a zstd frame");
	free(tail);

	/* corrupt checksum, corrupt data */
	char *bad = malloc(size);
	memcpy(bad, buf, size);
	bad[first - 1] ^= 0x55;
	read_stream(bad, size, NULL, 0, err);
	expect_error("flipped checksum byte", err, "record 1: checksum mismatch");
	memcpy(bad, buf, size);
	for (size_t i = 20; i < first - 8; i += 7)
		bad[i] ^= 0xA5;
	ok(read_stream(bad, size, NULL, 0, err) < 0 && strstr(err, "record 1: "),
	   "scrambled frame body -> \"%s\"", err);
	free(bad);

	/* a frame header claiming 100 GiB of content */
	unsigned char huge[] = { 0x28, 0xB5, 0x2F, 0xFD, 0xC4, 0x00, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0 };
	read_stream(huge, sizeof huge, NULL, 0, err);
	expect_error("frame content size 100 GiB", err, "exceeds the 68719476736-byte record limit");
	free(buf);
	esg_record_free(recs[0]);
	esg_record_free(recs[1]);
}

static void test_invalid_documents(void)
{
	static const struct {
		const char *what, *json;
		uint64_t hsize;
		size_t dlen;
		const char *phrase;
	} cases[] = {
		{ "header bomb (100 MB header size)", "{}", 100000000, 0,
		  "safetensors header size 100000000 exceeds the limit of 16777216 bytes" },
		{ "header size past the document", "{}      ", 4000, 0, "runs past the end of the" },
		{ "header not JSON", "{\"t\":{\"dtype\":\"F32\",", 0, 0, "header is not valid JSON" },
		{ "header not an object", "[1,2,3] ", 0, 0, "does not start with '{'" },
		{ "junk after the header", "{}  x   ", 0, 0, "junk after the JSON header" },
		{ "invalid UTF-8", "{\"\xc3\x28\":1}", 0, 0, "not valid UTF-8" },
		{ "missing dtype", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "tensor 't': missing dtype" },
		{ "unknown dtype", "{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2,
		  "tensor 't': unknown dtype 'F8_E4M3'" },
		{ "dtype not a string", "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8,
		  "dtype is not a string" },
		{ "missing shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 0, 8, "missing shape" },
		{ "negative dimension", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 0, 24,
		  "tensor 't': negative dimension -3" },
		{ "fractional dimension", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 0, 8,
		  "other than a non-negative integer" },
		{ "9 dimensions", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
		  0, 1, "shape has 9 dimensions (limit 8)" },
		{ "missing data_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, 8, "missing data_offsets" },
		{ "data_offsets of 3 numbers", "{\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,1,2]}}",
		  0, 2, "data_offsets is not [BEGIN, END]" },
		{ "reversed data_offsets", "{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[5,2]}}", 0, 8,
		  "end before they begin" },
		{ "data_offsets out of range", "{" T1 "}", 0, 20, "run past the 20-byte data buffer" },
		{ "gap before a tensor",
		  "{\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 0, 4,
		  "data buffer bytes 0..2 belong to no tensor (gap before tensor 't')" },
		{ "gap between tensors",
		  "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
		  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}}", 0, 5, "bytes 2..3 belong to no tensor" },
		{ "overlapping tensors",
		  "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
		  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 0, 4,
		  "tensor 'b' overlaps tensor 'a'" },
		{ "trailing bytes", "{" T1 "}", 0, 30, "6 trailing bytes after the last tensor's data" },
		{ "data but no tensors", "{}", 0, 3, "3 bytes of data but no tensors" },
		{ "shape and offsets disagree", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}",
		  0, 20, "tensor 't': shape [2, 3] of F32 needs 24 bytes but data_offsets span 20" },
		{ "duplicate tensor names", "{" T1 "," T1 "}", 0, 48, "duplicate tensor name 't'" },
		{ "empty tensor name", "{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1,
		  "tensor name is empty" },
		{ "tensor entry not an object", "{\"t\":[1]}", 0, 0, "header entry is not a JSON object" },
		{ "non-string metadata", "{\"__metadata__\":{\"esg.seed\":42}}", 0, 0,
		  "metadata 'esg.seed' is not a string" },
		{ "metadata not an object", "{\"__metadata__\":[\"a\"]}", 0, 0, "__metadata__ is not a JSON object" },
		{ "duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, 0,
		  "duplicate metadata key 'k'" },
		{ "two __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, "duplicate __metadata__" },
		{ "NUL in a name", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1,
		  "holds a NUL character" },
		{ "unknown format version", "{\"__metadata__\":{\"esg.format\":\"2\"}}", 0, 0,
		  "unsupported stream format version '2' (this reader knows 1)" },
		{ "unknown format version 1.1", "{\"__metadata__\":{\"esg.format\":\"1.1\"}}", 0, 0,
		  "unsupported stream format version '1.1'" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *msg = doc_error(cases[i].json, cases[i].hsize, cases[i].dlen);
		ok(strncmp(msg, "x.st.zst: record 1: ", 20) == 0 && strstr(msg, cases[i].phrase),
		   "%s -> \"%s\"", cases[i].what, msg);
		if (!strstr(msg, cases[i].phrase))
			printf("#   wanted the phrase: %s\n", cases[i].phrase);
		/* and the same, through decode alone, without the prefix */
		size_t dn;
		unsigned char *d = make_doc(cases[i].json, cases[i].hsize, cases[i].dlen, &dn);
		esg_record *r = esg_safetensors_decode(d, dn);
		ok(!r && strstr(esg_error(), cases[i].phrase), "decode alone: %s", cases[i].what);
		esg_record_free(r);
		free(d);
	}
	/* accepted variants */
	const char *good[] = {
		"{\"__metadata__\":{\"k\":\"back\\\\u0000slash\"}," T1 "}",
		"{\"__metadata__\":{\"esg.format\":\"1\",\"esg.future\":\"x\"}," T1 "}",
		"{\"__metadata__\":null," T1 "}",
		"{" T1 "}\n\t  ",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24],\"extra\":1}}",
	};
	for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
		const char *msg = doc_error(good[i], 0, 24);
		ok(strstr(msg, "no error, 1 records") != NULL, "accepted variant %zu -> %s", i + 1, msg);
	}
	ok(!esg_safetensors_decode("\x02\0\0\0\0\0\0", 7) && strstr(esg_error(), "too short"),
	   "7-byte document -> %s", esg_error());
}

/* ---- helper modes for the Python cross-check ------------------------- */

static int write_fixture(const char *path)
{
	esg_record *r = every_dtype_record(3);
	FILE *f = fopen(path, "wb");
	esg_writer *w = f ? esg_writer_open(f, 0) : NULL;
	int rc = w ? esg_writer_put(w, r) : -1;
	rc |= esg_writer_close(w);
	if (f && fclose(f))
		rc = -1;
	esg_record_free(r);
	if (rc)
		fprintf(stderr, "test_stream: %s\n", esg_error());
	return rc ? 1 : 0;
}

/* "name dtype [shape] v v v ..." and "meta key=value" lines, in order. */
static int dump(const char *path)
{
	FILE *f = fopen(path, "rb");
	esg_reader *rd = f ? esg_reader_open(f, path) : NULL;
	esg_record *r;
	int rc;
	if (!rd) {
		fprintf(stderr, "test_stream: cannot open %s\n", path);
		return 1;
	}
	while ((rc = esg_reader_next(rd, &r)) == 1) {
		printf("record %zu\n", esg_reader_count(rd));
		for (size_t i = 0; i < r->n_meta; i++)
			printf("meta %s=%s\n", r->meta_keys[i], r->meta_vals[i]);
		for (size_t i = 0; i < r->n_tensors; i++) {
			const esg_tensor *t = &r->tensors[i];
			char s[200];
			esg_shape_str(t->ndim, t->shape, s, sizeof s);
			printf("tensor %s %s %s", t->name, esg_dtype_name(t->dtype), s);
			for (int64_t k = 0; k < esg_tensor_numel(t); k++)
				printf(" %.9g", esg_tensor_get(t, k));
			printf("\n");
		}
		esg_record_free(r);
	}
	if (rc < 0)
		fprintf(stderr, "test_stream: %s\n", esg_error());
	esg_reader_free(rd);
	fclose(f);
	return rc < 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--write-fixture"))
		return write_fixture(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "--dump"))
		return dump(argv[2]);
	test_round_trip();
	test_big_record();
	test_encode_layout();
	test_stream_edges();
	test_invalid_frames();
	test_invalid_documents();
	return tap_done();
}
