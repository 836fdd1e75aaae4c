"""Fine-tune from a recipe: `accelerate launch scripts/finetune.py recipes/X.yaml [a.b=value ...]`."""

import sys

from hf_transfer.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
