#!/usr/bin/env bash
# One GPU measurement session on the device machine, as named steps (docs/benchmarks.md says
# which steps each recorded run used). From the repo root, with .snap carried (official
# snapshots + the mamba-ssm sdist) for the steps that compare against the official code:
#   OUT=/tmp/out T_END=560 bash tools/gpu_session.sh build sweep ours224 official224 vit
# Steps (each time-boxed to the time left before T_END seconds; results under $OUT):
#   build        mamba-ssm for sm_90 in the background (official VMamba/MambaVision use it)
#   check        tools/gpu_check_ops.py --quick (scan + cross kernels) and the LayerNorm kernels
#   checkln      the LayerNorm kernels only
#   checknmlp    the fused LayerNorm-MLP (ops/norm_mlp.py) with the Triton norm, against float64
#   sweepcp      the cross op's chunk-serial against its chunk-parallel kernels (1344x800 b2, 512^2 b8,
#                224^2 b128 stage shapes)
#   checkcross   the cross-op kernels only (all seven cases, float32 + bfloat16)
#   checkplain   the plain-scan checks only (Triton; mamba-ssm too when built before)
#   checkstates  the several-state plain-scan checks under each forced tile (BLOCK_D, BLOCK_L,
#                warps, chunks a segment: gpu_check_ops.py STATES_CONFIGS)
#   sweep        tools/sweep_cross_op.py --quick: cross-op launch configurations per stage shape
#   sweepbwd     sweep_cross_op.py --bwd: the cross op's backward alone (224^2 b64 stages 1, 3)
#   ncucross     Nsight Compute (--set full) on the cross op's forward and backward kernels
#   ncustates    the same on the states-parallel plain-scan kernels at n = 16 (tools/scan_once.py)
#   profile      tools/profile_backbone.py: kernel breakdown of ours VMamba-T at 224^2
#   compile      ours VMamba-T and MLLA-T under torch.compile (benchmark harness)
#   profiletrain kernel breakdown of a training step: ours VMamba-T, ours ViT-B, timm ViT-B
#   overhead     host (CPU) time per op of a VMamba-T training step, and per call of our ops
#   lnbench      our LayerNorm against nn.LayerNorm under bf16 autocast, forward and f+b
#   vmamba224    ours VMamba-T only, 224^2 (infer b128, train b64)
#   lnab         ours VMamba-T with our LayerNorm kernels vs PyTorch's, alternating, 2 rounds
#   ours224      ours VMamba-T / MambaVision-T / MLLA-T, 224^2 (infer b128, train b64)
#   official224  after the build: official VMamba-T, MambaVision-T (dense and classification)
#                and MLLA-T next to ours, same run, 224^2
#   hires        ours and official VMamba-T / MambaVision-T / MLLA-T, 1344x800 b2 and 512^2 b8
#   prof_mv_hires  kernel and host-time breakdown, ours vs official MambaVision-T, 1344x800 b2
#   benchscan    tools/bench_scan.py: Triton vs mamba-ssm vs torch scans, cross op vs copy BW
#   benchscang   benchscan on CUDA-graph replays (GPU time alone, no host launch work)
#   timeline     one plain-scan f+b at VMamba-T's stage-1 shape under torch.profiler: when the host
#                issued each op and launch and when each kernel ran ($TL_BACKENDS)
#   sweepstates  launch configurations of the plain scan: the states-parallel (n >= 2) kernels,
#                and the one-state tiles at VMamba's shape
#   cmp_vmamba, cmp_mv, cmp_mlla, cmp_vit
#                tools/compare_backbones.py: ours next to the official code (timm for ViT-B and
#                MViTv2-T), alternating, medians over rounds; 224^2, 1344x800 b2, 512^2 b8
#   vit          ours ViT-B vs timm ViT-B, alternating, 3 rounds, equal drop-path (0.1);
#                $VIT_CASES replaces the default cases
#   hostprof     wall vs kernel ms, launches and host time per op of a training step (b64), ours
#                and official VMamba-T / MambaVision-T / MLLA-T
#   mempeak      tools/memory_peak.py: live GPU memory at a training step's peak by allocation
#                site, ours and official ($MEM_MODELS), per $MEM_CASES (default 64:224x224)
#   hostcost     tools/host_overhead.py: host time per call of our ops, bare Triton launches,
#                cProfile of the Python side; $HOST_PACKAGES (default mmvision_ssm) adds revisions
#                exported by tools/export_revision.sh (e.g. "mmvision_ssm mmvision_ssm_HEAD")
#   ab, profab   $AB_MODELS (e.g. "ours:MambaVision rev:HEAD:MambaVision", revisions exported
#                by tools/export_revision.sh, .snap carried) side by side, alternating
#                ($AB_ROUNDS rounds; $AB_CASES, default 224^2 infer b128 + train b64, a case
#                ending in :graph times CUDA-graph replays of the step; results
#                in ab$AB_TAG.json), and their kernel breakdown ($PROF_MODES: train and/or
#                infer; $PROF_TOP kernels printed)
#   absets       like ab for each '|'-separated model set in $AB_SETS (absetN.json)
#   ceiling      tools/cross_ceiling.py: probe kernels that do less than the fused cross op must
#                (the minimum bytes, the per-element math, no scan) against the op and copy BW
#   graphtest    tests/test_cuda_graph.py on the GPU: graphed training steps (cuda_graph=True)
#                against eager ones for every family, float32 and bf16
set -u
export OUT=${OUT:-/tmp/session_out}
STEP_FILTER="Warning|warn\(|_warn_once"
source tools/gpu_common.sh

sweep_shapes() {  # shapes=(...) from $SWEEP_SHAPES: quoted sweep_cross_op.py shape names
  eval "shapes=(${SWEEP_SHAPES:-"\"224 b64 s1\" \"224 b64 s3\""})"
}

MB=/tmp/mb
BUILD=""
wait_build() {  # use mamba-ssm when its build finished in time
  if [[ -n "$BUILD" ]]; then
    while kill -0 "$BUILD" 2>/dev/null && (( $(left) > 120 )); do sleep 2; done
    tail -2 "$OUT/build.log" | tee -a "$LOG"
  fi
  local src
  src=$(ls -d $MB/mamba_ssm-*/ 2>/dev/null | head -1)
  if [[ -n "$src" ]] && ls "$src"/selective_scan_cuda*.so >/dev/null 2>&1; then
    export MMVISION_SSM_MAMBA_SRC=${src%/}
    export PYTHONPATH=$PWD:$MMVISION_SSM_MAMBA_SRC
    return 0
  fi
  echo "mamba-ssm not built: official VMamba/MambaVision would fall back; skipping them" | tee -a "$LOG"
  return 1
}
B224="--dtype bf16 --batch 128 --train-batch 64 --shape 224 224 --iters 20 --warmup 5"

for s in "$@"; do
  case $s in
  build)
    ( MAX_JOBS=12 bash tools/gpu_build_mamba_ssm.sh .snap/mamba/mamba_ssm-2.3.2.post1.tar.gz $MB \
        > "$OUT/build.log" 2>&1; echo "build rc=$? at ${SECONDS}s" >> "$OUT/build.log" ) &
    BUILD=$! ;;
  check)
    step 360 check_ops python3 tools/gpu_check_ops.py --quick --out "$OUT/check_ops.json" ;;
  ceiling)
    step 200 ceiling python3 tools/cross_ceiling.py --out "$OUT/ceiling.json" ;;
  graphtest)
    step 330 graph_test python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py \
      tests/test_cuda_graph_ddp.py ;;
  checkln)
    step 60 check_ln python3 tools/gpu_check_ops.py --only lnorm --out "$OUT/check_ln.json" ;;
  checknmlp)
    step 90 check_nmlp python3 tools/gpu_check_ops.py --only normmlp --out "$OUT/check_nmlp.json" ;;
  sweep)
    step 220 sweep python3 tools/sweep_cross_op.py --quick --out "$OUT/sweep.json" \
      --shapes "224 b128 s1" "1344x800 b2 s1" "512 b8 s1" "224 b128 s3" ;;
  sweepbwd)  # the cross op's backward alone at VMamba-T's training shapes (224^2 b64): its warps,
            # chunk and channel block; registers and spills of the compiled kernels
    sweep_shapes
    step 240 sweep_bwd python3 tools/sweep_cross_op.py --bwd --out "$OUT/sweep_bwd.json" \
      --shapes "${shapes[@]}" ;;
  ncucross)  # Nsight Compute on the cross op's kernels (second iteration), $SWEEP_SHAPES as above
            # (the Triton kernels are named _scan_*, the Gluon ones _cross_*)
    sweep_shapes
    for sh in "${shapes[@]}"; do  # one process per shape: launches 3-4 are its second iteration
      step 300 ncu_cross ncu --target-processes all -k regex:'_scan_|_cross_' --launch-skip 2 \
        --launch-count 2 --set full python3 tools/sweep_cross_op.py --once 2 --shapes "$sh"
    done ;;
  ncustates)  # Nsight Compute on the states-parallel scan kernels (n = 16, MambaVision-T s3),
              # the second iteration's forward and backward
    step 240 ncu_states ncu -k regex:_states_ --launch-skip 2 --launch-count 2 --set full \
      python3 tools/scan_once.py --shape 64 160 196 16 ;;
  sweepcp)  # chunk-serial vs chunk-parallel cross-op kernels at the small-batch / large-map shapes
    step 330 sweep_cp python3 tools/sweep_cross_op.py --chunk-par --reps 10 --out "$OUT/sweep_cp.json" \
      --shapes "1344x800 b2 s1" "1344x800 b2 s2" "1344x800 b2 s3" "512 b8 s1" "224 b128 s1" ;;
  sweepgluon)  # the Gluon cross kernels' tile layouts against the Triton kernels, $SWEEP_SHAPES
    sweep_shapes
    # ($SWEEP_ARGS adds options, e.g. "--cuda-graph --reps 20": GPU time)
    step 300 sweep_gluon python3 tools/sweep_cross_op.py --gluon ${SWEEP_ARGS:-} \
      --out "$OUT/sweep_gluon.json" --shapes "${shapes[@]}" ;;
  checkplain)
    step 200 check_plain python3 tools/gpu_check_ops.py --only plain --out "$OUT/check_plain.json" ;;
  checkstates)
    step 240 check_states python3 tools/gpu_check_ops.py --only states \
      --out "$OUT/check_states.json" ;;
  checkcross)
    step 240 check_cross python3 tools/gpu_check_ops.py --only cross --out "$OUT/check_cross.json" ;;
  profile)
    step 60 profile python3 tools/profile_backbone.py --model ours:VMamba:tiny --batch 128 \
      --out "$OUT/profile.json" --top 12 ;;
  profiletrain)
    step 90 profile_train python3 tools/profile_backbone.py --model ours:VMamba:tiny ours:ViT:base \
      timm:vit_base_patch16_224 --mode train --batch 64 --out "$OUT/profile_train.json" --top 15 ;;
  overhead)
    step 90 overhead python3 tools/profile_backbone.py --model ours:VMamba:tiny --mode train \
      --batch 64 --steps 3 --cpu-top 30 --top 5
    step 90 host_overhead python3 tools/host_overhead.py --calls 200 --profile 15 ;;
  lnbench)
    step 60 lnbench python3 - <<'PY'
import torch, torch.nn.functional as F
from mmvision_ssm.models.layers import LayerNorm
def t(fn, reps=20):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(); s.record()
    for _ in range(reps): fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / reps
for rows, c, dt in [(128 * 3136, 96, torch.float32), (128 * 3136, 96, torch.bfloat16),
                    (64 * 196, 384, torch.float32)]:
    x = torch.randn(rows, c, device='cuda', dtype=dt, requires_grad=True)
    gy = torch.randn(rows, c, device='cuda', dtype=torch.bfloat16)
    for name, m in (('torch', torch.nn.LayerNorm(c).cuda()), ('ours', LayerNorm(c, low_precision_output=True).cuda())):
        with torch.autocast('cuda', dtype=torch.bfloat16):
            f = t(lambda: m(x))
            fb = t(lambda: torch.autograd.grad(m(x), [x, m.weight, m.bias], gy.to(m(x).dtype)))
        print(f'{name:6s} ({rows}, {c}) {str(dt):15s} fwd {f:.3f} ms  f+b {fb:.3f} ms', flush=True)
PY
    ;;
  vmamba224)
    step 90 vmamba224 python3 tools/benchmark.py --backbone VMamba $B224 --out "$OUT/vmamba224.json" ;;
  lnab)  # the same model with our LayerNorm kernels and with PyTorch's, alternating
    for r in 1 2; do
      step 60 "vmamba224_ln_ours_$r" python3 tools/benchmark.py --backbone VMamba $B224 \
        --out "$OUT/lnab.json" --append
      MMVISION_SSM_LAYER_NORM=torch step 60 "vmamba224_ln_torch_$r" python3 tools/benchmark.py \
        --backbone VMamba $B224 --out "$OUT/lnab.json" --append
    done ;;
  ours224)
    step 150 ours224 python3 tools/benchmark.py --backbone VMamba MambaVision MLLA $B224 \
      --out "$OUT/ours224.json" ;;
  official224)
    if wait_build; then
      step 240 official224 python3 tools/benchmark.py --backbone VMamba MambaVision \
        --official vmamba mamba_vision mamba_vision_cls mlla $B224 --out "$OUT/official224.json"
    fi ;;
  hires)
    if wait_build; then
      step 150 hires python3 tools/benchmark.py --backbone VMamba MambaVision MLLA \
        --official vmamba mamba_vision mlla --dtype bf16 --batch 2 --shape 800 1344 --iters 20 \
        --warmup 3 --out "$OUT/hires.json"
      step 100 train512 python3 tools/benchmark.py --backbone VMamba MambaVision MLLA \
        --official vmamba mamba_vision mlla --dtype bf16 --batch 8 --shape 512 512 --mode train \
        --iters 20 --warmup 3 --out "$OUT/hires.json" --append
    fi ;;
  compile)  # torch.compile'd ours against eager, benchmark harness
    step 200 compile_vmamba python3 tools/benchmark.py --backbone VMamba $B224 --compile \
      --warmup 8 --out "$OUT/compile.json"
    step 200 compile_mlla python3 tools/benchmark.py --backbone MLLA $B224 --compile --warmup 8 \
      --out "$OUT/compile.json" --append ;;
  cmp_vmamba)  # alternating, medians over rounds (tools/compare_backbones.py)
    if wait_build; then
      step 200 cmp_vmamba python3 tools/compare_backbones.py --models ours:VMamba:tiny \
        official:vmamba --case infer:128:224x224 --case train:64:224x224 \
        --case infer:2:800x1344 --case train:2:800x1344 --case train:8:512x512 --rounds 3 \
        --out "$OUT/cmp_vmamba.json"
    fi ;;
  cmp_mv)
    if wait_build; then
      step 150 cmp_mv python3 tools/compare_backbones.py --models ours:MambaVision:T \
        official:mamba_vision official:mamba_vision_cls --case infer:128:224x224 \
        --case train:64:224x224 --case infer:2:800x1344 --case train:2:800x1344 \
        --case train:8:512x512 --rounds 3 --out "$OUT/cmp_mv.json"
    fi ;;
  prof_mv_hires)  # ours vs official MambaVision-T at 1344x800 b2 inference (host-bound there)
    if wait_build; then
      step 90 prof_mv_hires python3 tools/profile_backbone.py --model ours:MambaVision:T \
        official:mamba_vision --mode infer --batch 2 --shape 800 1344 --top 8 --cpu-top 25
    fi ;;
  sweepstates)  # launch configurations of the states-parallel scan kernels (n = 8, 16);
    # $SWEEP_ARGS adds options (e.g. --cuda-graph: GPU time alone)
    step 300 sweep_states python3 tools/bench_scan.py --device cuda --sweep --no-cross --reps 20 \
      ${SWEEP_ARGS:-} --out "$OUT/sweep_states.json" ;;
  benchscan)  # the scan ops side by side: triton / mamba-ssm / torch, and the cross op vs copy BW
    # ($BENCH_ARGS adds options, e.g. "--no-cross --also-package mmvision_ssm_HEAD")
    if wait_build; then
      step 200 benchscan python3 tools/bench_scan.py --device cuda --reps 30 ${BENCH_ARGS:-} \
        --out "$OUT/bench_scan.json"
    fi ;;
  timeline)  # host ops, launches and kernels of one plain-scan f+b (tools/scan_once.py
    # --timeline) at VMamba-T stage 1 (b64, 4 groups, n 1), per backend in $TL_BACKENDS
    wait_build || true
    for be in ${TL_BACKENDS:-triton mamba_ssm}; do
      step 60 "timeline $be" python3 tools/scan_once.py --shape 64 384 3136 1 --groups 4 \
        --iters 5 --backend "$be" --timeline
    done ;;
  benchscang)  # benchscan timing CUDA-graph replays: the GPU time of each call, no host work
    if wait_build; then
      step 200 benchscang python3 tools/bench_scan.py --device cuda --reps 30 --cuda-graph \
        ${BENCH_ARGS:-} \
        --out "$OUT/bench_scan_graph.json"
    fi ;;
  cmp_mlla)
    step 150 cmp_mlla python3 tools/compare_backbones.py --models ours:MLLA:tiny official:mlla \
      --case infer:128:224x224 --case train:64:224x224 --case infer:2:800x1344 \
      --case train:2:800x1344 --case train:8:512x512 --rounds 2 --out "$OUT/cmp_mlla.json" ;;
  cmp_vit)
    step 120 cmp_vit python3 tools/compare_backbones.py --models ours:ViT:base \
      timm:vit_base_patch16_224 ours:MViTv2:tiny timm:mvitv2_tiny --case infer:128:224x224 \
      --case train:64:224x224 --rounds 3 --drop-path 0.1 --out "$OUT/cmp_vit.json" ;;
  vit)  # $VIT_CASES replaces the cases (e.g. with :graph ones)
    step 200 vit python3 tools/compare_backbones.py --models ours:ViT:base \
      timm:vit_base_patch16_224 ${VIT_CASES:---case infer:128:224x224 --case train:64:224x224} \
      --rounds 3 --drop-path 0.1 --out "$OUT/vit.json" ;;
  hostprof)  # wall vs kernel time, launches and host time per op of training steps, ours and official
    if wait_build; then
      step 240 hostprof python3 tools/profile_backbone.py --model ours:VMamba:tiny official:vmamba \
        ours:MambaVision:T official:mamba_vision ours:MLLA:tiny official:mlla --mode train \
        --batch 64 --steps 3 --top 6 --cpu-top 25 --out "$OUT/hostprof.json"
    fi ;;
  mempeak)  # what is alive at the training step's memory peak, by allocation site ($MEM_MODELS),
            # per case in $MEM_CASES (batch:HxW, default 64:224x224; results mempeak_<case>.json)
    wait_build
    for case in ${MEM_CASES:-64:224x224}; do
      hw=${case#*:}
      step 240 "mempeak_$case" python3 tools/memory_peak.py --models ${MEM_MODELS:-ours:MambaVision:T \
        official:mamba_vision ours:MLLA:tiny official:mlla ours:VMamba:tiny official:vmamba} \
        --batch "${case%%:*}" --size "${hw%x*}" "${hw#*x}" --top 25 \
        --out "$OUT/mempeak_${case//:/_}.json"
    done ;;
  hostcost)  # after `build`: mamba-ssm's host cost too; $HOST_PACKAGES: exported revisions as well
    [[ -n "$BUILD" ]] && { wait_build || true; }
    for pkg in ${HOST_PACKAGES:-mmvision_ssm}; do
      step 120 "host_overhead $pkg" python3 tools/host_overhead.py --calls 200 --profile 15 \
        --package "$pkg"
    done ;;
  ab)  # this tree against an exported revision (tools/export_revision.sh), alternating
    step 300 ab python3 tools/compare_backbones.py --models ${AB_MODELS:?set AB_MODELS} \
      ${AB_CASES:---case infer:128:224x224 --case train:64:224x224} \
      --rounds ${AB_ROUNDS:-2} ${AB_ARGS:-} --out "$OUT/ab${AB_TAG:-}.json" ;;
  absets)  # several model sets, '|'-separated in $AB_SETS, each like `ab` (results absetN.json);
    # a set naming official VMamba/MambaVision waits for the mamba-ssm build
    IFS='|' read -ra sets <<< "${AB_SETS:?set AB_SETS}"
    for i in "${!sets[@]}"; do
      if [[ "${sets[$i]}" == *official:vmamba* || "${sets[$i]}" == *official:mamba_vision* ]]; then
        wait_build || continue
      fi
      step 300 "abset$i" python3 tools/compare_backbones.py --models ${sets[$i]} \
        ${AB_CASES:---case infer:128:224x224 --case train:64:224x224} \
        --rounds ${AB_ROUNDS:-2} ${AB_ARGS:-} --out "$OUT/abset$i.json"
    done ;;
  profab)  # kernel breakdown of the same models, per mode in $PROF_MODES (default train b64;
           # infer runs b128)
    if [[ "${AB_MODELS:?set AB_MODELS}" == *official* ]]; then wait_build || continue; fi
    for mode in ${PROF_MODES:-train}; do
      step 150 "profile_ab_$mode" python3 tools/profile_backbone.py --model $AB_MODELS \
        --mode $mode --batch $([[ $mode == train ]] && echo 64 || echo 128) \
        --out "$OUT/profile_ab_$mode.json" --top ${PROF_TOP:-12}
    done ;;
  *) echo "unknown step $s" | tee -a "$LOG" ;;
  esac
done
date -u | tee -a "$LOG"
echo "=== done at ${SECONDS}s" | tee -a "$LOG"
