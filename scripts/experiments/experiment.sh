#!/usr/bin/env bash
# One experiment of the papers, from data to numbers. The per-dataset scripts (scripts/experiments/<model>/<dataset>.sh)
# call this with their model and dataset baked in.
#
#   bash scripts/experiments/experiment.sh <model> <dataset> [AtoB|BtoA|both] [stage ...] [job flags] [-- extra train.py flags]
#
# model:   atme | pix2pix (ATME paper, Sec. 5.3) | segan (SEGAN paper, supervised or unsupervised)
# dataset: facades maps cityscapes night2day (atme, pix2pix); facades maps edges2shoes (segan)
# stages:  prepare train test kid fcn diversity study (default: atme/pix2pix "prepare train test kid", plus "fcn" for
#          cityscapes BtoA when SEG_WEIGHTS is set; segan "prepare train test diversity"). "study" runs
#          scripts/experiments/convergence_study.py with the paper's settings over SEEDS: for atme/pix2pix ATME,
#          ATME without feedback and pix2pix (Fig. 3), for segan lambda_MI 1 and 0 (diversity); its folder is
#          <STUDIES_DIR>/<dataset>_<convergence|segan>_<direction>/.
# Jobs:    with the train stage, each run is a job (scripts/experiments/experiment_jobs.py): it trains or resumes
#          the run, then runs its later stages; a preempted job saves and is requeued. Job flags (docs/cluster.md):
#          --executor local|slurm|debug, --max_parallel N, --slurm_partition P, --slurm_gpus_per_job N,
#          --slurm_time_min M, --slurm_extra KEY=VALUE, --status, --dry_run; they go to the study stage too.
# Run name: <dataset>_<model>_<direction>; checkpoints/<name>/, results/<name>/<phase>_latest/. Flags after -- go
#          to train.py; --name --checkpoints_dir --dataroot --direction --model there are refused (set above).
# Environment: PYTHON, TEST_ARGS (extra test.py flags), KID_ARGS (extra compute_kid.py flags, e.g.
#   --inception_weights PATH), SEG_WEIGHTS / SEG_ARCH (Cityscapes FCN scores), DIVERSITY_ARGS
#   (e.g. --backbone_weights PATH), N_EPOCHS / N_EPOCHS_DECAY (override the schedule), N_SAVE_NOISY (ATME:
#   keep W_t and D_t of that many images every epoch for scripts/analysis/analyze_dw.py; ~0.5 MB per image and epoch),
#   DATASETS_DIR / CHECKPOINTS_DIR / RESULTS_DIR (default: datasets, checkpoints, results), DRY_RUN=1 (print
#   the commands instead of running them). Study stage: SEEDS (default "0 1 2"), STUDIES_DIR (default studies),
#   STUDY_ARGS (extra convergence_study flags, e.g. --inception_weights PATH --lpips_backbone_weights PATH).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CALLER_DIR="$PWD"
cd "$ROOT"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"

die() { echo "error: $*" >&2; exit 2; }
# DRY_RUN prints each command as it could be pasted: arguments with spaces in single quotes.
shown() { local a out=(); for a in "$@"; do [[ "$a" =~ [[:space:]] ]] && out+=("'$a'") || out+=("$a"); done; echo "${out[*]}"; }
run() { if [ "${DRY_RUN:-0}" = 1 ]; then echo "+ $(shown "$@")"; else "$@"; fi; }
[ $# -ge 2 ] || die "usage: bash scripts/experiments/experiment.sh <atme|pix2pix|segan> <dataset> [AtoB|BtoA|both] [stage ...] [-- train flags]"
MODEL="$1"; DATASET="$2"; shift 2

# ---------------------------------------------------------------- per-dataset facts
# Split used for testing (maps and cityscapes ship train/ and val/ only) and SEGAN's usual direction
# (labels/maps/edges -> photos).
case "$DATASET" in
  facades)     TEST_PHASE=test; SEGAN_DIRECTION=BtoA ;;
  maps)        TEST_PHASE=val;  SEGAN_DIRECTION=BtoA ;;
  cityscapes)  TEST_PHASE=val;  SEGAN_DIRECTION=BtoA ;;
  night2day)   TEST_PHASE=test; SEGAN_DIRECTION=AtoB ;;
  edges2shoes) TEST_PHASE=val;  SEGAN_DIRECTION=AtoB ;;
  *) die "unknown dataset '$DATASET' (facades, maps, cityscapes, night2day, edges2shoes)" ;;
esac
case "$MODEL" in
  atme|pix2pix) [ "$DATASET" != edges2shoes ] || die "$MODEL runs on facades, maps, cityscapes, night2day"
                DEFAULT_DIRECTION=both; DEFAULT_STAGES="prepare train test kid" ;;
  segan)        case "$DATASET" in facades|maps|edges2shoes) ;; *) die "segan runs on facades, maps, edges2shoes" ;; esac
                DEFAULT_DIRECTION=$SEGAN_DIRECTION; DEFAULT_STAGES="prepare train test diversity" ;;
  *) die "unknown model '$MODEL' (atme, pix2pix, segan)" ;;
esac

# The per-dataset script of this experiment as the caller types it (the commands printed for a person name it):
# relative to the caller's folder, absolute when that is two or more levels away.
SCRIPT="$(realpath -m --relative-to="$CALLER_DIR" "$ROOT/scripts/experiments/$MODEL/$DATASET.sh")"
[[ "$SCRIPT" == ../../* ]] && SCRIPT="$ROOT/scripts/experiments/$MODEL/$DATASET.sh"

DIRECTION=$DEFAULT_DIRECTION
if [ $# -gt 0 ] && [[ "$1" =~ ^(AtoB|BtoA|both)$ ]]; then DIRECTION="$1"; shift; fi
STAGES=()
JOB_FLAGS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    prepare|train|test|kid|fcn|diversity|study) STAGES+=("$1"); shift ;;
    --status|--dry_run) JOB_FLAGS+=("$1"); shift ;;
    --executor|--max_parallel|--slurm_partition|--slurm_gpus_per_job|--slurm_time_min|--slurm_extra)
      [ $# -ge 2 ] || die "$1 needs a value (docs/cluster.md)"
      JOB_FLAGS+=("$1" "$2"); shift 2 ;;
    *) die "unknown stage '$1' (stages: prepare train test kid fcn diversity study; or a job flag, see docs/cluster.md)" ;;
  esac
done
[ $# -gt 0 ] && shift  # the "--"
EXTRA_TRAIN=("$@")
# Flags after -- that say which run this is, or where it and its data are, belong to the script: train.py would
# train one run and the later stages (test, kid, ...) read another. Refused with the command without them.
kept=(); refused=""
while [ $# -gt 0 ]; do
  case "${1%%=*}" in
    --name|--checkpoints_dir|--dataroot|--direction|--model)
      refused+="${refused:+, }${1%%=*}"
      [[ "$1" == *=* ]] || [ $# -lt 2 ] || shift ;;
    *) kept+=("$1") ;;
  esac
  shift
done
if [ -n "$refused" ]; then
  [ ${#kept[@]} -gt 0 ] && kept=(-- "${kept[@]}")
  die "$refused after -- would train a run that the later stages do not read: this script names the run
${DATASET}_${MODEL}_<direction> and takes the direction from its first argument, the model from its folder
(scripts/experiments/<model>/), the folders from CHECKPOINTS_DIR and DATASETS_DIR. Without them:
  $(shown bash "$SCRIPT" "$DIRECTION" "${STAGES[@]}" "${JOB_FLAGS[@]}" "${kept[@]}")"
fi
if [ ${#STAGES[@]} -eq 0 ]; then
  read -r -a STAGES <<< "$DEFAULT_STAGES"
  [ "$DATASET" = cityscapes ] && [ -n "${SEG_WEIGHTS:-}" ] && STAGES+=(fcn)
fi
read -r -a TEST_EXTRA <<< "${TEST_ARGS:-}"
read -r -a KID_EXTRA <<< "${KID_ARGS:-}"
read -r -a DIVERSITY_EXTRA <<< "${DIVERSITY_ARGS:-}"
read -r -a STUDY_EXTRA <<< "${STUDY_ARGS:-}"
read -r -a SEED_LIST <<< "${SEEDS:-0 1 2}"
has_stage() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
if [ "${DRY_RUN:-0}" != 1 ] && has_stage train; then
  # each run a job: train (or resume), then its later stages; prepare before, study after (experiment_jobs.py)
  EXPERIMENT_SCRIPT="$SCRIPT" exec "$PY" -m scripts.experiments.experiment_jobs "$MODEL" "$DATASET" "$DIRECTION" \
       "${STAGES[@]}" "${JOB_FLAGS[@]}" -- "${EXTRA_TRAIN[@]}"
fi
if [ ${#JOB_FLAGS[@]} -gt 0 ] && ! has_stage study; then
  with_train=()  # the stages given, with train in its place
  for stage in prepare train test kid fcn diversity; do
    { [ "$stage" = train ] || has_stage "$stage"; } && with_train+=("$stage")
  done
  [ ${#EXTRA_TRAIN[@]} -gt 0 ] && EXTRA_TRAIN=(-- "${EXTRA_TRAIN[@]}")
  die "job flags (${JOB_FLAGS[*]}) apply to the train and study stages; add one, e.g.
  $(shown bash "$SCRIPT" "$DIRECTION" "${with_train[@]}" "${JOB_FLAGS[@]}" "${EXTRA_TRAIN[@]}")"
fi

# ---------------------------------------------------------------- data
DATA="${DATASETS_DIR:-datasets}"
CKPT="${CHECKPOINTS_DIR:-./checkpoints}"
RESULTS="${RESULTS_DIR:-./results}"
export DATASETS_DIR="$DATA"  # for the download script
DATAROOT="$DATA/$DATASET"
TRAIN_DATAROOT="$DATAROOT"
[ "$DATASET" = night2day ] && TRAIN_DATAROOT="$DATA/night2day_5k"       # ATME paper: 5,000 training images
[ "$MODEL" = segan ] && [ "$DATASET" = edges2shoes ] && TRAIN_DATAROOT="$DATA/edges2shoes_unpaired"

prepare() {
  [ -d "$DATAROOT/train" ] || run bash datasets/download_pix2pix_dataset.sh "$DATASET"
  if [ "$TRAIN_DATAROOT" = "$DATA/night2day_5k" ] && [ ! -e "$TRAIN_DATAROOT/train" ]; then
    run "$PY" -m datasets.make_subset --dataroot "$DATAROOT" --out "$TRAIN_DATAROOT" --n 5000
  fi
  if [ "$TRAIN_DATAROOT" = "$DATA/edges2shoes_unpaired" ] && [ ! -e "$TRAIN_DATAROOT/trainA" ]; then
    run "$PY" -m datasets.make_subset --dataroot "$DATAROOT" --out "$TRAIN_DATAROOT" --unpaired --other_phases
  fi
}

# ---------------------------------------------------------------- model settings
model_flags() {  # $1 = direction
  case "$MODEL" in
    atme)    # Sec. 5.3: d = 64, R = (1, 2, 4, 8), PatchGAN, instance norm, batch 48, 100 + 100 epochs
      echo --model atme --dim 64 --dim_mults 1,2,4,8 --netD basic --norm instance --gan_mode vanilla \
           --lambda_L1 100 --lr 0.0002 --beta1 0.5 --batch_size 48 --n_epochs "${N_EPOCHS:-100}" \
           --n_epochs_decay "${N_EPOCHS_DECAY:-100}" --load_size 286 --crop_size 256 \
           --n_save_noisy "${N_SAVE_NOISY:-0}" ;;
    pix2pix) # Sec. 5.3: the pix2pix defaults (UNet-256, PatchGAN) with instance norm, batch 48, 100 + 100
      echo --model pix2pix --netG unet_256 --netD basic --norm instance --gan_mode vanilla --lambda_L1 100 \
           --lr 0.0002 --beta1 0.5 --batch_size 48 --n_epochs "${N_EPOCHS:-100}" \
           --n_epochs_decay "${N_EPOCHS_DECAY:-100}" --load_size 286 --crop_size 256 ;;
    segan)   # SEGAN training details: nz 8, lambda_MI 1, lambda_L1 3, 4 inputs x 8 codes; 256 px with deconv
             # (facades, maps), 128 px with resize-conv and no pairs (edges2shoes). The paper gives no epoch
             # counts: these follow pix2pix (small sets) and a shorter schedule for the 50k edges2shoes.
      local common="--model segan --nz 8 --lambda_MI 1 --samples_per_input 8 --batch_size 4"
      if [ "$DATASET" = edges2shoes ]; then
        echo $common --dataset_mode unaligned --load_size 128 --crop_size 128 --upsample resize_conv \
             --n_epochs "${N_EPOCHS:-15}" --n_epochs_decay "${N_EPOCHS_DECAY:-15}"
      else
        echo $common --lambda_L1 3 --load_size 286 --crop_size 256 --upsample deconv \
             --n_epochs "${N_EPOCHS:-100}" --n_epochs_decay "${N_EPOCHS_DECAY:-100}"
      fi ;;
  esac
}

run_study() {  # $1 = direction: every model of the comparison over SEEDS, with the settings above
  local direction="$1" kind=convergence flags=()
  case "$MODEL" in
    atme|pix2pix)  # Fig. 3: the Sec. 5.3 settings, shared by all three; each generator as in model_flags
      flags=(--models atme atme_no_feedback pix2pix --load_size 286 --crop_size 256 --batch_size 48
             --model_flags "atme=--dim 64 --dim_mults 1,2,4,8 --lambda_L1 100"
             --model_flags "pix2pix=--netG unet_256 --lambda_L1 100") ;;
    segan)
      [ "$DATASET" != edges2shoes ] || die "the segan study scores outputs against paired targets: facades or maps"
      kind=segan
      flags=(--models segan segan_no_mi --load_size 286 --crop_size 256 --batch_size 4
             --model_flags "segan=--nz 8 --lambda_L1 3 --samples_per_input 8 --upsample deconv") ;;
  esac
  run "$PY" -m scripts.experiments.convergence_study --dataroot "$TRAIN_DATAROOT" --test_dataroot "$DATAROOT" \
      --test_phase "$TEST_PHASE" --study_dir "${STUDIES_DIR:-studies}/${DATASET}_${kind}_${direction}" \
      --seeds "${SEED_LIST[@]}" --direction "$direction" --norm instance --netD basic --ndf 64 --gan_mode vanilla \
      --n_epochs "${N_EPOCHS:-100}" --n_epochs_decay "${N_EPOCHS_DECAY:-100}" "${flags[@]}" "${STUDY_EXTRA[@]}" \
      "${JOB_FLAGS[@]}" -- "${EXTRA_TRAIN[@]}"
}

run_one() {  # $1 = direction
  local direction="$1" name="${DATASET}_${MODEL}_$1"
  local results="$RESULTS/$name/${TEST_PHASE}_latest"
  local test_root="$DATAROOT" test_mode=()
  [ "$MODEL" = segan ] && [ "$DATASET" = edges2shoes ] && test_mode=(--dataset_mode aligned)
  for stage in "${STAGES[@]}"; do
    echo "== $name: $stage"
    case "$stage" in
      prepare) if [[ " ${JOB_FLAGS[*]} " =~ \ --(status|dry_run)\  ]]; then echo "   (--status/--dry_run: nothing prepared)"
               else prepare; fi ;;
      train)
        # shellcheck disable=SC2046
        run "$PY" train.py --dataroot "$TRAIN_DATAROOT" --name "$name" --checkpoints_dir "$CKPT" \
            --direction "$direction" $(model_flags "$direction") "${EXTRA_TRAIN[@]}" ;;
      test)
        local samples=()
        [ "$MODEL" = segan ] && samples=(--n_samples 20 --num_test 100)  # SEGAN: 20 samples x 100 inputs
        run "$PY" test.py --dataroot "$test_root" --name "$name" --model "$MODEL" --checkpoints_dir "$CKPT" \
            --results_dir "$RESULTS" \
            --phase "$TEST_PHASE" "${test_mode[@]}" \
            "${samples[@]}" "${TEST_EXTRA[@]}" ;;
      kid)
        local fake=fake_B
        [ "$MODEL" = segan ] && fake=fake_B_0
        run "$PY" -m scripts.eval.compute_kid --results_dir "$results" --real_label real_B --fake_label "$fake" \
            --checkpoints_dir "$CKPT" \
            --tag dataset="$DATASET" --tag model="$MODEL" --tag direction="$direction" "${KID_EXTRA[@]}" ;;
      fcn)
        if [ "$DATASET" != cityscapes ] || [ "$direction" != BtoA ]; then
          echo "   (FCN scores are for cityscapes BtoA, labels -> photo; skipped)"; continue
        fi
        [ -n "${SEG_WEIGHTS:-}" ] || die "the fcn stage needs SEG_WEIGHTS=<Cityscapes segmentation weights>"
        for photos in fake_B real_B; do  # generated photos, then the real ones (the "ground truth" row)
          run "$PY" -m scripts.eval.eval_cityscapes --results_dir "$results" --photo_label "$photos" --label_label real_A \
              --seg_weights "$SEG_WEIGHTS" --arch "${SEG_ARCH:-fcn_resnet101}" \
              --out "$results/fcn_scores_$photos.json"
        done ;;
      diversity)
        run "$PY" -m scripts.eval.diversity --results_dir "$results" --num_inputs 100 --num_samples 20 \
            "${DIVERSITY_EXTRA[@]}" ;;
      study) run_study "$direction" ;;
    esac
  done
}

if [ "$DIRECTION" = both ]; then
  run_one AtoB
  run_one BtoA
else
  run_one "$DIRECTION"
fi
