# Sourced by the GPU scripts on the device machine (prepared by bench/gpu_prepare.sh): the wheels
# carried in .whl, the shared data carried in .gpu_shared where the recipes look (../shared),
# offline Hub and datasets, and one line and exit 3 when the device's timm is too old for mtkdrl.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
if [ -d .gpu_shared/data ] && [ ! -e ../shared ]; then
  ln -s "$PWD/.gpu_shared" ../shared
fi
python3 - <<'PY' || exit 3
import timm, torch
from packaging.version import Version
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "timm", timm.__version__)
if Version(timm.__version__) < Version("1.0.31"):
    raise SystemExit(f"timm {timm.__version__} here; mtkdrl needs 1.0.31: carry its wheel in .whl")
PY
