/* baseline.c - reference inputs for IG, DeepLift, GradientShap (attr.h). */
#include "attr/attr.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int parse_num(const char *s, const char *spec, double *v, char **end)
{
	errno = 0;
	*v = strtod(s, end);
	if (errno || *end == s || !isfinite(*v))
		return esg_set_error("--baseline '%s': '%s' is not a finite number", spec, s);
	return 0;
}

/* Load TENSOR (default "image") from the first record of a stream. */
static esg_tensor *load_file(const char *path, const char *name, const char *spec)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		esg_set_error("--baseline '%s': cannot open '%s': %s", spec, path, strerror(errno));
		return NULL;
	}
	esg_reader *rd = esg_reader_open(f, path);
	esg_record *r = NULL;
	esg_tensor *out = NULL;
	int got = rd ? esg_reader_next(rd, &r) : -1;
	if (got == 0)
		esg_set_error("--baseline '%s': '%s' holds no record", spec, path);
	if (got == 1) {
		esg_tensor *t = esg_record_get(r, name);
		float *d = t ? esg_tensor_to_f32(t) : NULL;
		if (d && (out = calloc(1, sizeof *out))) {
			*out = *t;
			out->name = strdup(name);
			out->dtype = ESG_F32;
			out->data = d;
		} else {
			free(d);
			if (t)
				esg_set_error("out of memory");
		}
	}
	if (!out)
		esg_prefix_error("--baseline '%s'", spec);
	esg_record_free(r);
	esg_reader_free(rd);
	fclose(f);
	return out;
}

int esg_baseline_parse(const char *spec, esg_baseline *b)
{
	memset(b, 0, sizeof *b);
	b->k = 1;
	char *end;
	if (strcmp(spec, "zero") == 0) {
		b->kind = ESG_BL_ZERO;
	} else if (strncmp(spec, "const:", 6) == 0) {
		b->kind = ESG_BL_CONST;
		if (parse_num(spec + 6, spec, &b->a, &end))
			return -1;
		if (*end)
			return esg_set_error("--baseline '%s': want const:V", spec);
	} else if (strncmp(spec, "blur:", 5) == 0) {
		b->kind = ESG_BL_BLUR;
		if (parse_num(spec + 5, spec, &b->a, &end))
			return -1;
		if (*end || !(b->a > 0) || b->a > 1e4)
			return esg_set_error("--baseline '%s': want blur:SIGMA with SIGMA in (0, 10000] voxels", spec);
	} else if (strncmp(spec, "uniform:", 8) == 0) {
		b->kind = ESG_BL_UNIFORM;
		if (parse_num(spec + 8, spec, &b->a, &end))
			return -1;
		if (*end != ',')
			return esg_set_error("--baseline '%s': want uniform:LO,HI[:K]", spec);
		if (parse_num(end + 1, spec, &b->b, &end))
			return -1;
		if (*end == ':') {
			char *e2;
			long k = strtol(end + 1, &e2, 10);
			if (e2 == end + 1 || *e2 || k < 1 || k > 10000)
				return esg_set_error("--baseline '%s': K must be an integer in [1, 10000]", spec);
			b->k = (int)k;
		} else if (*end) {
			return esg_set_error("--baseline '%s': want uniform:LO,HI[:K]", spec);
		}
		if (b->b < b->a)
			return esg_set_error("--baseline '%s': HI is below LO", spec);
	} else if (strncmp(spec, "file:", 5) == 0) {
		b->kind = ESG_BL_FILE;
		char *path = strdup(spec + 5);
		if (!path)
			return esg_set_error("out of memory");
		/* file:PATH:TENSOR -- the last colon, if what follows looks like a name */
		char *colon = strrchr(path, ':');
		const char *name = "image";
		if (colon && colon[1] && !strchr(colon + 1, '/')) {
			*colon = 0;
			name = colon + 1;
		}
		if (!path[0]) {
			free(path);
			return esg_set_error("--baseline '%s': want file:PATH[:TENSOR]", spec);
		}
		b->file = load_file(path, name, spec);
		free(path);
		if (!b->file)
			return -1;
	} else {
		return esg_set_error("--baseline '%s': unknown baseline (zero, const:V, blur:SIGMA, "
				     "uniform:LO,HI[:K], file:PATH[:TENSOR])", spec);
	}
	b->spec = strdup(spec);
	return 0;
}

void esg_baseline_clear(esg_baseline *b)
{
	if (b->file) {
		free(b->file->name);
		free(b->file->data);
		free(b->file);
	}
	free(b->spec);
	memset(b, 0, sizeof *b);
}

static int push(float ***list, int *n, float *buf)
{
	float **nl = realloc(*list, (size_t)(*n + 1) * sizeof *nl);
	if (!nl) {
		free(buf);
		return esg_set_error("out of memory");
	}
	nl[(*n)++] = buf;
	*list = nl;
	return 0;
}

static int build_file(const esg_baseline *b, int ndim, const int64_t *shape, size_t numel,
		      float ***list, int *n)
{
	const esg_tensor *t = b->file;
	size_t item = numel / (size_t)shape[0];
	int same_item = t->ndim == ndim;
	for (int d = 1; d < ndim && same_item; d++)
		same_item = t->shape[d] == shape[d];
	char ts[128], xs[128];
	esg_shape_str(t->ndim, t->shape, ts, sizeof ts);
	esg_shape_str(ndim, shape, xs, sizeof xs);
	if (!same_item)
		return esg_set_error("--baseline '%s': tensor %s does not fit image %s", b->spec, ts, xs);
	const float *src = t->data;
	if (t->shape[0] == shape[0] || t->shape[0] == 1) {
		/* one baseline: the same shape, or one item broadcast over N */
		float *buf = malloc(numel * sizeof *buf);
		if (!buf)
			return esg_set_error("out of memory");
		for (int64_t i = 0; i < shape[0]; i++)
			memcpy(buf + i * item, src + (t->shape[0] == 1 ? 0 : i * item), item * sizeof *buf);
		return push(list, n, buf);
	}
	if (shape[0] != 1)
		return esg_set_error("--baseline '%s': tensor %s does not fit image %s "
				     "(a distribution [K, C, ...] needs a one-item image)", b->spec, ts, xs);
	for (int64_t k = 0; k < t->shape[0]; k++) {
		float *buf = malloc(item * sizeof *buf);
		if (!buf)
			return esg_set_error("out of memory");
		memcpy(buf, src + k * item, item * sizeof *buf);
		if (push(list, n, buf))
			return -1;
	}
	return 0;
}

int esg_baseline_build(const esg_baseline *b, int index, const float *x,
		       int ndim, const int64_t *shape, uint64_t seed,
		       uint64_t record, float ***list, int *n)
{
	size_t numel = 1;
	for (int d = 0; d < ndim; d++)
		numel *= (size_t)shape[d];
	if (b->kind == ESG_BL_FILE)
		return build_file(b, ndim, shape, numel, list, n);
	esg_rng rng;
	esg_rng_init(&rng, seed, record, ESG_STREAM_BASELINE + (uint64_t)index);
	for (int k = 0; k < b->k; k++) {
		float *buf = calloc(numel ? numel : 1, sizeof *buf);
		if (!buf)
			return esg_set_error("out of memory");
		switch (b->kind) {
		case ESG_BL_CONST:
			for (size_t i = 0; i < numel; i++)
				buf[i] = (float)b->a;
			break;
		case ESG_BL_BLUR:
			memcpy(buf, x, numel * sizeof *buf);
			if (esg_blur(buf, ndim, shape, b->a)) {
				free(buf);
				return -1;
			}
			break;
		case ESG_BL_UNIFORM:
			for (size_t i = 0; i < numel; i++)
				buf[i] = (float)(b->a + (b->b - b->a) * esg_rng_uniform(&rng));
			break;
		default:
			break;
		}
		if (push(list, n, buf))
			return -1;
	}
	return 0;
}
