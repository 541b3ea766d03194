/* stream.h - libesg's base (lib/stream/): the tensor stream, records, tensors and errors.
 *
 * Conventions (the whole library follows them):
 *  - The library never prints and never exits.  A function that can fail
 *    returns -1 (int) or NULL (pointer) and leaves a one-line message,
 *    without trailing newline, retrievable with esg_error().  0 means ok.
 *  - Results documented "new" are owned by the caller and freed with the
 *    matching *_free function, which accepts NULL.  "Borrowed" pointers
 *    live as long as their owner.
 */
#ifndef ESG_H
#define ESG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ESG_VERSION "0.1.0"
/* Version of the stream format written in every record's esg.format key. */
#define ESG_FORMAT_VERSION "1"
#define ESG_MAX_DIMS 8
/* A safetensors header larger than this is refused (header-bomb guard). */
#define ESG_MAX_HEADER_BYTES (16u << 20)

/* ---- errors ---------------------------------------------------------- */

/* The message of the last failure in this thread ("" if none). */
const char *esg_error(void);
/* Set the message (printf-style); always returns -1 for tail calls. */
int esg_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefix the current message with "<prefix>: "; returns -1. */
int esg_prefix_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- tensors --------------------------------------------------------- */

typedef enum esg_dtype {
	ESG_F32, ESG_F64, ESG_F16, ESG_BF16, ESG_I64, ESG_I32, ESG_I16,
	ESG_I8, ESG_U8, ESG_BOOL, ESG_DTYPE_COUNT
} esg_dtype;

/* safetensors spelling ("F32", ...) and element size in bytes. */
const char *esg_dtype_name(esg_dtype t);
size_t esg_dtype_size(esg_dtype t);
/* Parse a safetensors dtype name; -1 (with error) if unknown. */
int esg_dtype_parse(const char *name, esg_dtype *out);

typedef struct esg_tensor {
	char *name;               /* owned */
	esg_dtype dtype;
	int ndim;                 /* 0 .. ESG_MAX_DIMS; 0 is a scalar */
	int64_t shape[ESG_MAX_DIMS];
	void *data;               /* owned, numel * dtype size bytes, C order, little-endian */
} esg_tensor;

int64_t esg_tensor_numel(const esg_tensor *t);
size_t esg_tensor_nbytes(const esg_tensor *t);
/* New float32 copy of the data (any dtype converted). */
float *esg_tensor_to_f32(const esg_tensor *t);
/* Convert element i to double (any dtype). */
double esg_tensor_get(const esg_tensor *t, int64_t i);
/* How many elements are NaN or +-Inf (0 for integer dtypes). */
int64_t esg_tensor_count_nonfinite(const esg_tensor *t);
int64_t esg_f32_count_nonfinite(const float *v, int64_t n);
/* "[1, 1, 64, 64, 64]" into buf (always NUL-terminated). */
void esg_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* ---- records --------------------------------------------------------- */

/* One record: named tensors (in insertion order) and string metadata. */
typedef struct esg_record {
	size_t n_tensors;
	esg_tensor *tensors;
	size_t n_meta;
	char **meta_keys;
	char **meta_vals;
} esg_record;

esg_record *esg_record_new(void);                         /* new */
void esg_record_free(esg_record *r);
/* Add a zero-filled tensor; fails if the name exists or the shape is bad.
 * Returns a borrowed pointer (valid until the record's tensor list changes). */
esg_tensor *esg_record_add(esg_record *r, const char *name, esg_dtype dtype,
			   int ndim, const int64_t *shape);
/* Add a float32 tensor copying data (numel floats). Borrowed result. */
esg_tensor *esg_record_add_f32(esg_record *r, const char *name, int ndim,
			       const int64_t *shape, const float *data);
/* Borrowed; NULL (no error set) if absent. */
esg_tensor *esg_record_find(const esg_record *r, const char *name);
/* Find or fail with "record has no tensor 'NAME' (has: image, mask)". */
esg_tensor *esg_record_get(const esg_record *r, const char *name);
int esg_record_remove(esg_record *r, const char *name);
/* New deep copy. */
esg_record *esg_record_copy(const esg_record *r);

/* Metadata: set (replacing) / get (borrowed, NULL if absent) / remove. */
int esg_meta_set(esg_record *r, const char *key, const char *value);
int esg_meta_setf(esg_record *r, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *esg_meta_get(const esg_record *r, const char *key);
int esg_meta_remove(esg_record *r, const char *key);
/* esg.affine: 4x4 row-major voxel->world (RAS+ mm), stored as a JSON array
 * of 16 numbers.  get returns 0 if present, 1 if absent, -1 if malformed. */
int esg_meta_set_affine(esg_record *r, const double affine[16]);
int esg_meta_get_affine(const esg_record *r, double affine[16]);
/* Numeric JSON arrays ("[1,2,3]") in metadata: set, and get up to max values
 * (returns the count, or -1 if malformed; 0 if absent). */
int esg_meta_set_doubles(esg_record *r, const char *key, const double *v, int n);
int esg_meta_get_doubles(const esg_record *r, const char *key, double *v, int max);
/* Record who made it: esg.format, esg.producer = "TOOL VERSION",
 * esg.args = JSON array of argv. */
int esg_meta_stamp(esg_record *r, const char *tool, int argc, char **argv);

/* ---- the stream: zstd frames, each one safetensors document ---------- */

typedef struct esg_reader esg_reader;
typedef struct esg_writer esg_writer;

/* Read records from f (not closed by the reader); name is used in messages
 * ("stdin", a file name). */
esg_reader *esg_reader_open(FILE *f, const char *name);            /* new */
/* Next record: 1 and *out = new record; 0 at clean end of stream;
 * -1 on any error (truncated frame, bad header, ...). */
int esg_reader_next(esg_reader *rd, esg_record **out);
/* Number of records returned so far. */
size_t esg_reader_count(const esg_reader *rd);
void esg_reader_free(esg_reader *rd);

/* Write records to f (not closed by the writer). level: zstd level, 0 = default. */
esg_writer *esg_writer_open(FILE *f, int level);                   /* new */
int esg_writer_put(esg_writer *w, const esg_record *r);
/* Flush; returns -1 if any write failed.  Frees w. */
int esg_writer_close(esg_writer *w);

/* Encode / decode one safetensors document in memory (used by the stream,
 * the fuzzer and the tests).  encode returns a new malloc'ed buffer. */
void *esg_safetensors_encode(const esg_record *r, size_t *size);
esg_record *esg_safetensors_decode(const void *buf, size_t size);  /* new */

#endif
