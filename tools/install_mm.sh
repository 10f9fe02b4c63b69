#!/usr/bin/env bash
# Install the OpenMMLab stack for zoo's detection/segmentation integration into an existing venv:
#   mmengine 0.10.7, mmcv 2.1.0 (with its compiled ops), mmdet 3.3.0, mmsegmentation 1.2.2, ftfy, regex.
#
#   usage: tools/install_mm.sh [PYTHON]            (default: .venv/bin/python)
#
# mmcv 2.1.0 is published on PyPI as an sdist only. The wheel is taken from, in order:
#   1. $ZOO_SHARED_WHEELS (default ../shared/wheels): a prebuilt wheel, used only if SHA256SUMS there matches;
#   2. $ZOO_WHEEL_CACHE (default ~/.cache/zoo/wheels): a wheel this script built before;
#   3. a build from the PyPI sdist (about 20 minutes on 2 cores), cached in 2. for the next run.
# The build raises the sdist's -std=c++17 to -std=c++20 (torch 2.14's headers need it) and runs with
# MMCV_WITH_OPS=1, --no-build-isolation, setuptools<70 and wheel. Those old build tools live in a throwaway
# venv that sees the target's torch through a .pth file, so the target venv's setuptools is never touched.
# Set FORCE_CUDA=1 on a CUDA machine to build the CUDA ops as well.
set -euo pipefail
shopt -s inherit_errexit

PY=${1:-.venv/bin/python}
MMCV=2.1.0
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${ZOO_SHARED_WHEELS:-$HERE/../shared/wheels}
CACHE=${ZOO_WHEEL_CACHE:-$HOME/.cache/zoo/wheels}
PIP=("$PY" -m pip install --disable-pip-version-check -q)

log() { echo "[install_mm] $*" >&2; }
BUILD_TMP=
trap '[[ -n "$BUILD_TMP" ]] && rm -rf "$BUILD_TMP"' EXIT

versions() {  # the packages the rest of zoo depends on: they must not change
    "$PY" - <<'EOF'
import importlib.metadata as md
print(' '.join(f'{p}=={md.version(p)}' for p in ('torch', 'torchvision', 'numpy', 'setuptools', 'timm')))
EOF
}

TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL=mmcv-$MMCV-$TAG-$TAG-linux_x86_64.whl
BEFORE=$(versions)

find_wheel() {
    if [[ -f "$SHARED/$WHEEL" && -f "$SHARED/SHA256SUMS" ]]; then
        if (cd "$SHARED" && grep " $WHEEL\$" SHA256SUMS | sha256sum -c --status -); then
            log "using the prebuilt $SHARED/$WHEEL (sha256 ok)"
            echo "$SHARED/$WHEEL"; return
        fi
        log "ignoring $SHARED/$WHEEL: its sha256 does not match SHA256SUMS"
    fi
    if [[ -f "$CACHE/$WHEEL" ]]; then
        log "using the cached $CACHE/$WHEEL"
        echo "$CACHE/$WHEEL"; return
    fi
    build_wheel
}

build_wheel() {
    local tmp site
    tmp=$(mktemp -d)
    BUILD_TMP=$tmp
    log "building mmcv $MMCV with ops from the PyPI sdist (slow: ~20 min on 2 cores)"
    # build tools in a throwaway venv; the target's site-packages (torch) is visible after its own
    "$PY" -m venv "$tmp/buildenv" >&2
    site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$site" > "$("$tmp/buildenv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/target.pth"
    "$tmp/buildenv/bin/python" -m pip install --disable-pip-version-check -q 'setuptools<70' wheel >&2
    # (the sdist's metadata step imports pkg_resources, so even the download needs the old setuptools)
    "$tmp/buildenv/bin/python" -m pip download --disable-pip-version-check -q --no-deps --no-build-isolation \
        --no-binary :all: "mmcv==$MMCV" -d "$tmp" >&2
    tar -xzf "$tmp"/mmcv-$MMCV.tar.gz -C "$tmp"
    sed -i 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-$MMCV/setup.py"
    grep -q -- '-std=c++20' "$tmp/mmcv-$MMCV/setup.py" || { log "setup.py has no -std flag to raise"; exit 1; }
    mkdir -p "$CACHE"
    (cd "$tmp/mmcv-$MMCV" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$tmp/buildenv/bin/python" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps \
        -w "$tmp/dist" . >&2)
    mv "$tmp"/dist/mmcv-$MMCV-*.whl "$CACHE/$WHEEL"
    log "built and cached $CACHE/$WHEEL"
    echo "$CACHE/$WHEEL"
}

if "$PY" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '$MMCV'" 2>/dev/null; then
    log "mmcv $MMCV with ops is already installed"
    MMCV_REQ="mmcv==$MMCV"
else
    MMCV_REQ=$(find_wheel)
fi

# one resolve for the whole stack; the wheel path pins mmcv so pip never falls back to the sdist
"${PIP[@]}" "$MMCV_REQ" mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex

AFTER=$(versions)
if [[ "$BEFORE" != "$AFTER" ]]; then
    log "installing the mm stack changed core packages: before [$BEFORE] after [$AFTER]"
    exit 1
fi
"$PY" -c "
import mmcv, mmdet, mmengine, mmseg
from mmcv.ops import RoIAlign, nms  # the compiled ops Mask R-CNN needs
print('[install_mm] ok: mmengine', mmengine.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__,
      'mmseg', mmseg.__version__)
"
