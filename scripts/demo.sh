#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, build the demo data set, train the flagship model briefly
# on the CPU, run test.py, and print where the results page is.
usage() {
  cat <<'EOF'
Usage: bash scripts/demo.sh [extra train.py flags]
  Sets up .venv, builds datasets/demo, trains briefly on the CPU, tests, prints where the pages are.
Environment:
  MODEL=atme          atme | pix2pix | segan (MODEL=pix2pix bash scripts/demo.sh for the baseline)
  NAME=demo_$MODEL    run name: checkpoints/$NAME and results/$NAME
  EPOCHS=4            epochs at the initial learning rate (train.py --n_epochs)
  EPOCHS_DECAY=4      epochs of linear decay (train.py --n_epochs_decay)
After an interruption (Ctrl-C saves a resumable state), or to run it again:
  bash scripts/demo.sh --continue_train   resume the run where it stopped
  bash scripts/demo.sh --start_over       move the earlier run aside and train afresh
EOF
}
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-atme}
NAME=${NAME:-demo_$MODEL}
EPOCHS=${EPOCHS:-4}
EPOCHS_DECAY=${EPOCHS_DECAY:-4}
case " $* " in
  *" -h "*|*" --help "*) usage; exit 0 ;;
esac
# A second demo on the same run name must say what to do with the first, before anything is set up.
if [ -f "checkpoints/$NAME/train_opt.json" ] && [[ " $* " != *" --continue_train "* ]] \
    && [[ " $* " != *" --start_over "* ]]; then
  echo "scripts/demo.sh: checkpoints/$NAME already holds a run (an earlier demo)." >&2
  echo "Resume it, start it afresh (the earlier run is moved aside), or use another run name:" >&2
  echo "  bash scripts/demo.sh --continue_train" >&2
  echo "  bash scripts/demo.sh --start_over" >&2
  echo "  NAME=${NAME}_2 bash scripts/demo.sh" >&2
  exit 2
fi
bash scripts/setup_env.sh
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

$PY -m datasets.make_demo_dataset --out datasets/demo --size 64
case "$MODEL" in
  # ATME at the paper's proportions: D keeps the paper's width (ndf 64) with one layer, so a 64 px crop holds 4 of
  # its 16 px patches across in a 30x30 map (paper: 256 / 70 = 3.7, 30x30); G keeps the paper's R = (1, 2, 4, 8)
  # at d = 16: 2.44 M parameters against D's 0.14 M, 17x (paper: 35.8 M against 2.77 M, 13x; pix2pix's 20x).
  atme)    ARCH=(--dim 16 --init_dim 16 --dim_mults 1,2,4,8 --groups 8 --netD n_layers --n_layers_D 1 --ndf 64
                 --batch_size 4) ;;
  pix2pix) ARCH=(--netG unet --ngf 32 --ndf 32 --batch_size 4) ;;
  segan)   ARCH=(--ngf 32 --ndf 32 --batch_size 2 --samples_per_input 4) ;;
  *)       ARCH=() ;;
esac
COMMON=(--dataroot datasets/demo --name "$NAME" --model "$MODEL" --direction AtoB
        --load_size 72 --crop_size 64 --num_threads 2 --seed 0)
# train.py's printed resume command (a stop, a refusal, the page) is then this script's own --continue_train.
export LAUNCHED_BY=scripts/demo.sh DEMO_MODEL="$MODEL" DEMO_NAME="$NAME"
$PY train.py "${COMMON[@]}" "${ARCH[@]}" --n_epochs "$EPOCHS" --n_epochs_decay "$EPOCHS_DECAY" \
    --display_id 0 --print_freq 40 --display_freq 200 --update_html_freq 200 --save_latest_freq 1000 \
    --save_epoch_freq 4 "$@"
$PY test.py --dataroot datasets/demo --name "$NAME" --model "$MODEL" --preprocess none --num_threads 2
echo
echo "Training page:  checkpoints/$NAME/web/index.html"
echo "Convergence:    checkpoints/$NAME/convergence.csv"
echo "Test results:   results/$NAME/test_latest/index.html"
$PY -m scripts.experiments.run_records "checkpoints/$NAME"   # the last epoch's -L_GAN, its distance to log 4, the plot
