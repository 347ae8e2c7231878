#!/bin/sh
# Rebuilds the prebuilt aarch64 fixtures from ../kernels.c with Debian's cross compiler
# (apt-get install gcc-aarch64-linux-gnu). They are committed so that the aarch64 decoding tests
# run on x86-64 machines without a cross compiler; the analysis reads them without loading them.
set -e
cd "$(dirname "$0")"
CC=${CC:-aarch64-linux-gnu-gcc}
LDFLAGS="-Wl,-z,max-page-size=0x1000 -Wl,-z,common-page-size=0x1000 -Wl,--build-id=none"
$CC -shared -fPIC -O0 $LDFLAGS -o kernels_O0.so ../kernels.c -lm
$CC -shared -fPIC -O2 $LDFLAGS -o kernels_O2.so ../kernels.c -lm
$CC -shared -fPIC -O2 -fno-plt $LDFLAGS -o kernels_noplt.so ../kernels.c -lm
