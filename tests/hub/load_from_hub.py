"""Run by the tests in a fresh process (offline, with its own Hub cache): load a model through
timm's `hf-hub:` path, run it on saved images, and write its logits and what it resolved.

usage: load_from_hub.py REPO_ID FOLDER [--import-mtkdrl]
  reads FOLDER/images.safetensors; writes FOLDER/logits.safetensors and FOLDER/loaded.json.
With --import-mtkdrl it first tries without `import mtkdrl` (recording the error), then imports it.
"""

import argparse
import json
import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo_id")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--import-mtkdrl", action="store_true")
    args = parser.parse_args()
    report = {}
    name = f"hf-hub:{args.repo_id}"
    if args.import_mtkdrl:
        try:
            timm.create_model(name, pretrained=True)
        except RuntimeError as err:
            report["without_mtkdrl"] = str(err)
        import mtkdrl  # noqa: F401  (registers the *_cifar architectures)
    model = timm.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        logits = model(load_file(str(args.folder / "images.safetensors"))["images"])
    save_file({"logits": logits.contiguous()}, str(args.folder / "logits.safetensors"))
    report.update(
        mtkdrl_imported="mtkdrl" in sys.modules,
        data_config=timm.data.resolve_data_config({}, model=model),
        label_names=model.pretrained_cfg.get("label_names"),
        source=model.pretrained_cfg.get("source"),
        num_classes=model.num_classes,
    )
    (args.folder / "loaded.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
