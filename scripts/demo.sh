#!/usr/bin/env bash
# Set up, then analyse the two sample images; results go to out/demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source "${VENV:-.venv}/bin/activate"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

napari-cellularity info sample_data/slide_he.tif --thumbnail out/demo/slide_he_thumbnail.png
napari-cellularity analyze sample_data/patch_he.png sample_data/slide_he.tif --mpp 0.5 --out out/demo "$@"
echo "demo: results in $(pwd)/out/demo"
