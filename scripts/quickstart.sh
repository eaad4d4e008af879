#!/usr/bin/env bash
# The README's main job: set up, train the quickstart HPDM on the built-in synthetic videos on CPU,
# then sample videos with the tiled, cached sampler.
#
#   bash scripts/quickstart.sh                  # fine-tune the shipped checkpoint (500 steps), sample
#   bash scripts/quickstart.sh --from_scratch   # train from scratch instead (TRAIN_STEPS of gin/quickstart.gin)
#   bash scripts/quickstart.sh --gin_param="TRAIN_STEPS=100"   # any extra hpdm-train flag
#
# Environment: WORKDIR (default runs/quickstart), NUM_VIDEOS (default 4), GUIDANCE (default 3), HPDM_NO_SETUP=1 to use the
# current Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${HPDM_NO_SETUP:-}" ]; then
  python3 -m venv .venv
  . .venv/bin/activate
  # --no-compile: byte-compiling torch's modules at install took about half of the setup;
  # Python compiles the modules it imports when it imports them.
  pip install -q --no-compile "torch==2.13.0"
  pip install -q --no-compile -e .
fi

WORKDIR="${WORKDIR:-runs/quickstart}"
PRETRAINED=pretrained/quickstart/model.safetensors
train_args=(--gin_file=gin/quickstart.gin --workdir="$WORKDIR")
if [ "${1:-}" = "--from_scratch" ]; then
  shift
else
  # Fine-tuning (Sec. 5.2): start from the shipped EMA weights and train a short schedule at a fifth
  # of the learning rate; the full rate undoes part of what the annealed model learnt (evidence:
  # docs/experiments/quickstart_runs.md, "The quickstart's settings and their evidence").
  train_args+=(--gin_param="Trainer.init_from = '$PRETRAINED'" --gin_param="TRAIN_STEPS = 500"
               --gin_param="warmup_cosine.warmup_steps = 50" --gin_param="Lamb.lr = 0.001")
fi

hpdm-train "${train_args[@]}" "$@"
# Classifier-free guidance 3, at twice the sampling cost: more frames with one whole object on a
# straighter track (evidence: docs/experiments/quickstart_runs.md, same section).
# 64 tiles per model call (the default 16 bounds memory for large models): bigger matrix products
# keep both cores busy, and the videos come out the same.
hpdm-sample --workdir="$WORKDIR" --output_dir="$WORKDIR/samples" --num_videos="${NUM_VIDEOS:-4}" --seed=0 --batch_size=4 \
  --guidance_scale="${GUIDANCE:-3}" --tile_batch_size=64

echo
echo "Videos (mp4, gif, png frame grid, npy): $WORKDIR/samples/"
echo "TensorBoard logs:                       tensorboard --logdir $WORKDIR"
