#ifndef KDL_CJQ_SHIM_H
#define KDL_CJQ_SHIM_H
/* Debian's libjq 1.6 ships no pkg-config file: the modulemap links "jq" directly. */
#include <jq.h>
#include <jv.h>
#endif
