/* record.c - records: named tensors plus string metadata. */
#include "stream/stream.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

esg_record *esg_record_new(void)
{
	esg_record *r = calloc(1, sizeof *r);
	if (!r)
		esg_set_error("out of memory");
	return r;
}

static void tensor_clear(esg_tensor *t)
{
	free(t->name);
	free(t->data);
}

void esg_record_free(esg_record *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_tensors; i++)
		tensor_clear(&r->tensors[i]);
	for (size_t i = 0; i < r->n_meta; i++) {
		free(r->meta_keys[i]);
		free(r->meta_vals[i]);
	}
	free(r->tensors);
	free(r->meta_keys);
	free(r->meta_vals);
	free(r);
}

esg_tensor *esg_record_find(const esg_record *r, const char *name)
{
	for (size_t i = 0; i < r->n_tensors; i++)
		if (strcmp(r->tensors[i].name, name) == 0)
			return &r->tensors[i];
	return NULL;
}

esg_tensor *esg_record_get(const esg_record *r, const char *name)
{
	esg_tensor *t = esg_record_find(r, name);
	if (t)
		return t;
	char have[512] = "";
	size_t used = 0;
	for (size_t i = 0; i < r->n_tensors && used < sizeof have; i++)
		used += (size_t)snprintf(have + used, sizeof have - used, "%s%s", i ? ", " : "",
					 r->tensors[i].name);
	esg_set_error("record has no tensor '%s' (has: %s)", name, r->n_tensors ? have : "none");
	return NULL;
}

esg_tensor *esg_record_add(esg_record *r, const char *name, esg_dtype dtype,
			   int ndim, const int64_t *shape)
{
	if (!name || !*name) {
		esg_set_error("tensor name is empty");
		return NULL;
	}
	if (esg_record_find(r, name)) {
		esg_set_error("duplicate tensor name '%s'", name);
		return NULL;
	}
	if (ndim < 0 || ndim > ESG_MAX_DIMS || (unsigned)dtype >= ESG_DTYPE_COUNT) {
		esg_set_error("tensor '%s': bad rank %d or dtype", name, ndim);
		return NULL;
	}
	esg_tensor t = { .dtype = dtype, .ndim = ndim };
	size_t bytes = esg_dtype_size(dtype);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (shape[i] && bytes > SIZE_MAX / 2 / (size_t)shape[i])) {
			esg_set_error("tensor '%s': bad dimension %lld", name, (long long)shape[i]);
			return NULL;
		}
		t.shape[i] = shape[i];
		bytes *= (size_t)shape[i];
	}
	esg_tensor *grown = realloc(r->tensors, (r->n_tensors + 1) * sizeof *grown);
	if (!grown) {
		esg_set_error("out of memory");
		return NULL;
	}
	r->tensors = grown;
	t.name = strdup(name);
	t.data = calloc(bytes ? bytes : 1, 1);
	if (!t.name || !t.data) {
		tensor_clear(&t);
		esg_set_error("out of memory allocating tensor '%s' (%zu bytes)", name, bytes);
		return NULL;
	}
	r->tensors[r->n_tensors] = t;
	return &r->tensors[r->n_tensors++];
}

esg_tensor *esg_record_add_f32(esg_record *r, const char *name, int ndim,
			       const int64_t *shape, const float *data)
{
	esg_tensor *t = esg_record_add(r, name, ESG_F32, ndim, shape);
	if (t && data)
		memcpy(t->data, data, esg_tensor_nbytes(t));
	return t;
}

int esg_record_remove(esg_record *r, const char *name)
{
	esg_tensor *t = esg_record_find(r, name);
	if (!t)
		return esg_set_error("record has no tensor '%s'", name);
	size_t i = (size_t)(t - r->tensors);
	tensor_clear(t);
	memmove(&r->tensors[i], &r->tensors[i + 1], (r->n_tensors - i - 1) * sizeof *t);
	r->n_tensors--;
	return 0;
}

esg_record *esg_record_copy(const esg_record *r)
{
	esg_record *c = esg_record_new();
	if (!c)
		return NULL;
	for (size_t i = 0; i < r->n_tensors; i++) {
		const esg_tensor *t = &r->tensors[i];
		esg_tensor *d = esg_record_add(c, t->name, t->dtype, t->ndim, t->shape);
		if (!d)
			goto fail;
		memcpy(d->data, t->data, esg_tensor_nbytes(t));
	}
	for (size_t i = 0; i < r->n_meta; i++)
		if (esg_meta_set(c, r->meta_keys[i], r->meta_vals[i]) != 0)
			goto fail;
	return c;
fail:
	esg_record_free(c);
	return NULL;
}

static long meta_index(const esg_record *r, const char *key)
{
	for (size_t i = 0; i < r->n_meta; i++)
		if (strcmp(r->meta_keys[i], key) == 0)
			return (long)i;
	return -1;
}

int esg_meta_set(esg_record *r, const char *key, const char *value)
{
	char *v = strdup(value);
	if (!v)
		return esg_set_error("out of memory");
	long i = meta_index(r, key);
	if (i >= 0) {
		free(r->meta_vals[i]);
		r->meta_vals[i] = v;
		return 0;
	}
	char **keys = realloc(r->meta_keys, (r->n_meta + 1) * sizeof *keys);
	if (keys)
		r->meta_keys = keys;
	char **vals = realloc(r->meta_vals, (r->n_meta + 1) * sizeof *vals);
	if (vals)
		r->meta_vals = vals;
	char *k = strdup(key);
	if (!keys || !vals || !k) {
		free(v);
		free(k);
		return esg_set_error("out of memory");
	}
	r->meta_keys[r->n_meta] = k;
	r->meta_vals[r->n_meta++] = v;
	return 0;
}

int esg_meta_setf(esg_record *r, const char *key, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return esg_set_error("out of memory");
	int rc = esg_meta_set(r, key, s);
	free(s);
	return rc;
}

const char *esg_meta_get(const esg_record *r, const char *key)
{
	long i = meta_index(r, key);
	return i >= 0 ? r->meta_vals[i] : NULL;
}

int esg_meta_remove(esg_record *r, const char *key)
{
	long i = meta_index(r, key);
	if (i < 0)
		return 0;
	free(r->meta_keys[i]);
	free(r->meta_vals[i]);
	size_t rest = r->n_meta - (size_t)i - 1;
	memmove(&r->meta_keys[i], &r->meta_keys[i + 1], rest * sizeof(char *));
	memmove(&r->meta_vals[i], &r->meta_vals[i + 1], rest * sizeof(char *));
	r->n_meta--;
	return 0;
}

int esg_meta_set_doubles(esg_record *r, const char *key, const double *v, int n)
{
	/* %.17g round-trips every double exactly */
	size_t cap = (size_t)n * 26 + 3, used = 0;
	char *s = malloc(cap);
	if (!s)
		return esg_set_error("out of memory");
	used += (size_t)snprintf(s, cap, "[");
	for (int i = 0; i < n; i++)
		used += (size_t)snprintf(s + used, cap - used, "%s%.17g", i ? "," : "", v[i]);
	snprintf(s + used, cap - used, "]");
	int rc = esg_meta_set(r, key, s);
	free(s);
	return rc;
}

int esg_meta_get_doubles(const esg_record *r, const char *key, double *v, int max)
{
	const char *s = esg_meta_get(r, key);
	if (!s)
		return 0;
	cJSON *a = cJSON_Parse(s);
	int n = 0;
	if (!cJSON_IsArray(a)) {
		cJSON_Delete(a);
		return esg_set_error("metadata '%s' is not a JSON array of numbers: %.60s", key, s);
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, a) {
		if (!cJSON_IsNumber(e) || n >= max) {
			cJSON_Delete(a);
			return esg_set_error("metadata '%s': expected at most %d numbers", key, max);
		}
		v[n++] = e->valuedouble;
	}
	cJSON_Delete(a);
	return n;
}

int esg_meta_set_affine(esg_record *r, const double affine[16])
{
	return esg_meta_set_doubles(r, "esg.affine", affine, 16);
}

int esg_meta_get_affine(const esg_record *r, double affine[16])
{
	if (!esg_meta_get(r, "esg.affine"))
		return 1;
	int n = esg_meta_get_doubles(r, "esg.affine", affine, 16);
	if (n < 0)
		return -1;
	if (n != 16)
		return esg_set_error("metadata 'esg.affine' has %d numbers, expected 16", n);
	return 0;
}

int esg_meta_stamp(esg_record *r, const char *tool, int argc, char **argv)
{
	cJSON *a = cJSON_CreateArray();
	for (int i = 0; a && i < argc; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(argv[i]));
	char *args = a ? cJSON_PrintUnformatted(a) : NULL;
	cJSON_Delete(a);
	if (!args)
		return esg_set_error("out of memory");
	int rc = esg_meta_set(r, "esg.format", ESG_FORMAT_VERSION);
	rc |= esg_meta_setf(r, "esg.producer", "%s %s", tool, ESG_VERSION);
	rc |= esg_meta_set(r, "esg.args", args);
	free(args);
	return rc ? -1 : 0;
}
