/* explain.h - explainability methods (esg-explain): what a layer or class
 * has learnt, as images optimised through the model.
 *
 * The methods' table (names, parameters with defaults and ranges, what each
 * needs) and the translation of a method, its parameters and the command
 * line's layer / channel / unit / target into the shim's
 * esg_explain_spec; the optimisation itself runs in the shim
 * (esg_model_explain, lib/shim/explain.cpp).  Parameters are resolved by
 * lib/attr's parameter code (esg_params_resolve), so they are checked,
 * defaulted and recorded as JSON exactly like esg-attr's.
 */
#ifndef ESG_EXPLAIN_H
#define ESG_EXPLAIN_H

#include "attr/attr.h"
#include "shim/esg_torch.h"

/* What a method needs from the command line. */
enum {
	ESG_EX_NO = 0,
	ESG_EX_OPTIONAL = 1,
	ESG_EX_REQUIRED = 2
};

typedef struct esg_explain_method {
	esg_method m;          /* name, summary, params (run unused) */
	int steps;             /* default --steps */
	int input;             /* IN: ESG_EX_REQUIRED, or OPTIONAL (else --shape) */
	int layer;             /* --layer */
	int channel;           /* --channel */
	int unit;              /* --unit (with --channel) */
	int target;            /* --target */
} esg_explain_method;

/* In listing order; NULL past the end. */
const esg_explain_method *esg_explain_at(size_t i);
/* By name; NULL with an error naming the methods if unknown. */
const esg_explain_method *esg_explain_find(const char *name);

/* What the command line says besides the parameters. */
typedef struct esg_explain_request {
	const char *layer;     /* dotted name, NULL: none */
	int layer_call;
	int channel;           /* -1: none */
	int n_unit;            /* 0: no --unit */
	int64_t unit[ESG_MAX_DIMS];
	int64_t target;        /* -1: none */
	int steps;             /* -1: the method's default */
	uint64_t seed;
} esg_explain_request;

/* The checks that need no image: options the method needs or refuses
 * (a missing --layer, a --channel it does not take, --unit without
 * --channel), parameters that contradict each other.  -1 with the error. */
int esg_explain_check(const esg_explain_method *em, const esg_params *p,
		      const esg_explain_request *rq);
/* esg_explain_check, then the request against the method (a missing --layer, a --channel the
 * method does not take ...) and fill *spec from it and the resolved
 * parameters, for an image of nsp spatial axes and C channels.  Settings
 * that depend on the image's values (bound "auto") are left for
 * esg_explain_for_item.  -1 with the error (a usage error) set. */
int esg_explain_setup(const esg_explain_method *em, const esg_params *p,
		      const esg_explain_request *rq, int nsp, int64_t channels,
		      esg_explain_spec *spec);
/* Per item: the seed (request seed + item, counted over the stream) and
 * the bound (parameter, or "auto": max |x| of the input item, 1 when it is
 * 0 or there is no input).  Returns the bound. */
double esg_explain_for_item(const esg_params *p, esg_explain_spec *spec, uint64_t seed,
			    uint64_t item, const float *x, int64_t n);
/* The name of the objective's main term, recorded as esg.objective:
 * "l2_norm", "channel_mean", "unit", "mean_square", "class_score",
 * "representation_loss". */
const char *esg_explain_objective_name(esg_explain_objective o);

#endif
