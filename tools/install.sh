#!/usr/bin/env bash
# One-command install of mmvision_ssm and its OpenMMLab stack into the active Python.
#
#   bash tools/install.sh            # CPU machine, or GPU machine with nvcc (CUDA ops built)
#
# Environment knobs:
#   PYTHON=...                 interpreter to install into (default: python3 on PATH)
#   MMVISION_SSM_CACHE=...     where the built mmcv wheel is kept (default ~/.cache/mmvision_ssm)
#   FORCE_CUDA=1               build mmcv's CUDA ops even when no GPU is visible (needs nvcc)
#   TORCH_CUDA_ARCH_LIST=9.0   GPU architectures for mmcv's CUDA ops (default: the visible GPU's)
#   MAX_JOBS=N                 parallel compile jobs for mmcv (default: number of cores)
#
# Re-running is harmless: every step checks what is there first. mmcv 2.1.0 has no wheel for
# torch 2.14, so it is built once from its sdist (C++20: torch 2.14 headers refuse C++17) and the
# wheel is cached per (python, torch, cpu/cuda arch) so later installs take seconds.
set -Eeuo pipefail

PY=${PYTHON:-python3}
CACHE=${MMVISION_SSM_CACHE:-$HOME/.cache/mmvision_ssm}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
MMCV_VERSION=2.1.0
STEP="start"
T0=$SECONDS

step() { STEP="$*"; echo "[install] $* ($((SECONDS - T0)) s)"; }
fail() { echo "[install] FAILED at step: $STEP" >&2; echo "[install] $*" >&2; exit 1; }
trap 'echo "[install] FAILED at step: $STEP (exit $?; see the output above)" >&2' ERR
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

step "checking the interpreter ($PY)"
"$PY" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
  || fail "Python >= 3.9 is required; set PYTHON=/path/to/python3"

step "checking free disk space"
# A fresh CUDA torch in a virtual environment takes ~6.1 GB; pip then fails half way through with
# "No space left on device". Say so before anything is written.
TORCH_PIN="$TORCH_PIN" "$PY" - <<'PYEOF' || fail "not enough free disk space (the line above says where and how much)"
import importlib.metadata as md, os, shutil, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
torch_version = os.environ["TORCH_PIN"].split()[0].split("==")[1]  # the pinned torch
try:
    have_torch = md.version("torch").split("+")[0] == torch_version
except md.PackageNotFoundError:
    have_torch = False
need_gb = 0.5 if have_torch else 6.5
free_gb = shutil.disk_usage(site).free / 2**30
if free_gb < need_gb:
    print(f"[install] {site} has {free_gb:.1f} GB free; the install needs about {need_gb} GB "
          f"({'the OpenMMLab stack' if have_torch else 'torch with its CUDA libraries'}). "
          "Free space there (old virtual environments, pytest's /tmp/pytest-of-$USER) "
          "or install into an interpreter on another disk with PYTHON=...", file=sys.stderr)
    sys.exit(1)
PYEOF

step "installing $TORCH_PIN and build tools (setuptools<81 keeps pkg_resources for mmcv's setup.py)"
# setuptools is pinned in the same call: torch's own requirement would otherwise upgrade it.
pip_install $TORCH_PIN "setuptools<81" wheel ninja

mmcv_ok() {
  "$PY" - <<PYEOF 2>/dev/null
import mmcv, torch
from mmcv.ops import nms, RoIAlign  # compiled ops, not mmcv-lite
assert mmcv.__version__ == "$MMCV_VERSION", mmcv.__version__
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
PYEOF
}

step "mmcv $MMCV_VERSION with compiled ops"
if mmcv_ok; then
  echo "[install] mmcv $MMCV_VERSION already installed with ops"
else
  FLAVOR=$("$PY" - <<'PYEOF'
import os, shutil, sys, torch
py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
cuda = torch.version.cuda and shutil.which("nvcc") and (
    torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1")
if cuda:
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not arch and torch.cuda.is_available():
        arch = "%d.%d" % torch.cuda.get_device_capability()
    print(f"{py}-torch{torch.__version__}-cuda-sm{(arch or 'default').replace(' ', '_').replace(';', '_')}")
else:
    print(f"{py}-torch{torch.__version__}-cpu")
PYEOF
)
  WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION/$FLAVOR"
  mkdir -p "$WHEEL_DIR"
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    step "building mmcv $MMCV_VERSION from its sdist for $FLAVOR (once per machine; 10-25 min on 2 cores)"
    BUILD=$(mktemp -d)
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      --no-build-isolation -d "$BUILD" "mmcv==$MMCV_VERSION" \
      || fail "could not download the mmcv $MMCV_VERSION sdist (is the package index reachable?)"
    tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    grep -q 'std=c++20' "$SRC/setup.py" || fail "patching mmcv's setup.py for C++20 did not apply"
    if [[ $FLAVOR == *-cuda-* ]]; then export FORCE_CUDA=1; fi
    # -g0: no debug info, a faster build and a far smaller wheel
    CFLAGS="${CFLAGS:-} -g0" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
      -w "$BUILD/dist" "$SRC" || fail "compiling mmcv failed; the compiler output is above"
    mv "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR/"
    rm -rf "$BUILD"
  else
    echo "[install] using the cached wheel in $WHEEL_DIR"
  fi
  pip_install --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-*.whl
  pip_install "$(ls "$WHEEL_DIR"/mmcv-*.whl)"  # mmcv's own small dependencies
  mmcv_ok || fail "mmcv installed but its compiled ops do not load; delete $WHEEL_DIR and re-run"
fi

step "installing mmvision_ssm (editable) with mmengine, mmdet, mmsegmentation, timm and test tools"
pip_install -e "$ROOT[mm,tests]" "setuptools<81"

step "checking the install"
"$PY" - <<'PYEOF'
import mmcv, mmdet, mmengine, mmseg, timm, torch, torchvision
import mmvision_ssm
print("[install] ok:", ", ".join(f"{m.__name__} {m.__version__}" for m in
      (torch, torchvision, timm, mmengine, mmcv, mmdet, mmseg, mmvision_ssm)))
PYEOF
echo "[install] done in $((SECONDS - T0)) s"
