#!/usr/bin/env bash
# Download one of the public pix2pix datasets into datasets/<name>/ (train/ val/ and, for some, test/).
#   bash datasets/download_pix2pix_dataset.sh facades
# Environment: DATASETS_DIR (where to put it; default: this folder), PIX2PIX_DATASETS_URL (mirror of the
# archives; default: the Berkeley server), FORCE=1 (download again over an existing folder).
set -euo pipefail

NAMES=(facades maps cityscapes night2day edges2shoes edges2handbags)
BASE_URL="${PIX2PIX_DATASETS_URL:-http://efrosgans.eecs.berkeley.edu/pix2pix/datasets}"
DEST="${DATASETS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"

usage() {
  echo "usage: bash $0 <name>   with <name> one of: ${NAMES[*]}" >&2
}

if [ $# -ne 1 ]; then
  usage
  exit 2
fi
NAME="$1"
valid=0
for n in "${NAMES[@]}"; do [ "$n" = "$NAME" ] && valid=1; done
if [ "$valid" -ne 1 ]; then
  echo "error: unknown dataset '$NAME'. Valid names: ${NAMES[*]}" >&2
  exit 2
fi

TARGET="$DEST/$NAME"
if [ -d "$TARGET/train" ] && [ "${FORCE:-0}" != "1" ]; then
  echo "$TARGET already holds a train/ split; nothing to do (FORCE=1 downloads it again)."
  exit 0
fi
if [ "$NAME" = "cityscapes" ]; then
  echo "Note: the Cityscapes images are subject to the Cityscapes license; see https://www.cityscapes-dataset.com"
fi

URL="$BASE_URL/$NAME.tar.gz"
mkdir -p "$DEST"
WORK="$(mktemp -d "$DEST/.download_$NAME.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ARCHIVE="$WORK/$NAME.tar.gz"

echo "Downloading $URL"
if command -v curl >/dev/null 2>&1; then
  fetch() { curl -fL --retry 2 --connect-timeout 20 -o "$ARCHIVE" "$URL"; }
elif command -v wget >/dev/null 2>&1; then
  fetch() { wget --tries=3 --timeout=20 -O "$ARCHIVE" "$URL"; }
else
  echo "error: neither curl nor wget is installed; install one of them (e.g. apt-get install curl)." >&2
  exit 1
fi
if ! fetch; then
  cat >&2 <<MSG
error: could not download $URL
  - check the internet connection (and the http_proxy/https_proxy variables behind a proxy);
  - the server may be down for a while: try again later, or set PIX2PIX_DATASETS_URL to a mirror;
  - or fetch $NAME.tar.gz on another machine and unpack it here:  tar -xzf $NAME.tar.gz -C $DEST
MSG
  exit 1
fi

echo "Unpacking into $TARGET"
if ! tar -xzf "$ARCHIVE" -C "$WORK"; then
  echo "error: $URL did not unpack as a .tar.gz archive (incomplete download?); run the script again." >&2
  exit 1
fi
if [ ! -d "$WORK/$NAME" ]; then
  echo "error: the archive holds no top-level '$NAME/' folder; unpack $ARCHIVE by hand." >&2
  exit 1
fi
rm -rf "$TARGET"
mv "$WORK/$NAME" "$TARGET"
for split in train val test; do
  if [ -d "$TARGET/$split" ]; then
    echo "  $split: $(find "$TARGET/$split" -type f | wc -l) images"
  fi
done
if [ "$NAME" = "night2day" ]; then
  echo "The ATME paper trains on the first 5,000 images:"
  echo "  python datasets/make_subset.py --dataroot $TARGET --out ${TARGET}_5k --n 5000"
fi
echo "Done: $TARGET"
