# Sourced by the multi-GPU scripts: the launcher's device flags from GPUS (default 0,1).
# GPUS=cpu runs NPROC (default 2) CPU processes instead (gloo), e.g. to try the scripts on a machine without GPUs.
GPUS=${GPUS:-0,1}
if [ "$GPUS" = "cpu" ]; then
  DEVICES="--nproc_per_node ${NPROC:-2}"; DEVICE_FLAG="--device cpu"
else
  DEVICES="--gpus $GPUS"; DEVICE_FLAG=""
fi
