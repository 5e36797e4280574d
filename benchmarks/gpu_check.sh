#!/usr/bin/env bash
# Every GPU path of lionflow in one run on the machine's GPUs (issue 10, item 6): FSDP2 bf16 training through the
# training rule's own command (tokens/s, MFU), SIGKILL + resume, batched vs one-at-a-time generation,
# lm-eval on cuda. Prints ONE JSON line (also $OUT/gpu_check.json). Details: benchmarks/gpu_check.py.
#
# On the lent GPU machine (the `device` tool: one H200, no network, python3 with torch/transformers/
# accelerate/peft but no jsonschema, fastjsonschema, lm-eval, datasets):
#   1. here, once, in the checkout the session was started in (the tree that travels):
#        bash benchmarks/gpu_check.sh --prepare      # the missing wheels -> .gpu-wheels/ (~13 MiB, gitignored)
#   2. the device tool's `run`:
#        command:   bash benchmarks/gpu_check.sh
#        carry:     [".gpu-wheels"]
#        timeout_s: 600        (the check ends in about 8 minutes at most; its own budget is 450 s of phases)
#      The figures are the output's last line and $OUT/gpu_check.json (with the three training logs
#      and lm_eval.json).
# On CPU, tiny sizes, the same launch with two training processes over gloo (FSDP2, fp32), run by tests/test_gpu_check.py:
#        GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh      (or: bash benchmarks/gpu_check.sh --smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
PYTHON=${PYTHON:-python3}

# What the GPU machine lacks, at requirements.lock's versions:
#   the training entry's imports (lionflow.artifacts: jsonschema, fastjsonschema) and lm-eval's.
NEEDED_WHEELS=(jsonschema jsonschema-specifications referencing rpds-py fastjsonschema
               lm_eval datasets evaluate dill multiprocess more-itertools nltk defusedxml
               pytablewriter DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet pytz)
NEEDED_SDISTS=(sqlitedict word2number rouge_score)  # published as source only: built into wheels here

locked() {  # NAME==VERSION as requirements.lock pins it (names compared as pip does: case, - _ .)
  grep -iE "^$(echo "$1" | sed 's/[-_.]/[-_.]/g')==" requirements.lock || { echo "requirements.lock pins no $1" >&2; return 1; }
}

if [ "${1:-}" = "--prepare" ] || [ "${1:-}" = "--list" ]; then
  pins=(); for n in "${NEEDED_WHEELS[@]}"; do pins+=("$(locked "$n")"); done
  srcs=(); for n in "${NEEDED_SDISTS[@]}"; do srcs+=("$(locked "$n")"); done
  if [ "$1" = "--list" ]; then printf '%s\n' "${pins[@]}" "${srcs[@]}"; exit 0; fi
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  # The GPU machine's python3 is CPython 3.12 on x86-64 (the device tool's KINDS.md); GPU_CHECK_WHEEL_PY
  # picks another version (a simulation of that machine in a local venv of another python).
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_CHECK_WHEEL_PY:-3.12}" \
    --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" "${pins[@]}"
  "$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" "${srcs[@]}"
  ls "$WHEELS"
  du -sh "$WHEELS"
  exit 0
fi

# The carried wheels, into a folder of their own, where the python lacks them (the GPU machine);
# a venv that has them all (the project's) keeps its own.
if ls "$WHEELS"/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import jsonschema, fastjsonschema, lm_eval" 2>/dev/null; then
  site=$(mktemp -d /tmp/gpu-check-site.XXXX)
  "$PYTHON" -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
