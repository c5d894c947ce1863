"""Count the Gluon cross kernels' sm_90 SASS instructions per element, offline (no GPU).

    python tools/gluon_sass_count.py                       # the default layout
    python tools/gluon_sass_count.py '{"FWD_NUM_WARPS": 8}'  # a partial layout override

Compiles ``scan_gluon_cross``'s forward and backward as the JIT would at VMamba-T's stage 1
(tests/test_ops_gluon_cross.py's specialisation), disassembles them with the Triton wheel's
``cuobjdump`` and prints, per kernel: the main loop's instructions (the longest backward branch),
those per element a thread owns per chunk, registers, spills, barriers and the commonest opcodes.
"""
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

import triton  # noqa: E402

import test_ops_gluon_cross as helpers  # noqa: E402  (its sm_90 compile and ptxas stats)
from mmvision_ssm.ops import scan_gluon_cross as gc  # noqa: E402


def sass(kernel):
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin',
                             'cuobjdump')
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(kernel.asm['cubin'])
        f.flush()
        return subprocess.run([cuobjdump, '-sass', f.name], capture_output=True, text=True,
                              check=True).stdout


def main_loop(text):
    """Opcodes between the longest backward branch's target and the branch."""
    ins = [(int(m.group(1), 16), m.group(2)) for m in
           re.finditer(r'^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);', text, re.M)]
    lo, hi = 0, -1
    for addr, op in ins:
        m = re.match(r'(?:@\S+\s+)?BRA\s+0x([0-9a-f]+)', op)
        if m and int(m.group(1), 16) < addr and addr - int(m.group(1), 16) > hi - lo:
            lo, hi = int(m.group(1), 16), addr
    return [op.split()[1] if op.startswith('@') else op.split()[0]
            for addr, op in ins if lo <= addr <= hi]


def main():
    layout = dict(gc.LAYOUT, **(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
    for fn, fwd in ((gc._cross_fwd_kernel, True), (gc._cross_bwd_kernel, False)):
        kernel = helpers._compile_sm90(fn, layout)
        regs, spills = helpers._ptxas_stats(kernel.asm['ptx'])
        text = sass(kernel)
        loop = main_loop(text)
        tile = gc.fwd_layout(layout) if fwd else layout
        bd, bl = gc.tile(tile)
        per_thread = bd * bl / (32 * tile['NUM_WARPS'])
        print(f'{fn.__name__}: {gc._kernel_args(layout, fwd)}\n'
              f'  loop {len(loop)} instructions, {len(loop) / per_thread:.1f} per element; '
              f'{regs} registers, {spills} bytes spilled; '
              f'{text.count("BAR.SYNC")} barriers in the kernel\n'
              f'  {collections.Counter(loop).most_common(12)}')


if __name__ == '__main__':
    main()
