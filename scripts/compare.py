"""Print the test metrics of a pretrained run beside a from-scratch run: `compare.py PRETRAINED SCRATCH`."""

import json
import sys
from pathlib import Path


def test_metrics(folder: str) -> dict:
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        sys.exit(f"compare: {path} not found (did the run finish?)")
    return json.loads(path.read_text())["test"]


# (headline metric, the other metrics shown): classification, or token classification (entity-level F1)
KEYS = {"test_accuracy": ("test_accuracy", "test_f1_macro"),
        "test_overall_f1": ("test_overall_f1", "test_overall_precision", "test_overall_recall", "test_overall_accuracy")}


def main(pretrained: str, scratch: str) -> None:
    a, b = test_metrics(pretrained), test_metrics(scratch)
    headline = next(k for k in KEYS if k in a)
    print(f"\n{'':24}{'pretrained':>12}{'scratch':>12}")
    for key in KEYS[headline]:
        print(f"{key:24}{a[key]:12.4f}{b[key]:12.4f}")
    gain = 100 * (a[headline] - b[headline])
    verdict = "transfer helps" if gain > 0 else "NEGATIVE TRANSFER: pretrained does not beat scratch"
    print(f"gain of transfer: {gain:+.1f} {headline.removeprefix('test_')} points ({verdict})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
