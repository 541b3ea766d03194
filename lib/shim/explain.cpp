/* explain.cpp - esg_model_explain (esg_torch.h): optimise an input image
 * against a layer or class objective with autograd (esg-explain: deepdream,
 * feature visualisation, class model, inverted representation).
 *
 * One loop serves every method: an image parameterisation (pixels, or a
 * Fourier spectrum with Lucid's 1/f scaling and optional colour
 * decorrelation), random transforms before each forward (roll jitter, pad,
 * zoom, rotation, flips), the objective on the layer's output of a graph
 * cut after the layer (graph.cpp's EDIT_CUT: nothing after the layer runs)
 * or on the model's output, regularisers on the image (L2, Mahendran &
 * Vedaldi's normalised alpha-norm and total variation, blur every k steps),
 * and PyTorch's Adam / SGD update written out (the same arithmetic as
 * torch.optim in 1.13, so tests/py/ref_explain.py can check it with
 * torch.optim itself).  Deepdream's octaves wrap the loop.  Random draws come
 * from one CPU generator seeded by spec->seed, in a documented order (noise
 * first, then per step: roll, zoom, rotation, flips) so a Python reference
 * can replay them.
 */
#include "shim/internal.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <string>
#include <vector>

using namespace esg_shim;

namespace {

at::Tensor run_graph(esg_model *m, torch::jit::GraphFunction &fn, const at::Tensor &x)
{
	std::vector<c10::IValue> st{m->mod._ivalue(), x};
	st.insert(st.end(), m->extra_args.begin(), m->extra_args.end());
	fn.run(st);
	const c10::IValue &v = st.back();
	if (!v.isTensor())
		fail(std::string("the model returns a ") + v.tagKind() + ", expected a tensor");
	return v.toTensor().to(at::kFloat);
}

/* Separable Gaussian blur of [1, C, spatial...] (2 or 3 spatial axes),
 * radius ceil(3 sigma), replicate border. */
at::Tensor blur(const at::Tensor &x, double sigma)
{
	if (sigma <= 0)
		return x;
	int64_t r = std::max<int64_t>(1, (int64_t)std::ceil(3 * sigma));
	at::Tensor k = at::arange(-r, r + 1, x.options()).to(at::kDouble);
	k = at::exp(-k * k / (2 * sigma * sigma));
	k = (k / k.sum()).to(x.scalar_type());
	int64_t C = x.size(1), nsp = x.dim() - 2;
	at::Tensor y = x;
	std::vector<int64_t> one(nsp, 1), zero(nsp, 0);
	for (int64_t a = 0; a < nsp; a++) {
		std::vector<int64_t> ws(x.dim(), 1);
		ws[0] = C;
		ws[2 + a] = 2 * r + 1;
		at::Tensor w = k.reshape(ws);
		/* pads run from the last axis backwards, (lo, hi) each */
		std::vector<int64_t> pad(2 * nsp, 0);
		pad[2 * (nsp - 1 - a)] = r;
		pad[2 * (nsp - 1 - a) + 1] = r;
		if (nsp == 2)
			y = at::conv2d(at::replication_pad2d(y, pad), w, at::Tensor(), one, zero, one, C);
		else
			y = at::conv3d(at::replication_pad3d(y, pad), w, at::Tensor(), one, zero, one, C);
	}
	return y;
}

at::Tensor resize(const at::Tensor &x, const std::vector<int64_t> &size)
{
	if (x.sizes().slice(2).vec() == size)
		return x;
	if (size.size() == 2)
		return at::upsample_bilinear2d(x, size, false);
	return at::upsample_trilinear3d(x, size, false);
}

/* Lucid's colour decorrelation (the square root of ImageNet's colour
 * correlation, columns normalised by the largest column norm). */
at::Tensor decorrelate(const at::Tensor &x)
{
	static const float svd[3][3] = {{0.26f, 0.09f, 0.02f}, {0.27f, 0.00f, -0.05f}, {0.27f, -0.09f, 0.03f}};
	at::Tensor M = at::empty({3, 3}, at::kFloat);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			M[i][j] = svd[i][j];
	at::Tensor mx = at::linalg_vector_norm(M, 2, {0}).max();
	M = (M / mx).to(x.device());
	/* out[c] = sum_k M[c, k] x[k] */
	return at::matmul(x.permute({0, 2, 3, 1}), M.t()).permute({0, 3, 1, 2});
}

struct Image {
	bool fft = false, decor = false;
	at::Tensor p;                  /* the optimised parameter */
	at::Tensor scale;              /* fft: 1 / max(f, 1/max(size)), [..., 1] */
	std::vector<int64_t> shape;    /* the image's [1, C, spatial...] */

	at::Tensor image() const
	{
		at::Tensor x;
		if (fft) {
			std::vector<int64_t> s(shape.begin() + 2, shape.end()), dims;
			for (size_t d = 0; d < s.size(); d++)
				dims.push_back(2 + (int64_t)d);
			at::Tensor c = at::view_as_complex((p * scale).contiguous());
			x = at::fft_irfftn(c, s, dims, c10::string_view("ortho")) / 4.0;
		} else {
			x = p;
		}
		return decor ? decorrelate(x) : x;
	}
};

/* Lucid's fft_image: spectrum [1, C, s0, ..., s_last/2 + 1, 2] of std
 * init_std; scale 1 / max(|f|, 1/max(s))^1 with f the sample frequencies
 * (fftfreq on every axis but the last, rfftfreq on it). */
void make_fft(Image &im, const at::Generator &gen, double sd)
{
	std::vector<int64_t> s(im.shape.begin() + 2, im.shape.end());
	int64_t nsp = (int64_t)s.size(), big = *std::max_element(s.begin(), s.end());
	std::vector<int64_t> spec{im.shape[0], im.shape[1]}, grid;
	std::vector<at::Tensor> fs;
	for (int64_t d = 0; d < nsp; d++) {
		int64_t n = s[d];
		at::Tensor f = d == nsp - 1 ? at::arange(n / 2 + 1, at::kDouble) / (double)n
					    : at::fft_fftfreq(n, 1.0, at::TensorOptions().dtype(at::kDouble));
		fs.push_back(f);
		grid.push_back(f.size(0));
	}
	at::Tensor f2 = at::zeros(grid, at::kDouble);
	for (int64_t d = 0; d < nsp; d++) {
		std::vector<int64_t> v(nsp, 1);
		v[d] = grid[d];
		f2 = f2 + (fs[d] * fs[d]).reshape(v);
		spec.push_back(grid[d]);
	}
	at::Tensor freq = at::sqrt(f2);
	at::Tensor sc = 1.0 / at::clamp_min(freq, 1.0 / (double)big);
	std::vector<int64_t> ss = sc.sizes().vec();
	ss.insert(ss.begin(), {1, 1});
	ss.push_back(1);
	im.scale = sc.reshape(ss).to(at::kFloat);
	spec.push_back(2);
	im.p = at::randn(spec, gen, at::kFloat) * sd;
}

double uniform(const at::Generator &gen, double lo, double hi)
{
	double u = at::rand({1}, gen, at::kDouble).item<double>();
	return lo + (hi - lo) * u;
}

/* x centre-cropped or zero-padded (lower side floor((n - t) / 2)) to the
 * spatial sizes of like. */
at::Tensor fit_size(at::Tensor x, const at::Tensor &like)
{
	for (int64_t d = 2; d < x.dim(); d++) {
		int64_t n = x.size(d), t = like.size(d);
		if (n > t) {
			x = x.narrow(d, (n - t) / 2, t);
		} else if (n < t) {
			std::vector<int64_t> pad(2 * (x.dim() - 2), 0);
			int64_t a = x.dim() - 1 - d; /* pads run from the last axis */
			pad[2 * a] = (t - n) / 2;
			pad[2 * a + 1] = t - n - (t - n) / 2;
			x = at::constant_pad_nd(x, pad, 0.0);
		}
	}
	return x;
}

/* The random transforms of one step, drawn in this order: pad (none),
 * roll (one integer in [-jitter, jitter] per spatial axis), zoom (one
 * uniform), rotation (one uniform, 2D), flips (one uniform per axis).
 * The result is centre-cropped (or zero-padded) back to the image's size:
 * the model sees the size it was given (U-Nets need multiples of their
 * pooling, a fixed-mask wrapper its mask's size), so pad + roll shift the
 * image with zeros coming in and zoom scales it about the centre. */
at::Tensor transform(const esg_explain_spec *s, const at::Tensor &x0, const at::Generator &gen)
{
	at::Tensor x = x0;
	int64_t nsp = x.dim() - 2;
	if (s->pad > 0)
		x = at::constant_pad_nd(x, std::vector<int64_t>(2 * nsp, s->pad), 0.0);
	if (s->jitter > 0) {
		at::Tensor sh = at::randint(-s->jitter, s->jitter + 1, {nsp}, gen, at::kLong);
		std::vector<int64_t> shifts, dims;
		for (int64_t d = 0; d < nsp; d++) {
			shifts.push_back(sh[d].item<int64_t>());
			dims.push_back(2 + d);
		}
		x = at::roll(x, shifts, dims);
	}
	if (s->scale_max > s->scale_min || s->scale_min != 1.0) {
		double f = uniform(gen, s->scale_min, s->scale_max);
		std::vector<int64_t> size;
		for (int64_t d = 0; d < nsp; d++)
			size.push_back(std::max<int64_t>(1, (int64_t)std::llround(x.size(2 + d) * f)));
		x = resize(x, size);
	}
	if (s->rotate > 0 && nsp == 2) {
		double a = uniform(gen, -s->rotate, s->rotate) * M_PI / 180.0;
		at::Tensor th = at::zeros({1, 2, 3}, x.options());
		th[0][0][0] = std::cos(a);
		th[0][0][1] = -std::sin(a);
		th[0][1][0] = std::sin(a);
		th[0][1][1] = std::cos(a);
		at::Tensor grid = at::affine_grid_generator(th, x.sizes(), false);
		x = at::grid_sampler(x, grid, 0, 0, false);
	}
	if (s->flip) {
		at::Tensor u = at::rand({nsp}, gen, at::kDouble);
		std::vector<int64_t> dims;
		for (int64_t d = 0; d < nsp; d++)
			if (u[d].item<double>() < 0.5)
				dims.push_back(2 + d);
		if (!dims.empty())
			x = at::flip(x, dims);
	}
	return fit_size(x, x0);
}

bool has_transforms(const esg_explain_spec *s)
{
	return s->pad > 0 || s->jitter > 0 || s->scale_max > s->scale_min || s->scale_min != 1.0 ||
	       s->rotate > 0 || s->flip;
}

/* The regularisers of the image x (one item), as a loss to minimise. */
at::Tensor regularisers(const esg_explain_spec *s, const at::Tensor &x)
{
	at::Tensor r = at::zeros({}, x.options());
	int64_t nsp = x.dim() - 2;
	double V = 1;
	for (int64_t d = 0; d < nsp; d++)
		V *= (double)x.size(2 + d);
	if (s->l2_decay > 0)
		r = r + s->l2_decay * x.pow(2).sum();
	if (s->alpha_weight > 0)
		r = r + s->alpha_weight * x.abs().pow(s->alpha).sum() / (V * std::pow(s->bound, s->alpha));
	if (s->tv_weight > 0) {
		at::Tensor sq;
		for (int64_t d = 0; d < nsp; d++) {
			/* forward differences along d, on the region where all exist */
			at::Tensor dd = x.narrow(2 + d, 1, x.size(2 + d) - 1) - x.narrow(2 + d, 0, x.size(2 + d) - 1);
			for (int64_t e = 0; e < nsp; e++)
				if (e != d)
					dd = dd.narrow(2 + e, 0, x.size(2 + e) - 1);
			sq = sq.defined() ? sq + dd * dd : dd * dd;
		}
		double Vb = s->bound / 6.5;
		r = r + s->tv_weight * (sq + 1e-12).pow(s->tv_beta / 2).sum() / (V * std::pow(Vb, s->tv_beta));
	}
	return r;
}

struct Objective {
	esg_model *m;
	const esg_explain_spec *s;
	std::shared_ptr<torch::jit::GraphFunction> fn;
	std::string lname;
	at::Tensor ref;                /* invert: the layer's output for x */
	bool checked = false;
	at::Tensor last;               /* the layer's output of the last call */

	/* The main term of x's objective (as maximised / minimised). */
	at::Tensor operator()(const at::Tensor &x)
	{
		CallMeter meter(m, at::GradMode::is_enabled(), x.size(0), x.size(0), (int)x.dim(), x.sizes().data());
		at::Tensor a = run_graph(m, *fn, x);
		if (!checked)
			check(a);
		last = a;
		switch (s->objective) {
		case ESG_OBJ_NORM:
			return (s->channel >= 0 ? a.select(1, s->channel) : a).pow(2).sum().sqrt();
		case ESG_OBJ_CHANNEL:
			return a.select(1, s->channel).mean();
		case ESG_OBJ_LAYER:
			return a.pow(2).mean();
		case ESG_OBJ_CLASS:
			return a.select(1, s->target).sum();
		case ESG_OBJ_INVERT:
			if (a.sizes() != ref.sizes())
				fail("layer '" + lname + "' output " + shape_str(a.sizes()) +
				     " differs from the reference's " + shape_str(ref.sizes()));
			return (a - ref).pow(2).sum() / ref.pow(2).sum().clamp_min(1e-30);
		case ESG_OBJ_UNIT: {
			/* transforms keep the image's size, so the unit keeps
			 * its place */
			at::Tensor u = a.select(1, s->channel);
			for (int i = 0; i < s->n_unit; i++)
				u = u.select(1, s->unit[i]);
			return u.mean();
		}
		}
		fail("unknown objective");
	}

	void check(const at::Tensor &a)
	{
		checked = true;
		if (s->objective == ESG_OBJ_CLASS) {
			if (a.dim() != 2 || a.size(0) != 1)
				fail("model output is " + shape_str(a.sizes()) +
				     ", not per-class scores [N, C]; wrap a segmentation model with esg-wrap");
			if (s->target < 0 || s->target >= a.size(1))
				fail("target " + std::to_string(s->target) + " is out of range: the model has " +
				     std::to_string(a.size(1)) + " classes");
			return;
		}
		if (s->channel >= 0 && (a.dim() < 2 || s->channel >= a.size(1)))
			fail("channel " + std::to_string(s->channel) + " is out of range: layer '" + lname +
			     "' has " + std::to_string(a.dim() < 2 ? 0 : a.size(1)) + " channels (output " +
			     shape_str(a.sizes()) + ")");
		if (s->objective == ESG_OBJ_UNIT) {
			if (s->n_unit != a.dim() - 2)
				fail("--unit gives " + std::to_string(s->n_unit) + " index(es); layer '" + lname +
				     "' output " + shape_str(a.sizes()) + " has " + std::to_string(a.dim() - 2) +
				     " spatial axes");
			for (int i = 0; i < s->n_unit; i++)
				if (s->unit[i] < 0 || s->unit[i] >= a.size(2 + i))
					fail("unit index " + std::to_string(s->unit[i]) + " is out of range on axis " +
					     std::to_string(i) + " of layer '" + lname + "' output " + shape_str(a.sizes()));
		}
	}
};

/* Lucid's diversity: Gram matrices [B, C, C] of the items' activations,
 * each normalised to unit Frobenius norm, and the mean over items of their
 * summed inner products with the other items'. */
at::Tensor diversity(const at::Tensor &a)
{
	int64_t B = a.size(0), C = a.size(1);
	at::Tensor f = a.reshape({B, C, -1});
	at::Tensor g = at::bmm(f, f.transpose(1, 2));
	g = g / at::sqrt(g.pow(2).sum({1, 2}, true).clamp_min(1e-10));
	at::Tensor sum = g.sum(0);
	return (sum.pow(2).sum() - g.pow(2).sum()) / (double)B;
}

struct Optimiser {
	const esg_explain_spec *s;
	at::Tensor m1, m2, buf;
	int64_t t = 0;

	void step(at::Tensor &p, at::Tensor g, double lr)
	{
		torch::NoGradGuard ng;
		if (s->normalize_grad)
			g = g / (g.abs().mean() + 1e-8);
		t++;
		if (s->sgd) {
			if (s->momentum != 0) {
				buf = buf.defined() ? buf.mul_(s->momentum).add_(g) : g.clone();
				g = buf;
			}
			p.add_(g, -lr);
			return;
		}
		if (!m1.defined()) {
			m1 = at::zeros_like(p);
			m2 = at::zeros_like(p);
		}
		m1.mul_(s->beta1).add_(g, 1 - s->beta1);
		m2.mul_(s->beta2).addcmul_(g, g, 1 - s->beta2);
		double bc1 = 1 - std::pow(s->beta1, (double)t);
		double bc2 = 1 - std::pow(s->beta2, (double)t);
		at::Tensor denom = (m2.sqrt() / std::sqrt(bc2)).add_(s->eps);
		p.addcdiv_(m1, denom, -lr / bc1);
	}
};

double lr_at(const esg_explain_spec *s, int t)
{
	if (!s->cosine || s->steps <= 1)
		return s->lr;
	return s->lr * 0.5 * (1 + std::cos(M_PI * t / s->steps));
}

void check_spec(const esg_explain_spec *s, int ndim, const int64_t *shape, const float *x)
{
	if (ndim != 4 && ndim != 5)
		fail("the image must be [1, C, H, W] or [1, C, D, H, W], not " +
		     shape_str(at::IntArrayRef(shape, ndim)));
	if (shape[0] != 1 && !(s->diversity > 0))
		fail("one item at a time (shape " + shape_str(at::IntArrayRef(shape, ndim)) + ")");
	if (s->diversity > 0 && (s->objective == ESG_OBJ_NORM || s->objective == ESG_OBJ_CLASS ||
				 s->objective == ESG_OBJ_INVERT))
		fail("diversity is feature_vis's");
	if (s->diversity > 0 && shape[0] < 2)
		fail("diversity needs a batch of 2 images or more (--shape N,... with N >= 2)");
	for (int d = 0; d < ndim; d++)
		if (shape[d] < 1)
			fail("empty image shape " + shape_str(at::IntArrayRef(shape, ndim)));
	if (s->steps < 0 || s->octaves < 1)
		fail("steps must be >= 0 and octaves >= 1");
	if ((s->objective == ESG_OBJ_INVERT || s->init_input || s->objective == ESG_OBJ_NORM) && !x)
		fail("this method needs an input image");
	if (s->objective != ESG_OBJ_CLASS && !s->layer.name)
		fail("this objective needs a layer");
	if (s->decorrelate && (ndim != 4 || shape[1] != 3))
		fail("colour decorrelation needs a 3-channel 2D image");
	if (s->fft && s->init_input)
		fail("the fft parameterisation starts from noise");
	if (s->blur_every > 0 && s->fft)
		fail("blur works on the pixel parameterisation");
	if ((s->alpha_weight > 0 || s->tv_weight > 0) && !(s->bound > 0))
		fail("the alpha-norm and TV regularisers need bound > 0");
	if (s->objective == ESG_OBJ_INVERT && has_transforms(s))
		fail("invert compares the layer's output with the input's: no transforms");
	if (s->octaves > 1 && (s->fft || !s->init_input))
		fail("octaves need a pixel image started from the input");
}

} // namespace

extern "C" int64_t esg_explain_trace_len(const esg_explain_spec *s)
{
	return s ? (int64_t)s->steps * (s->octaves > 0 ? s->octaves : 1) : 0;
}

extern "C" int esg_model_explain(esg_model *m, const esg_explain_spec *s, const float *x, int ndim,
				 const int64_t *shape, float *image, float *trace, double *initial,
				 double *final, esg_explain_progress cb, void *ctx)
{
	try {
		if (!m || !s || !shape || !image)
			fail("esg_model_explain: NULL argument");
		check_spec(s, ndim, shape, x);
		if (m->amp != at::kFloat)
			fail("esg-explain runs in float32 (mixed precision is off for it)");
		std::vector<int64_t> sh(shape, shape + ndim);
		Objective obj{m, s, nullptr, s->layer.name ? s->layer.name : "", {}, false, {}};
		if (s->objective == ESG_OBJ_CLASS)
			obj.fn = edited(m, EDIT_RULE, nullptr, ESG_RULE_PLAIN);
		else
			obj.fn = edited(m, EDIT_CUT, &s->layer, ESG_RULE_PLAIN);
		at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(s->seed);
		at::Tensor x0;
		if (x)
			x0 = torch::from_blob(const_cast<float *>(x), sh, at::kFloat).to(m->dev, at::kFloat, false, true);

		/* the reference (invert) and the checks of channel / unit / target */
		if (s->objective == ESG_OBJ_INVERT) {
			torch::NoGradGuard ng;
			CallMeter meter(m, false, 1, 1, ndim, shape);
			obj.ref = run_graph(m, *obj.fn, x0).detach();
			obj.check(obj.ref);
		}

		/* the start image (noise drawn first from the generator) */
		Image im;
		im.shape = sh;
		im.fft = s->fft;
		im.decor = s->decorrelate;
		if (s->fft)
			make_fft(im, gen, s->init_std);
		else if (s->init_input)
			im.p = x0.clone();
		else
			im.p = (at::randn(sh, gen, at::kFloat) * s->init_std);
		im.p = im.p.to(m->dev);
		if (im.scale.defined())
			im.scale = im.scale.to(m->dev);

		{
			torch::NoGradGuard ng;
			at::Tensor v = obj(im.image());
			if (initial)
				*initial = v.item<double>();
		}

		/* deepdream's pyramid: sizes from small to the image's own */
		int O = s->octaves;
		std::vector<std::vector<int64_t>> sizes(O);
		for (int k = 0; k < O; k++)
			for (int d = 2; d < ndim; d++)
				sizes[k].push_back(std::max<int64_t>(
					1, (int64_t)std::llround(sh[d] / std::pow(s->octave_scale, O - 1 - k))));
		at::Tensor detail;
		bool maximise = s->objective != ESG_OBJ_INVERT;
		int64_t total = esg_explain_trace_len(s), done = 0;
		for (int k = 0; k < O; k++) {
			at::Tensor base;
			if (O > 1) {
				torch::NoGradGuard ng;
				base = resize(x0, sizes[k]);
				if (detail.defined())
					detail = blur(resize(detail, sizes[k]), s->octave_blur);
				else
					detail = at::zeros_like(base);
				im.p = (base + detail).contiguous();
			}
			Optimiser opt{s, {}, {}, {}, 0};
			for (int t = 0; t < s->steps; t++) {
				im.p.requires_grad_(true);
				at::Tensor img = im.image();
				at::Tensor v = obj(transform(s, img, gen));
				at::Tensor loss = (maximise ? -v : v) + regularisers(s, img);
				if (s->diversity > 0)
					loss = loss + s->diversity * diversity(obj.last);
				at::Tensor g = torch::autograd::grad({loss}, {im.p})[0];
				im.p = im.p.detach();
				if (trace)
					trace[done] = v.item<float>();
				opt.step(im.p, g, lr_at(s, t));
				if (s->blur_every > 0 && (t + 1) % s->blur_every == 0) {
					torch::NoGradGuard ng;
					im.p = blur(im.p, s->blur_sigma).contiguous();
				}
				done++;
				if (cb)
					cb(ctx, done, total);
			}
			if (O > 1) {
				torch::NoGradGuard ng;
				detail = im.p - base;
			}
		}

		torch::NoGradGuard ng;
		im.p = im.p.detach();
		at::Tensor out = im.image().contiguous().to(at::kCPU);
		if (out.sizes() != at::IntArrayRef(sh))
			fail("internal: the image came out " + shape_str(out.sizes()));
		if (final)
			*final = obj(out.to(m->dev)).item<double>();
		memcpy(image, out.data_ptr<float>(), (size_t)out.numel() * sizeof(float));
		return 0;
	}
	SHIM_CATCH(-1)
}
