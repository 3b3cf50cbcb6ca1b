# Sourced by the training scripts: `timed NAME COMMAND...` runs a stage and appends "NAME: N s" to $OUT/times.txt.
# A stage with a line there finished in an earlier run and is skipped; an interrupted one reruns and resumes
# inside itself. Changed settings need a fresh OUT.
timed() {
  local name=$1; shift
  if grep -q "^$name: " "$OUT/times.txt" 2>/dev/null; then echo "$name: done in an earlier run"; return; fi
  local began=$SECONDS; "$@"; echo "$name: $((SECONDS - began)) s" | tee -a "$OUT/times.txt"
}

# `true` where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), else `false`: elsewhere autocast is
# emulated (measured on an AVX2-only CPU: 3.6x slower than float32 a step), so training there runs in float32.
native_bf16() {
  if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then echo true; else echo false; fi
}
