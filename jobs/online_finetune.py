"""Ray job entry point: online fine-tuning as a config describes it.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/online_finetune.py configs/sst2.yaml
    python jobs/online_finetune.py configs/sst2.yaml learner.lr=3e-5      # local: starts Ray itself
    python jobs/online_finetune.py --resume RUN_DIR                      # continue a killed run

Connects with ray.init() (the address comes from RAY_ADDRESS, which `ray job submit` sets), runs, prints the summary,
and exits non-zero with a one-line reason on failure. A Ray job runs once, so this script runs with
`--resume-or-start`: submitted again (a scheduler's or cron's retry) with a fixed `output.run_dir`, it continues the
run there from its newest checkpoint instead of starting over; with a run directory named by the time
(`runs/{name}-{time}`, the local configs' default) every submission is a new run.
"""

import sys

from ol_ray.cli import job_arguments, main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    sys.exit(main(job_arguments(sys.argv[1:])))  # a job submitted again continues its run
