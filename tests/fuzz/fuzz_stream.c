/* fuzz_stream.c - libFuzzer target for the stream reader and the
 * safetensors decoder (`make fuzz`).  Besides "never crash", it checks one
 * property: whatever decodes re-encodes, and decodes again to the same
 * record (so the writer never produces what the reader refuses). */
#include "stream/stream.h"

#include <zstd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern uint64_t esg_stream_max_record;

static int same(const esg_record *a, const esg_record *b)
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

static void round_trip(const esg_record *r)
{
	size_t n;
	void *buf = esg_safetensors_encode(r, &n);
	if (!buf) {
		fprintf(stderr, "decoded record does not re-encode: %s\n", esg_error());
		abort();
	}
	esg_record *back = esg_safetensors_decode(buf, n);
	if (!back || !same(r, back)) {
		fprintf(stderr, "re-encoded record differs: %s\n", back ? "" : esg_error());
		abort();
	}
	esg_record_free(back);
	free(buf);
}

/* All records of a stream in memory; the records are round-tripped. */
static void read_all(const void *buf, size_t size)
{
	FILE *f = fmemopen((void *)buf, size, "rb");
	if (!f)
		return;
	esg_reader *rd = esg_reader_open(f, "fuzz");
	esg_record *rec;
	while (rd && esg_reader_next(rd, &rec) == 1) {
		round_trip(rec);
		esg_record_free(rec);
	}
	esg_reader_free(rd);
	fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the fuzzer's memory limit is 2 GB; a record is held twice */
	esg_stream_max_record = 64u << 20;
	esg_record *r = esg_safetensors_decode(data, size);
	if (r)
		round_trip(r);
	esg_record_free(r);
	if (size == 0)
		return 0;
	/* the input as a stream, then as the content of one valid frame (so
	 * mutations reach the document checks through the reader too) */
	read_all(data, size);
	size_t cap = ZSTD_compressBound(size);
	void *frame = malloc(cap);
	size_t n = frame ? ZSTD_compress(frame, cap, data, size, 1) : 0;
	if (frame && !ZSTD_isError(n))
		read_all(frame, n);
	free(frame);
	return 0;
}
