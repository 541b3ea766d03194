/* test_torch_shim.c - the libtorch shim (lib/esg_torch.h) against closed
 * forms and Python-computed references.
 *
 * Fixture models come from tests/fixtures/make_models.py: run into a temp
 * dir here, unless ESG_SHIM_FIXTURES names a dir that already has them.
 * With ESG_SHIM_DUMP=DIR, guided backprop maps of two models are written
 * there for tests/cli/torch_shim_ref.sh to compare with plain PyTorch.
 *
 * Tolerances: closed forms 1e-5 relative (+1e-6 absolute); DeepLift
 * completeness 1e-5 relative to |f(x) - f(ref)| (+1e-5 absolute);
 * values that must agree between equivalent graphs 1e-5.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/stream.h"
#include "shim/esg_torch.h"
#include "tap.h"

static char dir[4096];
static char tmpdir[4096];

static const char *fx(const char *name)
{
	static char buf[8][4200];
	static int k;
	k = (k + 1) % 8;
	snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
	return buf[k];
}

static float *read_f32(const char *name, size_t n)
{
	FILE *f = fopen(fx(name), "rb");
	float *v = malloc(n * sizeof *v);
	if (!f || !v || fread(v, sizeof *v, n, f) != n) {
		fprintf(stderr, "cannot read %s\n", fx(name));
		exit(1);
	}
	fclose(f);
	return v;
}

static void write_f32(const char *path, const float *v, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(v, sizeof *v, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
}

static int setup(void)
{
	const char *env = getenv("ESG_SHIM_FIXTURES");
	if (env && *env) {
		snprintf(dir, sizeof dir, "%s", env);
		return 0;
	}
	snprintf(tmpdir, sizeof tmpdir, "%s/esg-shim.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(dir, sizeof dir, "%s", tmpdir);
	const char *py = getenv("PYTHON") ? getenv("PYTHON") : "/usr/bin/python3";
	const char *root = getenv("ESG_ROOT") ? getenv("ESG_ROOT") : ".";
	char cmd[9000];
	snprintf(cmd, sizeof cmd, "'%s' '%s/tests/fixtures/make_models.py' '%s' >&2", py, root, dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void cleanup(void)
{
	char cmd[4200];
	if (!*tmpdir)
		return;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
}

/* max |a - b| relative to max |b| */
static double max_rel(const float *a, const float *b, size_t n)
{
	double d = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		m = fmax(m, fabs((double)b[i]));
	}
	return m > 0 ? d / m : d;
}

static esg_model *load(const char *name)
{
	esg_model *m = esg_model_load(fx(name), "cpu");
	if (!m)
		printf("# load %s: %s\n", name, esg_error());
	return m;
}

/* ---- linear classifier: W[c, i] = (c + 1) * (i - 1.5) ---------------- */

static double lin_w(int c, int i) { return (c + 1) * (i - 1.5); }
static const double lin_b[3] = {0.5, -1.0, 2.0};

static void test_linear(void)
{
	esg_model *m = load("linear.pt");
	ok(m != NULL, "load linear.pt");
	if (!m)
		return;
	const float x[8] = {1, 2, 3, 4, 0, -1, 0.5f, 2};
	const float ref[8] = {0.5f, 0, -1, 1, 0, 0, 0, 0};
	const int64_t shape[2] = {2, 4}, target[2] = {2, 0};
	esg_tensor *out = NULL;
	int r = esg_model_forward(m, x, 2, shape, &out);
	ok(r == 0 && out && out->ndim == 2 && out->shape[0] == 2 && out->shape[1] == 3,
	   "linear forward gives [2, 3]");
	if (r == 0) {
		int good = 1;
		for (int b = 0; b < 2; b++)
			for (int c = 0; c < 3; c++) {
				double e = lin_b[c];
				for (int i = 0; i < 4; i++)
					e += lin_w(c, i) * x[b * 4 + i];
				good &= near(((float *)out->data)[b * 3 + c], e, 1e-6, 1e-5);
			}
		ok(good, "linear forward = W x + b");
	}
	esg_torch_tensor_free(out);

	const esg_backward_rule rules[3] = {ESG_RULE_PLAIN, ESG_RULE_GUIDED, ESG_RULE_DECONV};
	const char *names[3] = {"plain", "guided", "deconv"};
	for (int k = 0; k < 3; k++) {
		float g[8], s[2];
		r = esg_model_grad(m, rules[k], x, NULL, 2, shape, target, g, s);
		int good = r == 0;
		for (int b = 0; b < 2 && good; b++)
			for (int i = 0; i < 4; i++)
				good &= near(g[b * 4 + i], lin_w((int)target[b], i), 1e-6, 1e-5);
		ok(good, "linear %s gradient = weight row of the target%s%s", names[k],
		   r ? ": " : "", r ? esg_error() : "");
		if (k == 0) {
			double e = lin_b[2];
			for (int i = 0; i < 4; i++)
				e += lin_w(2, i) * x[i];
			ok(r == 0 && near(s[0], e, 1e-6, 1e-5), "linear score = output[b, target]");
		}
	}

	float g[8], s[2];
	r = esg_model_grad(m, ESG_RULE_DEEPLIFT, x, ref, 2, shape, target, g, s);
	int good = r == 0;
	for (int b = 0; b < 2 && good; b++) {
		double sum = 0, df = 0;
		for (int i = 0; i < 4; i++) {
			double a = (x[b * 4 + i] - ref[b * 4 + i]) * g[b * 4 + i];
			good &= near(a, (x[b * 4 + i] - ref[b * 4 + i]) * lin_w((int)target[b], i), 1e-6, 1e-5);
			sum += a;
			df += lin_w((int)target[b], i) * (x[b * 4 + i] - ref[b * 4 + i]);
		}
		good &= near(sum, df, 1e-5, 1e-5);
	}
	ok(good, "linear DeepLift attribution = (x - ref) * w%s%s", r ? ": " : "", r ? esg_error() : "");
	r = esg_model_grad(m, ESG_RULE_DEEPLIFT, x, NULL, 2, shape, target, g, s);
	ok(r == -1 && strstr(esg_error(), "baseline"), "DeepLift without baseline fails: %s", esg_error());
	const int64_t bad_target[2] = {3, 0};
	r = esg_model_grad(m, ESG_RULE_PLAIN, x, NULL, 2, shape, bad_target, g, s);
	ok(r == -1 && strstr(esg_error(), "out of range"), "target out of range: %s", esg_error());

	/* wrap: scaled output, buffer registered, saved and reloaded */
	float two = 2;
	esg_tensor buf = {.name = "scale", .dtype = ESG_F32, .ndim = 1, .shape = {1}, .data = &two};
	esg_model *w = esg_model_wrap(m,
		"def forward(self, x):\n    return self.model.forward(x) * self.scale\n", &buf, 1);
	ok(w != NULL, "wrap linear with a TorchScript source%s%s", w ? "" : ": ", w ? "" : esg_error());
	char path[4200];
	snprintf(path, sizeof path, "%s/wrapped.pt", dir);
	if (w) {
		esg_tensor *o1 = NULL, *o2 = NULL;
		esg_model *w2 = NULL;
		ok(esg_model_save(w, path) == 0, "save the wrapped model");
		w2 = esg_model_load(path, "cpu");
		ok(w2 != NULL, "reload the wrapped model");
		esg_model_forward(m, x, 2, shape, &o1);
		if (w2)
			esg_model_forward(w2, x, 2, shape, &o2);
		good = o1 && o2;
		for (int i = 0; good && i < 6; i++)
			good &= near(((float *)o2->data)[i], 2 * ((float *)o1->data)[i], 1e-6, 1e-6);
		ok(good, "reloaded wrapped model = 2 * model");
		size_t n = 0;
		esg_layer_info *l = w2 ? esg_model_layers(w2, &n) : NULL;
		ok(l && n == 2 && !strcmp(l[0].name, "model") && !strcmp(l[1].name, "model.fc") &&
		   !strcmp(l[1].type, "Linear"), "layers of the wrapped model: model, model.fc");
		esg_layers_free(l, n);
		esg_layer_ref L = {"model.fc", 0};
		esg_tensor *a = NULL;
		r = w2 ? esg_model_forward_capture(w2, L, x, 2, shape, &a, NULL) : -1;
		ok(r == 0 && o1 && max_rel(a->data, o1->data, 6) < 1e-6,
		   "capture model.fc through the wrapper = the model's output");
		esg_torch_tensor_free(a);
		esg_torch_tensor_free(o1);
		esg_torch_tensor_free(o2);
		esg_model_free(w2);
		esg_model_free(w);
	}
	w = esg_model_wrap(m, "def forward(self, x):\n    return self.nothere(x)\n", NULL, 0);
	ok(!w && strstr(esg_error(), "does not compile"), "bad wrapper source: %s", esg_error());
	esg_model_free(w);
	esg_model_free(m);

	m = load("inplace_input.pt");
	if (m) {
		float g[8];
		r = esg_model_grad(m, ESG_RULE_PLAIN, x, NULL, 2, shape, target, g, NULL);
		good = r == 0;
		for (int b = 0; b < 2 && good; b++)
			for (int i = 0; i < 4; i++)
				good &= near(g[b * 4 + i], 2 * lin_w((int)target[b], i), 1e-6, 1e-5);
		ok(good, "model scaling its input in place: gradient = 2 w%s%s", r ? ": " : "",
		   r ? esg_error() : "");
		esg_model_free(m);
	}
}

/* ---- one-conv net (Captum's BasicModel_ConvNet_One_Conv) ------------- */

/* Gradient of output[0] at x = arange(16) by hand.  rule: 0 plain,
 * 1 guided, 2 deconv. */
static void oneconv_by_hand(int rule, float *g)
{
	double conv[8], z = 0, w[8];
	for (int c = 0; c < 2; c++)
		for (int i = 0; i < 2; i++)
			for (int j = 0; j < 2; j++) {
				double s = c ? -75 : -50;
				for (int u = 0; u < 3; u++)
					for (int v = 0; v < 3; v++)
						s += (i + u) * 4 + (j + v);
				conv[c * 4 + i * 2 + j] = s;
			}
	for (int f = 0; f < 8; f++) {
		w[f] = f < 5 ? 1 : -1;
		z += w[f] * fmax(conv[f], 0);
	}
	double go = rule == 2 ? 1 : (z > 0);
	for (int p = 0; p < 16; p++)
		g[p] = 0;
	for (int f = 0; f < 8; f++) {
		double gf = go * w[f];
		if (rule == 0)
			gf *= conv[f] > 0;
		else if (rule == 1)
			gf = fmax(gf, 0) * (conv[f] > 0);
		else
			gf = fmax(gf, 0);
		int i = (f % 4) / 2, j = f % 2;
		for (int u = 0; u < 3; u++)
			for (int v = 0; v < 3; v++)
				g[(i + u) * 4 + j + v] += (float)gf;
	}
}

static void test_oneconv(void)
{
	esg_model *m = load("oneconv.pt");
	ok(m != NULL, "load oneconv.pt");
	if (!m)
		return;
	float x[16], g[16], e[16];
	for (int i = 0; i < 16; i++)
		x[i] = (float)i;
	const int64_t shape[4] = {1, 1, 4, 4}, target[1] = {0};
	const esg_backward_rule rules[3] = {ESG_RULE_PLAIN, ESG_RULE_GUIDED, ESG_RULE_DECONV};
	const char *names[3] = {"plain gradient", "guided backprop", "deconvolution"};
	for (int k = 0; k < 3; k++) {
		int r = esg_model_grad(m, rules[k], x, NULL, 4, shape, target, g, NULL);
		oneconv_by_hand(k, e);
		ok(r == 0 && max_rel(g, e, 16) < 1e-6, "one-conv net %s = hand computation%s%s",
		   names[k], r ? ": " : "", r ? esg_error() : "");
	}
	esg_model_free(m);
}

/* ---- ReLU variants: module / functional / in-place, traced / scripted - */

static const char *variants[6] = {
	"relu_module_script.pt", "relu_module_trace.pt", "relu_functional_script.pt",
	"relu_functional_trace.pt", "relu_inplace_script.pt", "relu_inplace_trace.pt"};

static void deeplift_completeness(esg_model *m, const char *what, const float *x,
				  const float *ref, int ndim, const int64_t *shape,
				  const int64_t *target)
{
	int64_t B = shape[0], n = 1;
	for (int i = 1; i < ndim; i++)
		n *= shape[i];
	float *g = malloc(B * n * sizeof *g), s[8], sx[8], sr[8];
	/* f(x) and f(ref) from plain calls (they overwrite g; DeepLift runs last) */
	int r2 = esg_model_grad(m, ESG_RULE_PLAIN, ref, NULL, ndim, shape, target, g, sr);
	r2 |= esg_model_grad(m, ESG_RULE_PLAIN, x, NULL, ndim, shape, target, g, sx);
	/* completeness is the complete rule's (Captum's map misses it at max pools) */
	int r = esg_model_grad(m, ESG_RULE_DEEPLIFT_COMPLETE, x, ref, ndim, shape, target, g, s);
	int good = r == 0 && r2 == 0;
	double worst = 0;
	for (int64_t b = 0; b < B && good; b++) {
		double sum = 0, df = (double)sx[b] - sr[b];
		for (int64_t i = 0; i < n; i++)
			sum += ((double)x[b * n + i] - ref[b * n + i]) * g[b * n + i];
		worst = fmax(worst, fabs(sum - df));
		good &= near(sum, df, 1e-5, 1e-5);
		/* the DeepLift call's score is f(x) - f(ref) */
		good &= near(s[b], df, 1e-5, 1e-5);
	}
	ok(good, "%s: complete DeepLift sum(attr) = f(x) - f(ref) (worst |delta| %.2g)%s%s", what, worst,
	   r || r2 ? ": " : "", r || r2 ? esg_error() : "");
	free(g);
}

static void test_relu_variants(void)
{
	const int64_t shape[4] = {2, 1, 8, 8}, target[2] = {1, 2};
	float *x = read_f32("x2d.f32", 128), *ref_out = read_f32("relu_out.f32", 6);
	float *bn = read_f32("relu_bn.f32", 2 * 4 * 64);
	float guided0[128], plain0[128], ref[128];
	for (int i = 0; i < 128; i++)
		ref[i] = 0.25f * x[(i * 7) % 128];
	for (int v = 0; v < 6; v++) {
		esg_model *m = load(variants[v]);
		ok(m != NULL, "load %s", variants[v]);
		if (!m)
			continue;
		esg_tensor *out = NULL;
		int r = esg_model_forward(m, x, 4, shape, &out);
		ok(r == 0 && max_rel(out->data, ref_out, 6) < 1e-5, "%s: forward = PyTorch", variants[v]);
		esg_torch_tensor_free(out);

		float g[128], p[128];
		r = esg_model_grad(m, ESG_RULE_GUIDED, x, NULL, 4, shape, target, g, NULL);
		r |= esg_model_grad(m, ESG_RULE_PLAIN, x, NULL, 4, shape, target, p, NULL);
		if (v == 0) {
			memcpy(guided0, g, sizeof g);
			memcpy(plain0, p, sizeof p);
			ok(r == 0 && max_rel(g, p, 128) > 1e-2, "%s: guided backprop differs from the gradient",
			   variants[v]);
		} else {
			ok(r == 0 && max_rel(g, guided0, 128) < 1e-5 && max_rel(p, plain0, 128) < 1e-5,
			   "%s: guided and plain gradients = module-ReLU script model's", variants[v]);
		}
		if (getenv("ESG_SHIM_DUMP") && (v == 2 || v == 4 || v == 5)) {
			char path[4200];
			snprintf(path, sizeof path, "%s/guided_%s.f32", getenv("ESG_SHIM_DUMP"), variants[v]);
			write_f32(path, g, 128);
		}
		deeplift_completeness(m, variants[v], x, ref, 4, shape, target);

		/* the BN output, captured before the (possibly in-place) ReLU */
		esg_layer_ref L = {"bn", 0};
		esg_tensor *act = NULL, *o = NULL;
		r = esg_model_forward_capture(m, L, x, 4, shape, &act, &o);
		ok(r == 0 && act->ndim == 4 && act->shape[1] == 4 &&
		   max_rel(act->data, bn, 2 * 4 * 64) < 1e-5 && max_rel(o->data, ref_out, 6) < 1e-5,
		   "%s: capture bn = PyTorch activation%s%s", variants[v], r ? ": " : "", r ? esg_error() : "");
		if (r == 0) {
			esg_tensor *o2 = NULL;
			float ga[512], ga2[512];
			r = esg_model_forward_replace(m, L, x, 4, shape, act, target, ga, &o2);
			ok(r == 0 && max_rel(o2->data, ref_out, 6) < 1e-5,
			   "%s: replace bn with its capture reproduces the output%s%s", variants[v],
			   r ? ": " : "", r ? esg_error() : "");
			esg_tensor *a2 = NULL, *gr = NULL;
			int r2 = esg_model_layer_grad(m, L, ESG_RULE_PLAIN, x, NULL, 4, shape, target,
						      &a2, &gr, NULL);
			if (r2 == 0)
				memcpy(ga2, gr->data, sizeof ga2);
			ok(r == 0 && r2 == 0 && max_rel(ga, ga2, 512) < 1e-5,
			   "%s: layer gradient at bn = gradient through the replacement%s%s", variants[v],
			   r2 ? ": " : "", r2 ? esg_error() : "");
			esg_torch_tensor_free(o2);
			esg_torch_tensor_free(a2);
			esg_torch_tensor_free(gr);
		}
		esg_torch_tensor_free(act);
		esg_torch_tensor_free(o);

		/* layer DeepLift at conv2: sum((a - a_ref) * m) = f(x) - f(ref) */
		esg_layer_ref C2 = {"conv2", 0};
		esg_tensor *a = NULL, *ga = NULL;
		float s[2], sr[2], pg[128];
		r = esg_model_layer_grad(m, C2, ESG_RULE_DEEPLIFT, x, ref, 4, shape, target, &a, &ga, s);
		r |= esg_model_grad(m, ESG_RULE_PLAIN, ref, NULL, 4, shape, target, pg, sr);
		int good = r == 0 && a->shape[0] == 4 && ga->shape[0] == 4;
		for (int b = 0; b < 2 && good; b++) {
			double sum = 0;
			const float *A = a->data, *G = ga->data;
			for (int i = 0; i < 256; i++)
				sum += ((double)A[b * 256 + i] - A[(2 + b) * 256 + i]) * G[b * 256 + i];
			good &= near(sum, (double)s[b] - sr[b], 1e-5, 1e-5);
		}
		ok(good, "%s: layer DeepLift at conv2 sums to f(x) - f(ref)%s%s", variants[v],
		   r ? ": " : "", r ? esg_error() : "");
		esg_torch_tensor_free(a);
		esg_torch_tensor_free(ga);

		/* gradient at the last layer's output is one-hot at the target */
		esg_layer_ref FC = {"fc", 0};
		a = ga = NULL;
		r = esg_model_layer_grad(m, FC, ESG_RULE_GUIDED, x, NULL, 4, shape, target, &a, &ga, s);
		good = r == 0 && ga->ndim == 2 && ga->shape[1] == 3;
		for (int b = 0; b < 2 && good; b++)
			for (int c = 0; c < 3; c++)
				good &= ((float *)ga->data)[b * 3 + c] == (c == target[b]);
		ok(good && near(s[0], ref_out[1], 1e-6, 1e-5), "%s: layer gradient at fc is one-hot",
		   variants[v]);
		esg_torch_tensor_free(a);
		esg_torch_tensor_free(ga);
		esg_model_free(m);
	}
	free(x);
	free(ref_out);
	free(bn);
}

/* ---- layers ----------------------------------------------------------- */

static int find_layer(const esg_layer_info *l, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i].name, name))
			return (int)i;
	return -1;
}

static void test_layers(void)
{
	esg_model *m = load("relu_functional_script.pt");
	size_t n = 0;
	esg_layer_info *l = m ? esg_model_layers(m, &n) : NULL;
	const char *order[6] = {"conv1", "bn", "conv2", "pool", "fc", "act"};
	const char *types[6] = {"Conv2d", "BatchNorm2d", "Conv2d", "AdaptiveAvgPool2d", "Linear", "ReLU"};
	const int calls[6] = {1, 1, 1, 1, 1, 0};
	int good = l && n == 6;
	for (size_t i = 0; good && i < 6; i++)
		good &= !strcmp(l[i].name, order[i]) && !strcmp(l[i].type, types[i]) &&
			l[i].calls == calls[i];
	ok(good, "layers of the functional-ReLU net: execution order, types, calls (unused act last)");
	esg_layers_free(l, n);

	esg_layer_ref bad = {"conv", 0};
	esg_tensor *act = NULL;
	float x[128] = {0};
	const int64_t shape[4] = {2, 1, 8, 8};
	int r = m ? esg_model_forward_capture(m, bad, x, 4, shape, &act, NULL) : 0;
	ok(r == -1 && strstr(esg_error(), "no layer 'conv'") && strstr(esg_error(), "conv1"),
	   "unknown layer lists close names: %s", esg_error());
	esg_layer_ref unused = {"act", 0};
	r = m ? esg_model_forward_capture(m, unused, x, 4, shape, &act, NULL) : 0;
	ok(r == -1 && strstr(esg_error(), "never called"), "uncalled layer: %s", esg_error());
	esg_model_free(m);

	m = load("branchy.pt");
	esg_layer_ref in_if = {"act", 0};
	r = m ? esg_model_forward_capture(m, in_if, x, 4, shape, &act, NULL) : 0;
	ok(r == -1 && strstr(esg_error(), "inside a loop or an if"), "layer called inside an if: %s",
	   esg_error());
	esg_model_free(m);

	const char *tw[2] = {"twice_script.pt", "twice_trace.pt"};
	float *xt = read_f32("xtw.f32", 72), *b0 = read_f32("twice_block0.f32", 72);
	float *b1 = read_f32("twice_block1.f32", 72), *out = read_f32("twice_out.f32", 2);
	const int64_t ts[4] = {1, 2, 6, 6};
	for (int k = 0; k < 2; k++) {
		m = load(tw[k]);
		if (!m) {
			ok(0, "load %s", tw[k]);
			continue;
		}
		l = esg_model_layers(m, &n);
		int i = l ? find_layer(l, n, "block") : -1, j = l ? find_layer(l, n, "block.0") : -1;
		ok(i == 0 && l[i].calls == 2 && j == 1 && l[j].calls == 2 && !strcmp(l[j].type, "Conv2d"),
		   "%s: block listed first, called twice", tw[k]);
		esg_layers_free(l, n);
		for (int c = 0; c < 2; c++) {
			esg_layer_ref L = {"block", c};
			esg_tensor *a = NULL, *o = NULL;
			r = esg_model_forward_capture(m, L, xt, 4, ts, &a, &o);
			ok(r == 0 && max_rel(a->data, c ? b1 : b0, 72) < 1e-5 && max_rel(o->data, out, 2) < 1e-5,
			   "%s: capture block call %d = PyTorch%s%s", tw[k], c, r ? ": " : "", r ? esg_error() : "");
			esg_torch_tensor_free(a);
			esg_torch_tensor_free(o);
		}
		esg_layer_ref L2 = {"block.0", 1};
		esg_tensor *a = NULL;
		r = esg_model_forward_capture(m, L2, xt, 4, ts, &a, NULL);
		ok(r == 0 && a->shape[1] == 2, "%s: capture a nested layer's second call", tw[k]);
		esg_torch_tensor_free(a);
		esg_layer_ref L3 = {"block", 2};
		r = esg_model_forward_capture(m, L3, xt, 4, ts, &a, NULL);
		ok(r == -1 && strstr(esg_error(), "out of range"), "%s: call index out of range: %s", tw[k],
		   esg_error());
		esg_model_free(m);
	}
	free(xt);
	free(b0);
	free(b1);
	free(out);
}

/* ---- 3D net with max pooling ------------------------------------------ */

static void test_net3d(void)
{
	esg_model *m = load("net3d.pt");
	ok(m != NULL, "load net3d.pt");
	if (!m)
		return;
	float *x = read_f32("x3d.f32", 432), ref[432], zero[432] = {0};
	for (int i = 0; i < 432; i++)
		ref[i] = 0.5f * x[(i * 5 + 3) % 432];
	const int64_t shape[5] = {2, 1, 6, 6, 6}, target[2] = {0, 1};
	deeplift_completeness(m, "3D max-pool net, zero baseline", x, zero, 5, shape, target);
	deeplift_completeness(m, "3D max-pool net, random baseline", x, ref, 5, shape, target);
	/* equal to the input in the first three slices of each item: there
	 * delta_in = 0 and the rules fall back to the ordinary gradient */
	float half[432];
	for (int i = 0; i < 432; i++)
		half[i] = i % 216 < 108 ? x[i] : ref[i];
	deeplift_completeness(m, "3D max-pool net, baseline = input in half the volume", x, half, 5,
			      shape, target);
	float g[432];
	const char *dump = getenv("ESG_SHIM_DUMP");
	const char *names[3] = {"zero", "rand", "half"};
	const float *refs[3] = {zero, ref, half};
	for (int k = 0; dump && k < 3; k++) {
		char path[4200];
		snprintf(path, sizeof path, "%s/deeplift_net3d_%s.f32", dump, names[k]);
		if (esg_model_grad(m, ESG_RULE_DEEPLIFT_COMPLETE, x, refs[k], 5, shape, target, g, NULL) == 0)
			write_f32(path, g, 432);
	}
	int r = esg_model_grad(m, ESG_RULE_GUIDED, x, NULL, 5, shape, target, g, NULL);
	ok(r == 0, "3D net guided backprop runs");
	free(x);
	esg_model_free(m);
}

/* ---- the demo U-Net behind a fixed-mask score (skip connections,
 * max pools, in-place ReLUs) ------------------------------------------- */

static void test_unet(void)
{
	const char *files[2] = {"unet_trace.pt", "unet_script.pt"};
	float *x = read_f32("xu.f32", 1024), *out = read_f32("unet_out.f32", 4);
	float *a_ref = read_f32("unet_enc2_relu1.f32", 2 * 4 * 64);
	float zero[1024] = {0}, ref[1024], g[1024];
	for (int i = 0; i < 1024; i++)
		ref[i] = 0.3f * x[(i * 11 + 5) % 1024];
	const int64_t shape[5] = {2, 1, 8, 8, 8}, target[2] = {1, 0};
	for (int k = 0; k < 2; k++) {
		esg_model *m = load(files[k]);
		ok(m != NULL, "load %s", files[k]);
		if (!m)
			continue;
		char what[200];
		snprintf(what, sizeof what, "%s, zero baseline", files[k]);
		deeplift_completeness(m, what, x, zero, 5, shape, target);
		snprintf(what, sizeof what, "%s, random baseline", files[k]);
		deeplift_completeness(m, what, x, ref, 5, shape, target);
		int r = esg_model_grad(m, ESG_RULE_GUIDED, x, NULL, 5, shape, target, g, NULL);
		ok(r == 0, "%s: guided backprop runs", files[k]);
		if (r == 0 && k == 0 && getenv("ESG_SHIM_DUMP")) {
			char path[4200];
			snprintf(path, sizeof path, "%s/guided_unet.f32", getenv("ESG_SHIM_DUMP"));
			write_f32(path, g, 1024);
			snprintf(path, sizeof path, "%s/deeplift_unet.f32", getenv("ESG_SHIM_DUMP"));
			if (esg_model_grad(m, ESG_RULE_DEEPLIFT_COMPLETE, x, ref, 5, shape, target, g, NULL) == 0)
				write_f32(path, g, 1024);
		}
		esg_layer_ref L = {"unet.enc2.relu1", 0};
		esg_tensor *a = NULL, *o = NULL;
		r = esg_model_forward_capture(m, L, x, 5, shape, &a, &o);
		ok(r == 0 && max_rel(a->data, a_ref, 512) < 1e-5 && max_rel(o->data, out, 4) < 1e-5,
		   "%s: capture of an in-place ReLU inside a block = PyTorch hook%s%s", files[k],
		   r ? ": " : "", r ? esg_error() : "");
		esg_torch_tensor_free(a);
		esg_torch_tensor_free(o);
		/* enc1 feeds both pool1 and the skip connection */
		esg_layer_ref E1 = {"unet.enc1", 0};
		a = o = NULL;
		r = esg_model_forward_capture(m, E1, x, 5, shape, &a, NULL);
		if (r == 0) {
			float *ga = malloc(esg_tensor_numel(a) * sizeof *ga);
			r = esg_model_forward_replace(m, E1, zero, 5, shape, a, target, ga, &o);
			ok(r == 0 && max_rel(o->data, out, 4) < 1e-5,
			   "%s: replacing enc1 (pool and skip path) with its capture, from a zero input, "
			   "reproduces the output%s%s", files[k], r ? ": " : "", r ? esg_error() : "");
			free(ga);
		} else {
			ok(0, "%s: capture enc1: %s", files[k], esg_error());
		}
		esg_torch_tensor_free(a);
		esg_torch_tensor_free(o);
		esg_layer_ref BN = {"unet.bottleneck", 0};
		esg_tensor *ga = NULL;
		float s[2], sr[2], pg[1024];
		a = NULL;
		r = esg_model_layer_grad(m, BN, ESG_RULE_DEEPLIFT, x, ref, 5, shape, target, &a, &ga, s);
		r |= esg_model_grad(m, ESG_RULE_PLAIN, ref, NULL, 5, shape, target, pg, sr);
		/* the skip connections bypass the bottleneck: no completeness here, but
		 * the activation halves must be x's and ref's */
		ok(r == 0 && a->shape[0] == 4 && ga->shape[0] == 4 && a->shape[1] == 8,
		   "%s: layer DeepLift at the bottleneck gives [2B, 8, 2, 2, 2]%s%s", files[k],
		   r ? ": " : "", r ? esg_error() : "");
		esg_torch_tensor_free(a);
		esg_torch_tensor_free(ga);
		esg_model_free(m);
	}
	free(x);
	free(out);
	free(a_ref);
}

/* ---- errors ----------------------------------------------------------- */

static void test_errors(void)
{
	esg_model *m = esg_model_load(fx("does_not_exist.pt"), "cpu");
	ok(!m && strstr(esg_error(), "cannot open model") && strstr(esg_error(), "does_not_exist.pt"),
	   "missing file: %s", esg_error());
	m = esg_model_load(fx("not_a_model.pt"), "cpu");
	ok(!m && strstr(esg_error(), "cannot load TorchScript model") && !strchr(esg_error(), '\n'),
	   "not a model, one line: %s", esg_error());
	m = esg_model_load(fx("linear.pt"), "gpu7");
	ok(!m && strstr(esg_error(), "bad device"), "bad device: %s", esg_error());
	esg_set_error("%s", "");
	m = esg_model_load(fx("linear.pt"), "cuda:0");
	if (m) /* built against a CUDA libtorch, with a GPU (tests/cli/cuda.sh) */
		ok(1, "cuda:0 loads (a CUDA libtorch and a GPU)");
	else
		ok(strstr(esg_error(), "CUDA") != NULL, "cuda on a CPU-only libtorch: %s", esg_error());
	esg_model_free(m);

	m = load("frozen.pt");
	ok(m != NULL, "load frozen.pt");
	if (m) {
		float x[128] = {0}, g[128];
		const int64_t shape[4] = {2, 1, 8, 8}, target[2] = {0, 0};
		esg_layer_ref L = {"conv1", 0};
		esg_tensor *a = NULL;
		int r = esg_model_forward_capture(m, L, x, 4, shape, &a, NULL);
		ok(r == -1 && strstr(esg_error(), "frozen"), "layer of a frozen model: %s", esg_error());
		r = esg_model_grad(m, ESG_RULE_GUIDED, x, NULL, 4, shape, target, g, NULL);
		ok(r == 0, "guided backprop on a frozen model%s%s", r ? ": " : "", r ? esg_error() : "");
		esg_model_free(m);
	}

	m = load("seg.pt");
	if (m) {
		float x[128] = {0}, g[128];
		const int64_t shape[4] = {2, 1, 8, 8}, target[2] = {0, 1};
		int r = esg_model_grad(m, ESG_RULE_PLAIN, x, NULL, 4, shape, target, g, NULL);
		ok(r == -1 && strstr(esg_error(), "[2, 2, 8, 8]") && strstr(esg_error(), "esg-wrap"),
		   "segmentation output for a gradient: %s", esg_error());
		esg_tensor *o = NULL;
		r = esg_model_forward(m, x, 4, shape, &o);
		ok(r == 0 && o->ndim == 4 && o->shape[1] == 2, "segmentation forward gives [2, 2, 8, 8]");
		esg_torch_tensor_free(o);
		const int64_t bad[4] = {2, 3, 8, 8};
		r = esg_model_forward(m, x, 4, bad, &o);
		ok(r == -1 && !strchr(esg_error(), '\n'), "wrong channel count, one line: %s", esg_error());
		esg_model_free(m);
	}
}

int main(void)
{
	if (setup() != 0) {
		printf("not ok 1 - generate fixture models (tests/fixtures/make_models.py)\n1..1\n");
		cleanup();
		return 1;
	}
	ok(esg_torch_set_threads(0) == 0, "set threads to all cores");
	/* One thread: the test models are tiny, and OpenMP's busy-waiting on a
	 * shared CI machine costs 10x the work itself. */
	ok(esg_torch_set_threads(1) == 0, "set threads to 1");
	test_linear();
	if (getenv("ESG_SHIM_DUMP")) {
		/* only what tests/cli/torch_shim_ref.sh compares */
		test_relu_variants();
		test_net3d();
		test_unet();
	} else {
		test_oneconv();
		test_relu_variants();
		test_layers();
		test_net3d();
		test_unet();
		test_errors();
	}
	cleanup();
	return tap_done();
}
