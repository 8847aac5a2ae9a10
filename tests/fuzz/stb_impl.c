/* stb_impl.c — stb_image and stb_image_resize compiled into the fuzz targets with the
 * sanitizers and coverage on, so the fuzzer sees into the decoder and ASan checks its
 * accesses (the system's libstb.so is built without them). These definitions take the
 * place of libstb's; the header is the one the library is built against. */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_resize.h>
