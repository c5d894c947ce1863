#!/usr/bin/env bash
# Export the package as of a git revision (or the working tree) for before/after speed
# comparisons in one process:
#   bash tools/export_revision.sh HEAD~1           -> .snap/rev/mmvision_ssm_HEAD_1/
#   bash tools/export_revision.sh --worktree try1  -> .snap/rev/mmvision_ssm_try1/ (as it is now)
#   python tools/compare_backbones.py --models ours:VMamba rev:HEAD_1:VMamba --case ...
# The copy is renamed so both versions import side by side (the package imports itself only
# relatively). .snap/ is git-ignored; carry it to the GPU machine.
set -eu
if [[ ${1:-} == --worktree ]]; then
  tag=${2:?usage: export_revision.sh --worktree TAG}
  src=worktree
else
  rev=${1:?usage: export_revision.sh REV | --worktree TAG}
  tag=$(echo "$rev" | tr -c 'A-Za-z0-9_\n' '_')
  src=$(git rev-parse --short "$rev")
fi
dest=.snap/rev/mmvision_ssm_$tag
rm -rf "$dest" ".snap/rev/tmp_$tag" && mkdir -p ".snap/rev/tmp_$tag"
if [[ $src == worktree ]]; then
  cp -r mmvision_ssm ".snap/rev/tmp_$tag/" && find ".snap/rev/tmp_$tag" -name __pycache__ -prune \
    -exec rm -rf {} +
else
  git archive "$rev" mmvision_ssm | tar -x -C ".snap/rev/tmp_$tag"
fi
mv ".snap/rev/tmp_$tag/mmvision_ssm" "$dest" && rmdir ".snap/rev/tmp_$tag"
# no OpenMMLab registration in the copy: the current package registers the same names
echo "\"\"\"mmvision_ssm as of $src (tools/export_revision.sh): backbones and ops only.\"\"\"" \
  > "$dest/__init__.py"
echo "$dest ($src); spec: rev:$tag:<Name>[:<arch>]"
