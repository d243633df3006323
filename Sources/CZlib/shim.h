#ifndef KDL_CZLIB_SHIM_H
#define KDL_CZLIB_SHIM_H
/* zlib: only its CRC-32 is used (S3's x-amz-checksum-crc32). */
#include <zlib.h>
#endif
