/* numeric.c - numerical helpers of the attribution methods (no libtorch):
 * PRNG, quadrature, Gaussian blur, SHA-256.  See attr.h. */
#include "attr/attr.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- PRNG -------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *k)
{
	uint64_t z = (*k += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void esg_rng_init(esg_rng *r, uint64_t seed, uint64_t record, uint64_t stream)
{
	uint64_t k = seed ^ (record * 0xD1B54A32D192ED03ull) ^ (stream * 0x8CB92BA72F3D8DD7ull);
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&k);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t esg_rng_next(esg_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double esg_rng_uniform(esg_rng *r)
{
	return (double)(esg_rng_next(r) >> 11) * 0x1.0p-53;
}

double esg_rng_normal(esg_rng *r)
{
	double u1 = esg_rng_uniform(r);
	double u2 = esg_rng_uniform(r);
	return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

/* ---- quadrature ---------------------------------------------------------- */

int esg_gauss_legendre(int n, double *x, double *w)
{
	if (n < 1 || n > 100000)
		return esg_set_error("Gauss-Legendre order %d out of range [1, 100000]", n);
	for (int i = 0; i < (n + 1) / 2; i++) {
		/* Tricomi's guess for the i-th largest root, then Newton on P_n. */
		double z = cos(M_PI * (i + 0.75) / (n + 0.5)), pp = 1;
		for (int it = 0; it < 100; it++) {
			double p1 = 1, p2 = 0;
			for (int j = 1; j <= n; j++) {
				double p3 = p2;
				p2 = p1;
				p1 = ((2.0 * j - 1) * z * p2 - (j - 1.0) * p3) / j;
			}
			/* P_n'(z) from P_n and P_{n-1} */
			pp = n * (z * p1 - p2) / (z * z - 1);
			double dz = p1 / pp;
			z -= dz;
			if (fabs(dz) < 1e-16)
				break;
		}
		if (n == 1) { /* z = 0: the formula for pp divides 0 by -1 */
			z = 0;
			pp = 1;
		}
		x[i] = -z;
		x[n - 1 - i] = z;
		w[i] = w[n - 1 - i] = 2.0 / ((1 - z * z) * pp * pp);
	}
	return 0;
}

int esg_ig_steps(const char *method, int n, double *alpha, double *weight)
{
	if (strcmp(method, "gausslegendre") == 0) {
		if (esg_gauss_legendre(n, alpha, weight))
			return -1;
		for (int i = 0; i < n; i++) {
			alpha[i] = 0.5 * (1 + alpha[i]);
			weight[i] *= 0.5;
		}
		return 0;
	}
	if (strncmp(method, "riemann_", 8) != 0)
		return esg_set_error("unknown integration method '%s'", method);
	if (n < 2)
		return esg_set_error("n_steps must be at least 2 for %s (as in Captum)", method);
	const char *m = method + 8;
	for (int i = 0; i < n; i++) {
		weight[i] = 1.0 / n;
		if (strcmp(m, "left") == 0)
			alpha[i] = (double)i / n;
		else if (strcmp(m, "right") == 0)
			alpha[i] = (i + 1.0) / n;
		else if (strcmp(m, "middle") == 0)
			alpha[i] = (i + 0.5) / n;
		else if (strcmp(m, "trapezoid") == 0)
			alpha[i] = (double)i / (n - 1);
		else
			return esg_set_error("unknown integration method '%s'", method);
	}
	if (strcmp(m, "trapezoid") == 0) {
		weight[0] /= 2;
		weight[n - 1] /= 2;
	}
	return 0;
}

/* ---- Gaussian blur ------------------------------------------------------ */

double *esg_gauss_kernel(double sigma, int *radius)
{
	if (!(sigma > 0) || sigma > 1e4) {
		esg_set_error("blur sigma %g must be in (0, 10000]", sigma);
		return NULL;
	}
	int r = (int)ceil(4.0 * sigma);
	double *k = malloc((2 * (size_t)r + 1) * sizeof *k);
	if (!k) {
		esg_set_error("out of memory");
		return NULL;
	}
	double sum = 0;
	for (int t = -r; t <= r; t++)
		sum += k[t + r] = exp(-0.5 * t * t / (sigma * sigma));
	for (int t = 0; t <= 2 * r; t++)
		k[t] /= sum;
	*radius = r;
	return k;
}

/* scipy "reflect": period 2n, mirrored about the array's edges. */
static int64_t reflect(int64_t i, int64_t n)
{
	int64_t p = 2 * n;
	i %= p;
	if (i < 0)
		i += p;
	return i < n ? i : p - 1 - i;
}

int esg_blur(float *data, int ndim, const int64_t *shape, double sigma)
{
	int r;
	double *k = esg_gauss_kernel(sigma, &r);
	if (!k)
		return -1;
	int64_t numel = 1;
	for (int d = 0; d < ndim; d++)
		numel *= shape[d];
	for (int ax = 2; ax < ndim; ax++) {
		int64_t n = shape[ax], stride = 1;
		for (int d = ax + 1; d < ndim; d++)
			stride *= shape[d];
		double *line = malloc((size_t)n * sizeof *line);
		if (!line) {
			free(k);
			return esg_set_error("out of memory");
		}
		int64_t lines = n ? numel / n : 0;
		for (int64_t l = 0; l < lines; l++) {
			/* line l: outer index o, inner index in */
			int64_t o = l / stride, in = l % stride;
			float *p = data + o * n * stride + in;
			for (int64_t i = 0; i < n; i++)
				line[i] = p[i * stride];
			for (int64_t i = 0; i < n; i++) {
				double s = 0;
				for (int t = -r; t <= r; t++)
					s += k[t + r] * line[reflect(i + t, n)];
				p[i * stride] = (float)s;
			}
		}
		free(line);
	}
	free(k);
	return 0;
}

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------- */

static const uint32_t K256[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

typedef struct sha_ctx {
	uint32_t h[8];
	uint8_t buf[64];
	size_t used;
	uint64_t bytes;
} sha_ctx;

static uint32_t ror(uint32_t x, int k) { return (x >> k) | (x << (32 - k)); }

static void sha_block(sha_ctx *c, const uint8_t *p)
{
	uint32_t w[64], v[8];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	memcpy(v, c->h, sizeof v);
	for (int i = 0; i < 64; i++) {
		uint32_t S1 = ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25);
		uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
		uint32_t t1 = v[7] + S1 + ch + K256[i] + w[i];
		uint32_t S0 = ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22);
		uint32_t mj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
		uint32_t t2 = S0 + mj;
		memmove(v + 1, v, 7 * sizeof *v);
		v[4] += t1;
		v[0] = t1 + t2;
	}
	for (int i = 0; i < 8; i++)
		c->h[i] += v[i];
}

static void sha_init(sha_ctx *c)
{
	static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(c->h, h0, sizeof h0);
	c->used = 0;
	c->bytes = 0;
}

static void sha_update(sha_ctx *c, const uint8_t *p, size_t n)
{
	c->bytes += n;
	while (n) {
		size_t take = 64 - c->used < n ? 64 - c->used : n;
		memcpy(c->buf + c->used, p, take);
		c->used += take;
		p += take;
		n -= take;
		if (c->used == 64) {
			sha_block(c, c->buf);
			c->used = 0;
		}
	}
}

static void sha_final(sha_ctx *c, uint8_t out[32])
{
	uint64_t bits = c->bytes * 8;
	uint8_t pad = 0x80, zero = 0, len[8];
	sha_update(c, &pad, 1);
	while (c->used != 56)
		sha_update(c, &zero, 1);
	for (int i = 0; i < 8; i++)
		len[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha_update(c, len, 8);
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (uint8_t)(c->h[i] >> (24 - 8 * j));
}

void esg_sha256(const void *data, size_t n, uint8_t digest[32])
{
	sha_ctx c;
	sha_init(&c);
	sha_update(&c, data, n);
	sha_final(&c, digest);
}

int esg_sha256_file(const char *path, char hex[65])
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return esg_set_error("cannot open '%s': %s", path, strerror(errno));
	sha_ctx c;
	sha_init(&c);
	uint8_t buf[1 << 16], d[32];
	size_t got;
	while ((got = fread(buf, 1, sizeof buf, f)) > 0)
		sha_update(&c, buf, got);
	int bad = ferror(f);
	fclose(f);
	if (bad)
		return esg_set_error("cannot read '%s'", path);
	sha_final(&c, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	return 0;
}
