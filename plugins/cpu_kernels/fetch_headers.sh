#!/bin/sh
# ONNX Runtime's C/C++ API headers for the cpu_kernels library, from Debian 13 "trixie"'s libonnxruntime-dev,
# fetched through a private apt directory: the system's apt configuration, lists and caches are untouched.
# The one source line reuses the URI of this machine's own Debian source (no host name is written here).
#
#   fetch_headers.sh [CACHE_DIR]   prints the include directory (…/usr/include/onnxruntime) on stdout
#
# ORT_INCLUDE_DIR (a directory holding onnxruntime_c_api.h, any ONNX Runtime >= 1.21) skips the download.
set -eu

if [ -n "${ORT_INCLUDE_DIR:-}" ]; then
    if [ -f "$ORT_INCLUDE_DIR/onnxruntime_c_api.h" ]; then echo "$ORT_INCLUDE_DIR"; exit 0; fi
    echo "ORT_INCLUDE_DIR=$ORT_INCLUDE_DIR: no onnxruntime_c_api.h there" >&2; exit 1
fi

CACHE=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/mixtral-trt/ort-headers}
INCLUDE="$CACHE/root/usr/include/onnxruntime"
if [ -f "$INCLUDE/onnxruntime_lite_custom_op.h" ]; then echo "$INCLUDE"; exit 0; fi

for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "cpu_kernels: $tool not found (not Debian/Ubuntu): set ORT_INCLUDE_DIR to ONNX Runtime >= 1.21 headers" >&2
        exit 1; }
done

# the first URI of the system's Debian archive (deb822 or one-line format), security archives excepted
URI=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    URI=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources | tr ' ' '\n' \
          | grep -v -- '-security' | head -n 1 || true)
fi
if [ -z "$URI" ] && [ -f /etc/apt/sources.list ]; then
    URI=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list \
          | grep -v -- '-security' | head -n 1 || true)
fi
if [ -z "$URI" ]; then
    echo "cpu_kernels: no Debian source URI in /etc/apt/sources.list(.d): set ORT_INCLUDE_DIR" >&2; exit 1
fi

APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$CACHE/root"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$KEYRING] $URI trixie main" > "$APT/sources.list"
OPTS="-o Dir::Etc::sourcelist=$APT/sources.list -o Dir::Etc::sourceparts=/dev/null \
 -o Dir::State::Lists=$APT/lists -o Dir::Cache::Archives=$APT/archives -o Dir::State::status=/dev/null \
 -o Debug::NoLocking=1 -o APT::Get::List-Cleanup=0"
# as root, apt would hand the downloads to its sandbox user, who cannot write into this cache
if [ "$(id -u)" = 0 ]; then OPTS="$OPTS -o APT::Sandbox::User=root"; fi
# shellcheck disable=SC2086
apt-get $OPTS -qq update >&2
cd "$APT/archives"
# shellcheck disable=SC2086
apt-get $OPTS -qq download libonnxruntime-dev >&2
DEB=$(ls -t "$APT"/archives/libonnxruntime-dev_*.deb | head -n 1)
dpkg-deb -x "$DEB" "$CACHE/root"
if [ ! -f "$INCLUDE/onnxruntime_lite_custom_op.h" ]; then
    echo "cpu_kernels: $DEB has no onnxruntime_lite_custom_op.h" >&2; exit 1
fi
echo "$INCLUDE"
