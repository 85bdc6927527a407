#!/bin/sh
# MLX's Linux CPU wheel bundles the reference BLAS (~8 GFLOP/s float32 matmul here); OpenBLAS
# runs the same matmul at ~255 GFLOP/s. Install it where we can; mlx_bluey preloads it itself.
set -u
[ "$(uname -s)" = Linux ] || exit 0
for lib in /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0; do
  [ -e "$lib" ] && exit 0
done
sh "$(dirname "$0")/apt_install.sh" libopenblas0-pthread
case $? in
  0) ;;
  2) echo "setup_blas: no apt-get; install OpenBLAS (libopenblas.so.0) yourself or training runs ~30x slower" >&2 ;;
  *) echo "setup_blas: could not install libopenblas0-pthread; MLX will use its slow reference BLAS" >&2 ;;
esac
exit 0
