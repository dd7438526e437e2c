"""Ray job entry point: online fine-tuning as a config describes it.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/online_finetune.py configs/sst2.yaml
    python jobs/online_finetune.py configs/sst2.yaml learner.lr=3e-5      # local: starts Ray itself

Connects with ray.init() (the address comes from RAY_ADDRESS, which `ray job submit` sets), runs, prints the summary,
and exits non-zero with a one-line reason on failure.
"""

import sys

from ol_ray.cli import print_summary
from ol_ray.config import ConfigError, load_config
from ol_ray.pipeline import run_pipeline


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
        summary = run_pipeline(cfg)
    except ConfigError as error:
        print(f"online_finetune: bad config: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a job runs once: say why it failed, in one line, and exit non-zero
        print(f"online_finetune: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0 if summary["accounting_ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
