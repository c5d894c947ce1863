#!/usr/bin/env bash
# Build mamba-ssm's selective_scan_cuda extension in place, for sm_90 only (H100/H200), so that
# tools/bench_scan.py and tools/gpu_check_ops.py can compare against it. Benchmark-only: mamba-ssm
# is never a dependency of mmvision_ssm.
#
#   bash tools/gpu_build_mamba_ssm.sh .snap/mamba/mamba_ssm-2.3.2.post1.tar.gz /tmp/mamba_build
#   export MMVISION_SSM_MAMBA_SRC=/tmp/mamba_build/mamba_ssm-2.3.2.post1
#
# Get the sdist (on a machine with network):
#   python -m pip download --no-deps --no-binary :all: --no-build-isolation \
#       mamba-ssm==2.3.2.post1 -d .snap/mamba
set -euo pipefail
SDIST=${1:?path to mamba_ssm-*.tar.gz}
DEST=${2:-/tmp/mamba_build}
mkdir -p "$DEST"
tar xzf "$SDIST" -C "$DEST"
SRC=$(ls -d "$DEST"/mamba_ssm-*/ | head -1)
cd "$SRC"
# keep only the sm_90 gencode pair in setup.py (the others triple the build time)
python3 - <<'PY'
import re
s = open('setup.py').read()
pat = re.compile(r'\n(\s*)cc_flag\.append\("-gencode"\)\n\s*cc_flag\.append\("arch=compute_(\d+),code=sm_\d+"\)')
s = pat.sub(lambda m: m.group(0) if m.group(2) == '90' else '\n' + m.group(1) + 'pass', s)
if re.findall(r'compute_\d+', s) != ['compute_90']:
    raise SystemExit('setup.py patch failed: ' + str(re.findall(r'compute_\d+', s)))
open('setup.py', 'w').write(s)
print('gencode targets left:', re.findall(r'compute_\d+', s))
PY
export MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=9.0
python3 setup.py build_ext --inplace
ls "$SRC"/selective_scan_cuda*.so
echo "MMVISION_SSM_MAMBA_SRC=$SRC"
