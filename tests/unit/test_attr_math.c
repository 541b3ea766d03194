/* test_attr_math.c - quadrature, blur kernel, PRNG and SHA-256 of attr_math.c. */
#include "attr/attr.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

/* numpy.polynomial.legendre.leggauss(n), positive half (nodes ascending). */
static void check_gl(void)
{
	static const double X[5][3] = {
		{ 0 },
		{ 0.57735026918962576451 },
		{ 0, 0.77459666924148337704 },
		{ 0.33998104358485626480, 0.86113631159405257522 },
		{ 0, 0.53846931010568309104, 0.90617984593866399280 },
	};
	static const double W[5][3] = {
		{ 2 },
		{ 1 },
		{ 0.88888888888888888889, 0.55555555555555555556 },
		{ 0.65214515486254614263, 0.34785484513745385737 },
		{ 0.56888888888888888889, 0.47862867049936646804, 0.23692688505618908751 },
	};
	for (int n = 1; n <= 5; n++) {
		double x[5], w[5];
		ok(esg_gauss_legendre(n, x, w) == 0, "leggauss(%d) computes", n);
		int good = 1;
		for (int i = 0; i < (n + 1) / 2; i++) {
			int hi = n / 2 + i; /* the i-th non-negative node */
			good &= near(x[hi], X[n - 1][i], 1e-12, 0) && near(w[hi], W[n - 1][i], 1e-12, 0);
			good &= near(x[n - 1 - hi], -X[n - 1][i], 1e-12, 0) && near(w[n - 1 - hi], W[n - 1][i], 1e-12, 0);
		}
		ok(good, "leggauss(%d) nodes and weights within 1e-12", n);
	}
	/* order 50 (Captum's default): weights sum to 2, exact for x^98 */
	double x[50], w[50], sw = 0, s98 = 0;
	esg_gauss_legendre(50, x, w);
	for (int i = 0; i < 50; i++) {
		sw += w[i];
		s98 += w[i] * pow(x[i], 98);
	}
	ok(near(sw, 2, 1e-13, 0), "leggauss(50) weights sum to 2 (%.17g)", sw);
	ok(near(s98, 2.0 / 99, 1e-13, 0), "leggauss(50) integrates x^98 exactly");
	ok(esg_gauss_legendre(0, x, w) == -1, "order 0 refused");
}

static void check_steps(void)
{
	double a[4], w[4];
	ok(esg_ig_steps("gausslegendre", 2, a, w) == 0 && near(a[0], 0.5 * (1 - 0.57735026918962576), 1e-15, 0) &&
	   near(w[0] + w[1], 1, 1e-15, 0), "gausslegendre alphas 0.5(1+x), weights 0.5w");
	ok(esg_ig_steps("riemann_left", 4, a, w) == 0 && a[0] == 0 && a[3] == 0.75 && w[2] == 0.25, "riemann_left");
	ok(esg_ig_steps("riemann_right", 4, a, w) == 0 && a[0] == 0.25 && a[3] == 1, "riemann_right");
	ok(esg_ig_steps("riemann_middle", 4, a, w) == 0 && a[0] == 0.125 && a[3] == 0.875, "riemann_middle");
	ok(esg_ig_steps("riemann_trapezoid", 4, a, w) == 0 && a[0] == 0 && near(a[1], 1.0 / 3, 1e-15, 0) &&
	   a[3] == 1 && w[0] == 0.125 && w[1] == 0.25 && w[3] == 0.125,
	   "riemann_trapezoid as Captum (linspace(0,1,n), 1/n with ends halved)");
	ok(esg_ig_steps("riemann_left", 1, a, w) == -1, "riemann with one step refused (Captum asserts n > 1)");
	ok(esg_ig_steps("simpson", 4, a, w) == -1, "unknown rule refused");
}

static void check_blur(void)
{
	double sigmas[] = { 0.3, 1, 2.5, 7 };
	for (int i = 0; i < 4; i++) {
		int r;
		double *k = esg_gauss_kernel(sigmas[i], &r), s = 0;
		for (int t = 0; t <= 2 * r; t++)
			s += k[t];
		ok(near(s, 1, 1e-14, 0) && r == (int)ceil(4 * sigmas[i]) && k[r] > k[r + 1] &&
		   near(k[0], k[2 * r], 0, 0), "blur kernel sigma %g sums to 1, symmetric, radius ceil(4 sigma)",
		   sigmas[i]);
		free(k);
	}
	/* a constant image is unchanged by a normalised blur with reflection */
	int64_t shape[5] = { 1, 2, 5, 4, 3 };
	float v[120];
	for (int i = 0; i < 120; i++)
		v[i] = 3.5f;
	ok(esg_blur(v, 5, shape, 1.5) == 0, "3D blur runs");
	int same = 1;
	for (int i = 0; i < 120; i++)
		same &= near(v[i], 3.5, 1e-5, 0);
	ok(same, "3D blur keeps a constant image (reflect boundary)");
	/* mass is conserved along a line with reflect boundaries (sum of a delta) */
	int64_t s2[4] = { 1, 1, 1, 9 };
	float d[9] = { 0 };
	d[4] = 1;
	esg_blur(d, 4, s2, 1.0);
	double sum = 0;
	for (int i = 0; i < 9; i++)
		sum += d[i];
	ok(near(sum, 1, 1e-6, 0) && d[4] > d[3] && near(d[3], d[5], 1e-7, 0), "blurred delta keeps its mass");
	ok(esg_gauss_kernel(0, &(int){ 0 }) == NULL, "sigma 0 refused");
}

static void check_rng(void)
{
	esg_rng a, b, c;
	esg_rng_init(&a, 42, 0, 1);
	esg_rng_init(&b, 42, 0, 1);
	esg_rng_init(&c, 42, 1, 1);
	int same = 1, differ = 0;
	for (int i = 0; i < 1000; i++) {
		uint64_t x = esg_rng_next(&a), y = esg_rng_next(&b), z = esg_rng_next(&c);
		same &= x == y;
		differ += x != z;
	}
	ok(same, "same seed, record, stream: same sequence");
	ok(differ == 1000, "another record: another sequence");
	/* reference values, also replayed by tests/py/ref_attr.py */
	esg_rng_init(&a, 0, 0, 0);
	uint64_t first = esg_rng_next(&a);
	ok(first == 0x99EC5F36CB75F2B4ull, "first output for seed 0 (%016llx)", (unsigned long long)first);
	esg_rng_init(&a, 7, 3, 2);
	double s = 0, s2 = 0, umin = 1, umax = 0;
	for (int i = 0; i < 20000; i++) {
		double z = esg_rng_normal(&a), u = esg_rng_uniform(&a);
		s += z;
		s2 += z * z;
		umin = u < umin ? u : umin;
		umax = u > umax ? u : umax;
	}
	ok(fabs(s / 20000) < 0.03 && fabs(s2 / 20000 - 1) < 0.05, "normals: mean %.4f, variance %.4f",
	   s / 20000, s2 / 20000);
	ok(umin >= 0 && umax < 1 && umin < 0.001 && umax > 0.999, "uniforms in [0, 1)");
}

static void check_sha(void)
{
	uint8_t d[32];
	char hex[65];
	esg_sha256("abc", 3, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	ok(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "sha256(abc)");
	esg_sha256("", 0, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	ok(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "sha256(empty)");
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	esg_sha256(m, strlen(m), d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	ok(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"), "sha256(448-bit message)");
	ok(esg_sha256_file("/nonexistent/model.pt", hex) == -1, "missing file is an error");
}

int main(void)
{
	check_gl();
	check_steps();
	check_blur();
	check_rng();
	check_sha();
	return tap_done();
}
