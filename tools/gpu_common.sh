# Sourced by the GPU session scripts (tools/gpu_session.sh, gpu_speed_run*.sh), from the repo root:
# results and the log go to $OUT; `step MAX NAME CMD...` runs CMD for at most MAX seconds and never
# past T_END seconds after the script started; $STEP_FILTER (an ERE) drops matching output lines.
export OUT=${OUT:-/tmp/session_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
LOG=$OUT/run.log
T_END=${T_END:-580}
left() { echo $(( T_END - SECONDS )); }
step() {  # step MAX_SECONDS name cmd...: run with min(MAX, time left) seconds
  local max=$1 name=$2; shift 2
  local t=$(( $(left) < max ? $(left) : max ))
  if (( t < 15 )); then echo "=== SKIP $name (time left $(left) s)" | tee -a "$LOG"; return; fi
  echo "=== $name (limit ${t}s, at ${SECONDS}s)" | tee -a "$LOG"
  timeout "$t" "$@" 2>&1 | grep --line-buffered -v -E "${STEP_FILTER:-^\$^}" | tee -a "$LOG"
  echo "=== $name rc=${PIPESTATUS[0]} at ${SECONDS}s" | tee -a "$LOG"
}
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv
  python3 -c "import torch, triton, timm, sys; print('python', sys.version.split()[0],
    'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__,
    'timm', timm.__version__)"
  nproc; date -u; } 2>&1 | tee -a "$LOG"
