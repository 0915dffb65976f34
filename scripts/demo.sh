#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, build the demo data set, train the flagship model briefly
# on the CPU, run test.py, and print where the results page is.
# Usage: bash scripts/demo.sh [extra train.py flags]      (MODEL=pix2pix bash scripts/demo.sh for the baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
MODEL=${MODEL:-atme}
NAME=${NAME:-demo_$MODEL}
EPOCHS=${EPOCHS:-4}
EPOCHS_DECAY=${EPOCHS_DECAY:-4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

$PY -m datasets.make_demo_dataset --out datasets/demo --size 64
case "$MODEL" in
  atme)    ARCH=(--dim 16 --init_dim 16 --dim_mults 1,2,4 --groups 8 --batch_size 4) ;;
  pix2pix) ARCH=(--netG unet --ngf 32 --ndf 32 --batch_size 4) ;;
  segan)   ARCH=(--ngf 32 --ndf 32 --batch_size 2 --samples_per_input 4) ;;
  *)       ARCH=() ;;
esac
COMMON=(--dataroot datasets/demo --name "$NAME" --model "$MODEL" --direction AtoB
        --load_size 72 --crop_size 64 --num_threads 2 --seed 0)
$PY train.py "${COMMON[@]}" "${ARCH[@]}" --n_epochs "$EPOCHS" --n_epochs_decay "$EPOCHS_DECAY" \
    --display_id 0 --print_freq 40 --display_freq 200 --update_html_freq 200 --save_latest_freq 1000 \
    --save_epoch_freq 4 "$@"
$PY test.py --dataroot datasets/demo --name "$NAME" --model "$MODEL" --crop_size 64 --num_threads 2
echo
echo "Training page:  checkpoints/$NAME/web/index.html"
echo "Convergence:    checkpoints/$NAME/convergence.csv"
echo "Test results:   results/$NAME/test_latest/index.html"
