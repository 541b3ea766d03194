/* builder.c - the config builder page of esg-config --builder (config.h). */
#include "config/config.h"
#include "stream/stream.h"

/* builder_js.c (generated from builder.js and builder.css by
 * lib/render/js2c.sh) */
extern const char esg_builder_js[], esg_builder_css[];

int esg_config_builder(FILE *f)
{
	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
	      "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
	      "<meta name=\"generator\" content=\"esg-config " ESG_VERSION "\">\n"
	      "<script>window.esgErrors=[];window.addEventListener('error',function(e){"
	      "window.esgErrors.push(String(e.message||e));});</script>\n"
	      "<title>esegeta: run config builder</title>\n<style>\n", f);
	fputs(esg_builder_css, f);
	fputs("</style>\n</head><body>\n<h1>esegeta run config builder</h1>\n"
	      "<p class=\"meta\">Choose inputs, models, methods and what to measure; the config below is checked "
	      "as you type with esg-config's rules and messages (made by esg-config " ESG_VERSION
	      "). Files are not opened here: esg-config checks that they exist when you run it. "
	      "Then save the config and run <code>pipelines/run CONFIG.json</code>.</p>\n"
	      "<noscript><p>This page is a form driven by its script: enable JavaScript.</p></noscript>\n"
	      "<main id=\"builder\"></main>\n"
	      "<script type=\"application/json\" id=\"esg-schema\">", f);
	if (esg_config_schema(f) < 0)
		return -1;
	fputs("</script>\n<script>\n", f);
	fputs(esg_builder_js, f);
	fputs("</script>\n</body></html>\n", f);
	return ferror(f) ? esg_set_error("write error") : 0;
}
