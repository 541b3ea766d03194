/* local.h - receptive-field-local evaluation of a voxel-sum score (local.c),
 * for perturbation methods that change one region of the input at a time
 * (occlusion, feature ablation: lib/attr/perturb/perturb.c) and for any
 * patch-wise code that needs a model's receptive field.  Internal to
 * lib/attr.  Library rules as in stream.h.
 *
 * A model wrapped by esg-wrap --reduce fixed-mask or argmax scores an item
 * as f(x) = sum over voxels v of g(y_v), y = activation(model(x)) and g the
 * per-voxel term its source declares (esg_model_voxel_score).  When model
 * is local -- an input voxel p changes only the outputs in the box
 * [p - lo, p + hi] -- then perturbing a region W changes f by
 *     f(x') - f(x) = sum over v in O of g(y_v(x')) - g(y_v(x)),
 *     O = (W + [-lo, +hi]) within the volume,
 * and y_v(x') for v in O needs only the input crop O + [-hi, +lo] (within
 * the volume; its start aligned to the model's shift period, its size a
 * multiple of it): every output in O then sees exactly the inputs, and the
 * intermediate values, of the whole-volume pass.  y(x) is kept from one
 * whole-volume pass per item.
 *
 * How the receptive field is found (esg_local_open), on a crop of x0 at
 * the volume's centre, 64 voxels a side, then 128 ... until the model is
 * found local or the crop is the volume (steps 1-3 then cost crop passes;
 * step 2 checks the translation equivariance that lets the crop speak for
 * the volume):
 *   1. NaN probe: the input voxel at the centre (all channels) set to NaN,
 *      and a finite probe (the same voxel moved by 1000 (1 + |x|)); the
 *      outputs either changes, over all channels, are its projective field.
 *      NaN follows every arithmetic dependence whatever the weights and
 *      activations (dead ReLUs, max-pool winners), the finite probe the
 *      dependences a comparison would hide (where(x > 0, ...)).
 *      Not local, with the reason: a probe reaches every output voxel
 *      (global pooling, instance / layer norm over the volume, attention)
 *      or the volume's border (receptive field too large for this size).
 *   2. Shift period S: the smallest S in 1, 2, 4 .. 64 for which the model
 *      on the input cropped at S (all axes) gives the whole-volume outputs
 *      (1e-4 of max |y|) farther than r + 2S from its start (r: step 1's
 *      radius): the pooling grid of a
 *      strided model (a U-Net: 2^levels).  None: not local.
 *   3. Both probes with a block of S^nsp voxels (step 1 is the NaN probe
 *      alone, on one voxel), so that every phase modulo S is covered;
 *      lo = c + S - 1 - min, hi = max - c per axis (a bound for every
 *      phase).
 *   4. On the first item: sum over v of g(y_v) must equal the wrapper's own
 *      score (1e-5 of sum |g| + 1e-6), else not local.
 */
#ifndef ESG_ATTR_LOCAL_H
#define ESG_ATTR_LOCAL_H

#include "stream/stream.h"

struct esg_model;

enum { ESG_LOCAL_FIXED_MASK = 1, ESG_LOCAL_ARGMAX = 2 };

/* called with each pushed crop's tag and f(x') - f(x) */
typedef void (*esg_local_fn)(void *ctx, int64_t tag, double delta);

typedef struct esg_local {
	int on;                          /* 1: evaluate locally */
	char info[200];                  /* "crop rf=..." when on, the reason when off */
	struct esg_model *model;
	int kind;                        /* ESG_LOCAL_* */
	int nsp, C, Cout;                /* spatial axes, input / output channels */
	int64_t dims[ESG_MAX_DIMS];      /* spatial sizes */
	int64_t lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS];
	int64_t align;                   /* shift period S */
	size_t V;                        /* voxels */
	esg_tensor *mask;                /* fixed-mask: the wrapper's mask */
	/* the current item */
	int64_t item, target;
	const float *x;                  /* [C, spatial] */
	float *y;                        /* [Cout, spatial], activated output of x */
	/* the crop batch: crops of one shape */
	int max_batch, cap, used;
	int64_t cshape[ESG_MAX_DIMS];    /* [B, C, crop...] */
	size_t cvals, bufvals;
	float *buf;
	int64_t *tags, *clo, *olo, *ohi; /* per slot: tag, crop start, outputs box (nsp each) */
	esg_local_fn fn;
	void *ctx;
	int64_t passes, evaluations;
} esg_local;

/* Decide whether m scores locally on inputs shaped [N, C, spatial...]
 * (ndim >= 3), probing on item x0 ([C, spatial], C-order): L->on and
 * L->info say what was found.  box: the spatial size of the regions to be
 * perturbed (NULL: one voxel); when even the crop of one at the corner (the
 * smallest) would be the whole volume by step 1's radius, there is nothing
 * to gain: off, after two passes.  Returns -1 only on errors that are not a
 * reason to evaluate the whole volume (out of memory).  max_batch: crops
 * per call at most (the budget may take fewer).  Free with esg_local_close. */
int esg_local_open(esg_local *L, struct esg_model *m, int ndim, const int64_t *shape,
		   const float *x0, const int64_t *box, int max_batch, esg_local_fn fn, void *ctx);
/* Start item `item` (x: [C, spatial]) with target class `target`: one
 * whole-volume pass for y(x) (none for item 0 of the probed input: the
 * probes' outputs are kept); the first item also checks the decomposition
 * (step 4 above: L->on may become 0).  Pushes of the previous item must be
 * flushed. */
int esg_local_item(esg_local *L, const float *x, int64_t item, int64_t target);
/* The boxes for a perturbed spatial box [blo, bhi): the outputs it can
 * change [olo, ohi) and the input crop [clo, chi) that computes them. */
void esg_local_boxes(const esg_local *L, const int64_t *blo, const int64_t *bhi,
		     int64_t *olo, int64_t *ohi, int64_t *clo, int64_t *chi);
/* A slot for the crop [clo, chi) (outputs [olo, ohi), not empty: an empty
 * region changes nothing, so callers skip it), filled with the
 * item's input there ([C, crop...], C-order); the caller writes its
 * perturbation into it (crop coordinates) and calls esg_local_commit.  A
 * crop of another shape flushes the batch first.  NULL on error. */
float *esg_local_slot(esg_local *L, const int64_t *olo, const int64_t *ohi, const int64_t *clo,
		      const int64_t *chi);
int esg_local_commit(esg_local *L, int64_t tag);
/* Evaluate what is pending (each crop's delta goes to fn). */
int esg_local_flush(esg_local *L);
void esg_local_close(esg_local *L);

/* esg_local_open for tiles (esg_local_tiled), whose probes on a crop fit
 * where a whole-volume pass does not; then one gradient call on that crop
 * measures what a value costs with autograd.  Step 4's check is not made
 * (tests compare tiles with the whole volume). */
int esg_local_open_tiles(esg_local *L, struct esg_model *m, int ndim, const int64_t *shape,
			 const float *x0);
/* Tiles (patch-wise gradients that are exact): for one item x ([C,
 * spatial]) and target, the score f(x) = sum over v of g(y_v) into *score
 * and its gradient with respect to x into grad ([C, spatial]; NULL: the
 * score alone), tile by tile.  The output voxels are split into a grid of
 * boxes O; each is computed on its input crop (O + [-hi, +lo], aligned as
 * above), scored over O alone, and its gradient added where the crop lies:
 * sum over the tiles of d(score over O)/dx is df/dx, exactly as the whole
 * volume gives it (float rounding aside).  The grid is the one with the
 * fewest input values in all whose crops each fit what the memory budget
 * leaves now (esg_model_values_fit: measured per value, tiles may grow
 * after the first), and at most limit input values when limit > 0; the
 * tiles per axis into grid (NULL: not wanted).  rule: an esg_backward_rule;
 * other than ESG_RULE_PLAIN (DeepLift's, with the baseline ref [C,
 * spatial]; a rule must be linear in the output gradient) it needs a fixed-mask wrapper and grad, and each tile
 * runs the wrapper with its mask set to the tile's weights
 * (esg_model_mask_grad); the score is then f(x) - f(ref) for DeepLift.  A
 * tile the budget refuses (it cost more than measured) makes the grid finer
 * and the item start again. */
int esg_local_tiled(esg_local *L, const float *x, const float *ref, int rule, int64_t item,
		    int64_t target, int64_t limit, float *grad, double *score, int64_t *grid);
/* The score of every channel c of the per-voxel output (scores[L->Cout]:
 * sum over v of g(y_v) with target c, as the wrapper's forward gives it)
 * for item `item` x, tile by tile without autograd: the class scores of a
 * volume whose whole forward does not fit (esg-attr's target pass). */
int esg_local_tiled_scores(esg_local *L, const float *x, int64_t item, int64_t limit,
			   double *scores, int64_t *grid);
/* grid (tiles per axis) as "2x4x1" into buf; returns the tile count. */
int64_t esg_local_grid_str(const esg_local *L, const int64_t *grid, char *buf, size_t n);

#endif
