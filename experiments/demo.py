"""`make demo`: EmoBed vs its monomodal baseline on the embedded synthetic dataset.

Trains `emobed` and `monomodal` (audio target) with configs/synthetic.py, evaluates each run's
best checkpoint with the target modality alone (as `--mode=eval` does) and prints the
validation and test metrics side by side. Reruns resume or reuse finished runs in --workdir.

    python experiments/demo.py --workdir=demo_runs [--steps=600] [--target=audio]
"""
import argparse
import json
import logging
import os
import sys


def _table(results: dict, split: str) -> str:
    keys = ["ccc_arousal", "ccc_valence", "ccc_mean", "ccc_arousal_per_recording",
            "ccc_valence_per_recording"]
    methods = list(results)
    lines = [f"{split:<28}" + "".join(f"{m:>12}" for m in methods)]
    for k in keys:
        lines.append(f"{k:<28}" + "".join(f"{results[m]['metrics'][split][k]:>12.4f}" for m in methods))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_runs")
    parser.add_argument("--steps", type=int, default=None, help="override num_train_steps")
    parser.add_argument("--target", default="audio", help="inference modality")
    parser.add_argument("--data_dir", default=None, help="tfds data_dir (default: ~/tensorflow_datasets)")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    logging.basicConfig(level=logging.WARNING)
    from configs import synthetic
    from emobed_jax.training import train

    results = {}
    for method in ("monomodal", "emobed"):
        config = synthetic.get_config(f"{method},{args.target}")
        if args.steps:
            config.num_train_steps = args.steps
        if args.data_dir:
            config.data.data_dir = args.data_dir
        workdir = os.path.join(args.workdir, f"{method}_{args.target}")
        done = os.path.join(workdir, "results.json")
        if os.path.exists(done):
            with open(done) as f:
                results[method] = json.load(f)
            if results[method]["step"] >= config.num_train_steps:
                print(f"{method}: reusing {done}")
                continue
        print(f"== training {method} (target {args.target}) -> {workdir}", flush=True)
        results[method] = train.train_and_evaluate(config, workdir)
    print()
    for split in ("validation", "test"):
        if all(split in r["metrics"] for r in results.values()):
            print(_table(results, split))
            print()


if __name__ == "__main__":
    main()
