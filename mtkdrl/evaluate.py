"""`python -m mtkdrl.evaluate`: top-1/top-5 of a timm model (or a distilled student) on data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import models  # noqa: F401  (registers the *_cifar architectures)
from .data import build_eval_loader, load_splits
from .errors import CommandParser, exit_code
from .metrics import evaluate_classifier
from .pool import check_class_count, create_model, data_config_of
from .recipe import DataConfig, ModelSpec


def data_config_from_arg(data: str, split: str, **fields) -> DataConfig:
    """A parquet file, an imagefolder directory, or a Hub data set name, as a `DataConfig`."""
    path = Path(data)
    if path.suffix == ".parquet":
        return DataConfig(name="parquet", data_files={split: str(path)}, eval_split=split, **fields)
    if path.is_dir():
        return DataConfig(name="imagefolder", data_dir=str(path), eval_split=split, **fields)
    return DataConfig(name=data, eval_split=split, **fields)


def evaluate_model(
    spec: ModelSpec, data: DataConfig, precision: str = "no", device: str | None = None
) -> dict:
    """Accuracy of the model a spec names on `data.eval_split`."""
    _, _, info = load_splits(data, train=False)
    model = create_model(spec, info.num_classes, "model")
    check_class_count(model, info.num_classes, None, spec.name, role="model", hint="")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader, _, _ = build_eval_loader(data, data_config_of(model))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast(target.type, dtype=dtype, enabled=dtype is not None)

    batches = tqdm(loader, desc=f"evaluating {spec.name}", leave=False)
    metrics = evaluate_classifier(model.to(target), batches, target, autocast=autocast)
    return {"model": spec.name, "checkpoint": spec.checkpoint, "split": data.eval_split, **metrics}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="mtkdrl evaluate", description=__doc__)
    parser.add_argument("--model", required=True, help="timm name, *_cifar name or hf-hub:org/name")
    parser.add_argument("--checkpoint", help="weights file (safetensors) to load into the model")
    parser.add_argument(
        "--pretrained", action="store_true", help="load timm/Hub pretrained weights"
    )
    parser.add_argument(
        "--data", required=True, help="parquet file, imagefolder dir or Hub data set"
    )
    parser.add_argument(
        "--split", default="validation", help="split to evaluate (default validation)"
    )
    parser.add_argument("--image-column")
    parser.add_argument("--label-column")
    parser.add_argument("--limit", type=int, help="evaluate the first N samples only")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--out", help="write the result as JSON to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        spec = ModelSpec(name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint)
        data = data_config_from_arg(
            args.data,
            args.split,
            image_column=args.image_column,
            label_column=args.label_column,
            eval_subset=args.limit,
            eval_batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
        result = evaluate_model(spec, data, args.precision)
        print(
            f"{result['model']}: top-1 {result['top1']:.2f}  top-5 {result['top5']:.2f}  "
            f"({result['count']} images, split {result['split']})"
        )
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))

    return exit_code(job)


if __name__ == "__main__":
    sys.exit(main())
