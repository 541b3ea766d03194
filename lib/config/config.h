/* config.h - JSON run configs (doc/config.md) and the Make fragment a
 * config becomes (pipelines/run.mk includes it).
 *
 * esg_config_load() reads and checks a whole config before anything runs:
 * every error names the field ("methods[2].params.n_steps: ...") and the
 * reason.  esg_config_write_make() writes the fragment: one explicit rule
 * per job, each depending on a stamp file that holds the job's
 * result-affecting arguments; stamps are rewritten only when their text
 * changes, so editing one method's parameters reruns that method only.
 */
#ifndef ESG_CONFIG_H
#define ESG_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef struct esg_config esg_config;

/* NULL with esg_error() set ("PATH: FIELD: reason") on any problem. */
esg_config *esg_config_load(const char *path);
void esg_config_free(esg_config *c);

/* The output folder named by the config. */
const char *esg_config_output(const esg_config *c);

/* Write the Make fragment to `out`; stamps go under `stamp_dir` (created as
 * needed; normally $(OUT)/.args; NULL: write no stamps).  Paths in the fragment are relative to
 * the directory make runs in, as are the config's own paths.  Returns the
 * number of jobs, -1 on error. */
int esg_config_write_make(const esg_config *c, FILE *out, const char *stamp_dir);

/* The schema of a config as JSON: the fields of each object (the same
 * lists esg_config_load checks against), their types, values, ranges and
 * help, and every method of esg-attr with its parameters (kinds, defaults,
 * ranges, choices, help) and aliases.  Returns -1 on a write error. */
int esg_config_schema(FILE *f);

/* The config builder page (builder.c): a self-contained offline HTML form
 * made from esg_config_schema() that checks as you type with esg-config's
 * rules and messages and writes the JSON pipelines/run takes. */
int esg_config_builder(FILE *f);

/* A memory budget as --memory, ESG_MEMORY and jobs.memory give it: a size
 * ("6G", "500M": K M G T, 1024-based, at least 64M) or a share of what the
 * process may use ("50%").  Sets *bytes (0 for a share) and *share (the
 * share, untouched for a size); -1 with esg_error() saying why. */
int esg_memory_parse(const char *text, uint64_t *bytes, double *share);

#endif
