# Sourced by the multi-GPU scripts: the launcher's device flags from GPUS (default 0,1).
# GPUS=cpu runs NPROC (default 2) CPU processes instead (gloo), e.g. to try the scripts on a machine without GPUs.
GPUS=${GPUS:-0,1}
if [ "$GPUS" = "cpu" ]; then
  DEVICES="--nproc_per_node ${NPROC:-2}"; DEVICE_FLAG="--device cpu"
else
  # stop here, not inside Paddle's launcher (whose error on a GPU-less machine is "substring not found")
  if ! python -c "import sys, paddle; sys.exit(not (paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0))" 2>/dev/null; then
    echo "error: Paddle sees no GPU (GPUS=$GPUS; CPU-only paddlepaddle or no CUDA device visible); to run CPU processes instead: GPUS=cpu NPROC=2 sh $0 ..." >&2
    exit 2  # a user error: utils/runtime/failure.py
  fi
  DEVICES="--gpus $GPUS"; DEVICE_FLAG=""
fi
# a --run-name appended to the scripts names one folder per bit width only when it contains {bit}
case "$*" in *--run[-_]name*)
  case "$*" in *"{bit}"*) ;; *)
    echo "error: a --run-name given to $0 must contain {bit} (e.g. --run-name myrun_{bit}bits): the script runs every bit width" >&2
    exit 2;;
  esac;;
esac

# flag_value FLAG DEFAULT ARGS...: the last value ARGS give FLAG (--a-b VALUE, --a_b VALUE or --a-b=VALUE), else
# DEFAULT: the scripts name their launch logs by the dataset and output folder a run really uses.
flag_value() {
  flag=$1; value=$2; shift 2
  alt=$(printf '%s' "$flag" | tr - _ | sed 's/^__/--/')
  while [ $# -gt 0 ]; do
    case "$1" in
      "$flag"|"$alt") if [ $# -gt 1 ]; then value=$2; shift; fi;;
      "$flag"=*|"$alt"=*) value=${1#*=};;
    esac
    shift
  done
  printf '%s' "$value"
}

# launch LOG_DIR ARGS...: paddle.distributed.launch with the device flags. When the job fails, the launcher's own
# "Exit code" line comes last; repeat the failing rank's cause (its FAILED line, utils/runtime/failure.py) after it, so the
# last line says what went wrong (a rank whose collective merely broke because a peer stopped is not the cause).
launch() {
  log_dir=$1; shift
  status=0
  python -m paddle.distributed.launch $DEVICES --log_dir "$log_dir" "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    cause=$(grep -h "FAILED" "$log_dir"/workerlog.* 2>/dev/null | grep -v "a collective broke" | tail -n 1)
    [ -n "$cause" ] || cause=$(grep -h "FAILED" "$log_dir"/workerlog.* 2>/dev/null | tail -n 1)
    [ -n "$cause" ] && echo "$cause (full logs: $log_dir/workerlog.*)"
    exit "$status"
  fi
}
