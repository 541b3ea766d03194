/* fuzz_npy.c - libFuzzer target for the NPY parser and converter
 * (esg_npy_image on a memory buffer).  Build: make fuzz. */
#include "image/image.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the last byte picks options, so layouts and reversal are explored too */
	static const char *layouts[] = { NULL, "NCHW", "CHW", "HWC", "NCDHW", "DHW", "NC", "N" };
	esg_load_opts o = { 0, 0, NULL };
	if (size > 0) {
		o.reverse = data[size - 1] & 1;
		o.layout = layouts[(data[size - 1] >> 1) & 7];
	}
	esg_image_free(esg_npy_image(data, size, "fuzz", &o));
	esg_image_free(esg_npy_image(data, size, "fuzz", NULL));
	return 0;
}
