# Sourced by the training scripts: `timed NAME COMMAND...` runs a stage and appends "NAME: N s" to $OUT/times.txt.
# A stage with a line there finished in an earlier run and is skipped; an interrupted one reruns and resumes
# inside itself. Changed settings need a fresh OUT.
timed() {
  local name=$1; shift
  if grep -q "^$name: " "$OUT/times.txt" 2>/dev/null; then echo "$name: done in an earlier run"; return; fi
  local began=$SECONDS; "$@"; echo "$name: $((SECONDS - began)) s" | tee -a "$OUT/times.txt"
}
