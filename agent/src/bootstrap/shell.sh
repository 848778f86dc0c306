# The lambda-agent's shell worker: a warm shell that runs the function's script once per framed request
# (see the agent's frame.rs), with the event on stdin; its stdout is the result. argv: WORK_DIR SCRIPT SHELL,
# or WORK_DIR --generic SHELL for a pool agent's generic worker, which learns its script and environment
# from one `load` frame (shell assignments the agent quoted) before the first request.
# fd 3 = protocol out, fd 4 = protocol in; the script's own stdin/stdout are files, stderr the container log.
exec 3>&1 4<&0 1>&2 0</dev/null
# A private scratch dir per worker (the agent removes it when it replaces the worker).
dir=$1/run.$$
mkdir -p "$dir" || exit 1
script=$2
sh=${3:-/bin/sh}
tail_lines=20
if [ "$script" = --generic ]; then
  printf 'ready 0\n' >&3
  IFS=' ' read -r kind len <&4 || exit 0
  [ "$kind" = load ] || { echo "generic worker: expected a load frame, got $kind" >&2; exit 1; }
  head -c "$len" <&4 >"$dir/load"
  # Sets `script` and exports the function's environment.
  . "$dir/load"
  rm -f "$dir/load"
fi
printf 'ready 0\n' >&3
while IFS=' ' read -r id remaining len <&4; do
  # Only one request is in flight per worker, so `head` cannot swallow the next frame.
  head -c "$len" <&4 >"$dir/event"
  LAMBDA_INVOCATION_ID=$id LAMBDA_REMAINING_MS=$remaining "$sh" "$script" <"$dir/event" >"$dir/out" 2>"$dir/err"
  code=$?
  if [ -s "$dir/err" ]; then cat "$dir/err" >&2; fi
  # Ends this invocation's output on stderr (the agent's per-invocation log capture).
  printf '\037\037lambda-invocation-end\n' >&2
  if [ "$code" -eq 0 ]; then
    printf 'ok %d\n' "$(($(wc -c <"$dir/out")))" >&3
    cat "$dir/out" >&3
  else
    tail -n "$tail_lines" "$dir/err" >"$dir/tail"
    printf 'exit %d %d\n' "$code" "$(($(wc -c <"$dir/tail")))" >&3
    cat "$dir/tail" >&3
  fi
done
