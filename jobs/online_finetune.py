"""Ray job entry point: online fine-tuning as a config describes it.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/online_finetune.py configs/sst2.yaml
    python jobs/online_finetune.py configs/sst2.yaml learner.lr=3e-5      # local: starts Ray itself
    python jobs/online_finetune.py --resume RUN_DIR                      # continue a killed run

Connects with ray.init() (the address comes from RAY_ADDRESS, which `ray job submit` sets), runs, prints the summary,
and exits non-zero with a one-line reason on failure. A Ray job runs once; resuming is this script's `--resume`.
"""

import sys

from ol_ray.cli import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    sys.exit(main(["run", *sys.argv[1:]]))
