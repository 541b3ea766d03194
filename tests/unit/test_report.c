/* test_report.c - the HTML report's pieces: base64 (RFC 4648 vectors), PNG
 * in memory, link templates, TSV tables and a page from tiny records. */
#include "stream/stream.h"
#include "render/render.h"
#include "render/report.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static void test_base64(void)
{
	static const char *in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *want[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	for (int i = 0; i < 7; i++) {
		char out[16] = "";
		size_t n = esg_base64_encode(in[i], strlen(in[i]), out);
		out[n] = 0;
		ok(strcmp(out, want[i]) == 0, "base64('%s') = '%s' (got '%s')", in[i], want[i], out);
	}
	unsigned char all[3] = { 0xfb, 0xff, 0xbf };
	char out[8];
	size_t n = esg_base64_encode(all, 3, out);
	ok(n == 4 && memcmp(out, "+/+/", 4) == 0, "base64 uses + and /");
}

static int has_chunk(const unsigned char *p, size_t n, const char *type)
{
	for (size_t i = 8; i + 8 <= n;) {
		size_t len = (size_t)p[i] << 24 | (size_t)p[i + 1] << 16 | (size_t)p[i + 2] << 8 | p[i + 3];
		if (memcmp(p + i + 4, type, 4) == 0)
			return 1;
		i += 12 + len;
	}
	return 0;
}

static void test_png_memory(void)
{
	unsigned char px[6 * 4], pal[3 * 4] = { 0, 0, 0, 0, 255, 0, 0, 128, 0, 0, 255, 255 };
	for (int i = 0; i < 24; i++)
		px[i] = (unsigned char)(i % 3);
	esg_png_image im = { ESG_PNG_PALETTE, 6, 4, px, pal, 3 };
	unsigned char *buf;
	size_t n;
	ok(esg_png_encode(&im, &buf, &n) == 0 && n > 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0,
	   "palette PNG in memory");
	ok(has_chunk(buf, n, "PLTE") && has_chunk(buf, n, "tRNS") && has_chunk(buf, n, "IEND"),
	   "with PLTE, tRNS (the alpha) and IEND");
	free(buf);
	im = (esg_png_image){ ESG_PNG_GRAY, 6, 4, px, NULL, 0 };
	ok(esg_png_encode(&im, &buf, &n) == 0 && !has_chunk(buf, n, "PLTE"), "gray PNG in memory");
	free(buf);
	im.w = 0;
	ok(esg_png_encode(&im, &buf, &n) < 0 && strstr(esg_error(), "0x4"), "an empty picture is refused: %s",
	   esg_error());
}

static void test_links(void)
{
	ok(esg_report_check_link("maps/{input}/{model}/{method}.nii.gz") == 0, "a relative template");
	ok(esg_report_check_link("{method}") == 0, "a bare placeholder");
	ok(esg_report_check_link("/abs/{input}") < 0 && strstr(esg_error(), "absolute"), "absolute refused");
	ok(esg_report_check_link("http://x/{input}") < 0 && strstr(esg_error(), "scheme"), "URL refused");
	ok(esg_report_check_link("file:x") < 0, "file: refused");
	ok(esg_report_check_link("a/{subject}") < 0 && strstr(esg_error(), "{subject}"), "unknown placeholder: %s",
	   esg_error());
	ok(esg_report_check_link("a/{input") < 0, "unclosed placeholder");
	ok(esg_report_check_link("./x:y/{input}") == 0, "a colon after a slash is a path");
}

static esg_record *record(const char *source, const char *model, const char *method)
{
	esg_record *r = esg_record_new();
	int64_t shape[4] = { 1, 1, 3, 4 };
	float img[12], att[12] = { 0 };
	for (int i = 0; i < 12; i++)
		img[i] = (float)i;
	att[5] = 1;
	esg_record_add_f32(r, "image", 4, shape, img);
	esg_record_add_f32(r, "attribution", 4, shape, att);
	esg_meta_set(r, "esg.source", source);
	esg_meta_set(r, "esg.model", model);
	esg_meta_set(r, "esg.method", method);
	return r;
}

static void test_page(void)
{
	esg_report_opts o = { .title = "a <title>", .clip = 99.5, .threshold = -1, .alpha = 0.5,
			      .channel = ESG_CH_SUM, .sign = ESG_SIGN_ABS, .aspect = 1, .slice = -1 };
	esg_report *rp = esg_report_new(&o);
	ok(rp != NULL, "a report");
	ok(esg_report_add_table(rp, "t.tsv", "a\tb\n1\t2\n3\t4\n", 12) == 0, "a table");
	ok(esg_report_add_table(rp, "t.tsv", "a\tb\n1\t2\t3\n", 10) < 0 && strstr(esg_error(), "line 2 has 3 fields"),
	   "a ragged table refused: %s", esg_error());
	ok(esg_report_add_table(rp, "t.tsv", "", 0) < 0 && strstr(esg_error(), "empty"), "an empty table refused");
	esg_record *r = record("dir/x.nii.gz", "m/net.pt", "saliency");
	ok(esg_report_add_record(rp, r, "s: record 0", "s", 0) == 0, "a record");
	ok(esg_report_add_record(rp, r, "s: record 1", "s", 1) == 0 && esg_report_n_warnings(rp) == 1 &&
	   strstr(esg_report_warning(rp, 0), "given again"), "the same cell again: a warning");
	esg_record_remove(r, "attribution");
	ok(esg_report_add_record(rp, r, "s: record 2", "s", 2) < 0 &&
	   strncmp(esg_error(), "s: record 2: no tensor 'attribution'", 35) == 0, "no attribution: %s", esg_error());
	esg_record_free(r);
	char *page = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&page, &n);
	ok(esg_report_write(rp, f) == 0, "the page is written");
	fclose(f);
	ok(strstr(page, "<title>a &lt;title&gt;</title>") != NULL, "the title escaped");
	ok(strstr(page, "data-input=\"x\"") && strstr(page, "data-model=\"net\"") && strstr(page, "data-method=\"saliency\""),
	   "input, model and method named from esg.source, esg.model, esg.method");
	ok(strstr(page, "http://") == NULL && strstr(page, "https://") == NULL, "no URL");
	ok(strstr(page, "<td>3</td><td>4</td>") != NULL, "the table's rows");
	ok(strstr(page, "class=\"slice\"") == NULL, "a 2D input has no slider");
	free(page);
	esg_report_free(rp);
}

int main(void)
{
	test_base64();
	test_png_memory();
	test_links();
	test_page();
	return tap_done();
}
