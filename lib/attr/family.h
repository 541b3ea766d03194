/* family.h - how the registry (registry.c) knows the method families; for
 * lib/attr only, never for tools.
 *
 * Each family folder (gradient/, layer/, perturb/) exports one table of its
 * methods, ended by an entry whose name is NULL; the registry lists them in
 * the order below.  A family includes attr.h, this header and its own
 * headers, never another family's: what two families share lives in
 * lib/attr/ itself. */
#ifndef ESG_ATTR_FAMILY_H
#define ESG_ATTR_FAMILY_H

#include "attr/attr.h"

/* The end of a parameter list or of a method table. */
#define ESG_PARAM_END { NULL, 0, NULL, NULL, 0, 0, NULL }
#define ESG_METHOD_END { NULL, NULL, NULL, 0, 0, 0, NULL, 0, 0, 0 }

/* DeepLift's max-pool treatment, a parameter of deeplift, deeplift_shap,
 * layer_deeplift and layer_deeplift_shap: "captum" (Captum's map) or
 * "complete" (sums to f(x) - f(baseline)); esg_backward_rule values in
 * shim/esg_torch.h (ESG_RULE_DEEPLIFT, ESG_RULE_DEEPLIFT_COMPLETE). */
#define ESG_PARAM_MAXPOOL_RULE \
	{ "maxpool_rule", ESG_P_CHOICE, "captum", "captum|complete", 0, 0, \
	  "captum: Captum's map (doc/methods.md); complete: every rule, sums to f(x) - f(baseline)" }
/* 1 if the method's parameters ask for the complete rule. */
#define ESG_DEEPLIFT_COMPLETE(params) \
	(esg_params_str((params), "maxpool_rule") && \
	 strcmp(esg_params_str((params), "maxpool_rule"), "complete") == 0)

extern const esg_method esg_gradient_methods[];   /* gradient/gradient.c */
extern const esg_method esg_layer_methods[];      /* layer/layer.c */
extern const esg_method esg_perturb_methods[];    /* perturb/perturb.c */

/* LRP's rule tables (lrp.c), shared by lrp (gradient/) and layer_lrp
 * (layer/): the methods' parameters, and the table of rules per layer type
 * the parameters give, in esg_model_set_lrp's form (new string; NULL with
 * the error set). */
extern const esg_param_spec esg_lrp_params[];
char *esg_lrp_table(const esg_params *p);
/* The check of an ESG_P_LRP value (key as given): 0, or -1 with the error set. */
int esg_lrp_check_param(const char *key, const char *value);

#endif
