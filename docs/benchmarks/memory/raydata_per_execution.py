"""Driver memory per Ray Data execution, with no ol_ray code: the shape of one ol_ray window (rows from a list, a task
stage, an actor-pool stage, iterated to the end), run again and again in one driver.

    .venv/bin/python docs/benchmarks/memory/raydata_per_execution.py 41

Prints the driver's resident memory every 5 executions (BENCHMARKS.md, "Memory over a long stream").
"""

import gc
import sys

import psutil
import ray
from ray.data import ActorPoolStrategy


class Double:
    def __call__(self, batch):
        return {"x": batch["x"] * 2}


def plus(batch, window):
    return {"x": batch["x"] + window}


def main(executions: int) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for window in range(executions):
        dataset = ray.data.from_items([{"x": i} for i in range(2048)], override_num_blocks=32)
        dataset = dataset.map_batches(plus, fn_kwargs={"window": window}, batch_format="numpy", num_cpus=0.25)
        dataset = dataset.map_batches(Double, batch_format="numpy", batch_size=64, num_cpus=0.5,
                                      compute=ActorPoolStrategy(min_size=1, max_size=1))
        for _ in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            pass
        del dataset
        gc.collect()
        if window % 5 == 0:
            print(f"execution {window}: driver RSS {psutil.Process().memory_info().rss / 2**20:.1f} MiB", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 41)
