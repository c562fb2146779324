#!/usr/bin/env bash
# Build real BVLC Caffe (CPU only) from the brocolli-caffe 9.0.2 sdist and install its
# Python package ("caffe") into the given virtual environment.
#
# Why this recipe: no Caffe wheel exists for current Python. brocolli-caffe's setup.py
# insists on conda and Python <= 3.9, but its CMake build works against Debian's
# packages. Its CMakeLists looks for Python/numpy headers under ANACONDA_HOME, so we
# lay out a small fake prefix of symlinks that points at this venv's Python and numpy.
#
# Cached: the result lives in $ZOO_CAFFE_CACHE (default ~/.cache/zoo/caffe-<hash>);
# a second run only re-links it into the venv.
#
# usage: scripts/build_caffe.sh VENV_DIR
set -euo pipefail
VENV=$(cd "${1:?usage: build_caffe.sh VENV_DIR}" && pwd)
PY="$VENV/bin/python"
VERSION=9.0.2
PYVER=$("$PY" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
NPVER=$("$PY" -c 'import numpy; print(numpy.__version__)')
KEY=$(echo "$VERSION $PYVER $NPVER $(uname -m) recipe-2" | sha256sum | cut -c1-12)
CACHE=${ZOO_CAFFE_CACHE:-$HOME/.cache/zoo/caffe-$KEY}
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

install_into_venv() {
  # A .pth file makes the cached package importable from this venv without copying it.
  echo "$CACHE/python" > "$SITE/zoo_caffe.pth"
  echo "caffe: $CACHE/python linked into $VENV"
}

if [ -f "$CACHE/python/caffe/_caffe.so" ] && [ -f "$CACHE/BUILD_OK" ]; then
  install_into_venv; exit 0
fi

# Debian packages Caffe compiles against (CI runs as root; elsewhere use sudo).
DEBS="cmake g++ libboost-system-dev libboost-thread-dev libboost-filesystem-dev
  libboost-python-dev libboost-regex-dev libgoogle-glog-dev libgflags-dev libprotobuf-dev
  protobuf-compiler libhdf5-dev libopenblas-dev libgtest-dev"
missing=$(dpkg-query -W -f='${Status} ${Package}\n' $DEBS 2>/dev/null | grep -v "install ok installed" || true)
if [ -n "$missing" ] || [ "$(dpkg-query -W $DEBS 2>/dev/null | wc -l)" -lt "$(echo $DEBS | wc -w)" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $DEBS
fi

WORK=$(mktemp -d /tmp/zoo-caffe-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
"$PY" -m pip download -q --no-deps --no-binary :all: "brocolli-caffe==$VERSION" -d .
tar xzf "brocolli-caffe-$VERSION.tar.gz"
SRC="$WORK/brocolli-caffe-$VERSION"

# The fake ANACONDA_HOME: include/pythonX.Y, lib/pythonX.Y/site-packages/numpy, and the
# libraries CMake links by their plain names (-lboost_python, -lhdf5, -lhdf5_hl).
PREFIX="$WORK/prefix"
mkdir -p "$PREFIX/include" "$PREFIX/lib/$PYVER/site-packages"
ln -s "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" "$PREFIX/include/$PYVER"
ln -s "$("$PY" -c 'import numpy, os; print(os.path.dirname(numpy.__file__))')" "$PREFIX/lib/$PYVER/site-packages/numpy"
PYNODOT=$(echo "$PYVER" | tr -d 'python.')
ln -s "/usr/lib/$(gcc -dumpmachine)/libboost_python$PYNODOT.so" "$PREFIX/lib/libboost_python.so"
HDF5=/usr/lib/$(gcc -dumpmachine)/hdf5/serial
ln -s "$HDF5/libhdf5.so" "$PREFIX/lib/libhdf5.so"
ln -s "$HDF5/libhdf5_hl.so" "$PREFIX/lib/libhdf5_hl.so"

start=$(date +%s)
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DANACONDA_HOME="$PREFIX" -DPYTHON_VERSION="$PYVER" \
  -DCMAKE_CXX_FLAGS="-I/usr/include/hdf5/serial -Wno-deprecated-declarations" \
  -DCMAKE_SHARED_LINKER_FLAGS="-L$PREFIX/lib -Wl,-rpath,$HDF5" >cmake.log
cmake --build "$WORK/build" -j"$(nproc)" 2>&1 | grep -E "error|Error|^\[ *[0-9]+0%\]" || true
test -f "$SRC/python/caffe/_caffe.so" || { echo "caffe build failed"; exit 1; }
echo "caffe: built in $(( $(date +%s) - start )) s"

# Install: the python/caffe package with _caffe.so resolved (it is a symlink into build/).
rm -rf "$CACHE.tmp"; mkdir -p "$CACHE.tmp/python"
cp -rL "$SRC/python/caffe" "$CACHE.tmp/python/caffe"
rm -rf "$CACHE.tmp/python/caffe/test"
# Debian's protoc writes caffe_pb2.py for protobuf 3.21; regenerate nothing here: zoo
# ships its own caffe_pb2 and only needs _caffe (the C++ net) from this package.
touch "$CACHE.tmp/BUILD_OK"
rm -rf "$CACHE"; mkdir -p "$(dirname "$CACHE")"; mv "$CACHE.tmp" "$CACHE"
install_into_venv
