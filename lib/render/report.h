/* report.h - the self-contained HTML report of `esg-render --html`.
 *
 * Records (from esg-attr) are added one at a time; each map is turned into
 * compact PNG sprites at once (every slice along the view, then the
 * maximum-intensity projection, tiled in a grid), so no volume is kept.
 * The page groups them per input (basename of esg.source): a grid of
 * methods (esg.label, else esg.method_alias, else esg.method) by models
 * (basename of esg.model), randomisation strips for models named
 * DIR/step-NN-NAME.pt (esg-randomise), a gallery of esg-explain's
 * optimised images per layer (rows: label and channel; columns: models),
 * and TSV tables, drawn by the page's
 * script (report_js.c) as a summary, methods x metrics matrices, the
 * randomisation sanity-check curves and deletion / insertion curves.  Everything is
 * inline (data: URIs, inline CSS and JS), so the page works offline.
 *
 * Never prints; failures return -1 with esg_error() set.
 */
#ifndef ESG_REPORT_H
#define ESG_REPORT_H

#include "render/render.h"

typedef struct esg_report_opts {
	const char *title;      /* NULL: "esegeta report" */
	const char *link;       /* each grid cell links here (see esg_report_check_link); NULL: no links */
	const char *tensor;     /* the map (NULL: attribution) */
	const char *background; /* the gray picture under it (NULL: image) */
	esg_view view;
	int radiological, aspect;
	int zoom;               /* display scale (1..16); 0: the longer side about 160 pixels */
	int mip;                /* start on the projections */
	int64_t slice;          /* first slice shown; -1: the middle */
	int64_t batch;          /* batch item */
	int channel;            /* of the map: index, ESG_CH_SUM or ESG_CH_MEAN; the background
			           uses the index, else the mean */
	esg_sign sign;
	const esg_cmap *cmap;   /* NULL: hot, bwr for ESG_SIGN_ALL */
	double clip, threshold, alpha; /* threshold < 0: 0.1 (as --png --overlay) */
	const char *base;       /* the page's folder as the tables name it ("demo-out"); cells
				   under it are shown relative to the page; NULL or "": none */
} esg_report_opts;

typedef struct esg_report esg_report;

esg_report *esg_report_new(const esg_report_opts *o);   /* new; NULL on failure */
void esg_report_free(esg_report *rp);

/* A link template: a path relative to the HTML file (no scheme, not
 * absolute) with the placeholders {input}, {model} and {method} only. */
int esg_report_check_link(const char *tmpl);

/* Add one record; `where` names it in messages ("a.st.zst: record 2");
 * `file` (NULL: unknown) and `index` say where it came from, as esg-metric's
 * tables name it (columns source, record), so that the evaluation can join
 * their rows to the grid's inputs, models and methods.
 * Reads DIR/manifest.json the first time a randomisation step of DIR is
 * seen (a missing manifest means the strip has no original frame; one that
 * cannot be read or parsed is an error). */
int esg_report_add_record(esg_report *rp, const esg_record *r, const char *where, const char *file,
			  size_t index);

/* Add a table: text is a TSV file (a header line, then rows with as many
 * fields); name is its caption.  Messages do not name it (the caller does).
 * The page recognises tables by their columns: esg-metric's (source,
 * method, metric, value: the methods x metrics matrices and the
 * randomisation curves), esg-metric --curves (curve, fraction, normalised:
 * deletion / insertion curves) and pipelines/summary's (job, status,
 * wall_s: the run's summary); every table is also shown as it is, collapsed,
 * with a download link. */
int esg_report_add_table(esg_report *rp, const char *name, const char *text, size_t n);

/* Write the page.  Fails if nothing was added. */
int esg_report_write(esg_report *rp, FILE *f);

/* Things worth telling the user (a cell given twice, ...). */
size_t esg_report_n_warnings(const esg_report *rp);
const char *esg_report_warning(const esg_report *rp, size_t i);

/* Standard base64 with padding; out holds 4 * ((n + 2) / 3) bytes (no NUL
 * written).  Returns the length. */
size_t esg_base64_encode(const void *in, size_t n, char *out);

#endif
