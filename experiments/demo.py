"""`make demo`: EmoBed vs its monomodal baseline on the embedded synthetic dataset, then use it.

Trains `emobed` and `monomodal` (audio target) with configs/synthetic.py and prints the
validation and test metrics side by side (best checkpoint, target modality alone). Then it
evaluates the EmoBed run from its workdir alone (`--mode=eval`: metrics, prediction CSVs and
plots) and predicts one recording of the built-in dataset from its raw audio with
`experiments/predict.py`, printing where everything went. Reruns resume or reuse finished runs
in --workdir.

    python experiments/demo.py --workdir=demo_runs [--steps=600] [--target=audio]
"""
import argparse
import json
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
    from emobed_jax import console

    console.setup()  # our lines only: no library INFO, no note about a missing TPU backend
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
    use_the_model(os.path.join(args.workdir, f"emobed_{args.target}"), args)


def use_the_model(workdir: str, args) -> None:
    """Evaluates a finished run from its workdir alone and predicts one wav of the dataset."""
    import subprocess

    import soundfile

    from emobed_jax.datasets import synthetic_emotion
    from emobed_jax.training import train

    out = train.evaluate_checkpoint(None, workdir)
    print(f"evaluated step {out['validation']['step']} of {workdir}: eval_<split>.json, "
          f"predictions_<split>.csv and plot_*.png are in {workdir}")
    wav = os.path.join(args.workdir, "validation_0.wav")
    default = next(c for c in synthetic_emotion.SyntheticEmotion.BUILDER_CONFIGS
                   if c.name == "default")  # configs/synthetic.py's build
    waveform = synthetic_emotion.recording_waveform(default, "validation", 0)
    soundfile.write(wav, waveform, synthetic_emotion.SAMPLE_RATE, subtype="FLOAT")
    csv_path = os.path.join(args.workdir, "validation_0.predictions.csv")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict.py")
    print(f"wrote {wav} (recording 0 of the validation split, raw audio); predicting it:",
          flush=True)
    subprocess.run([sys.executable, script, f"--workdir={workdir}", f"--input={wav}",
                    f"--output={csv_path}", "--plot"], check=True)


if __name__ == "__main__":
    from emobed_jax import tcmalloc

    tcmalloc.reexec()  # where installed: 1.4-1.8x faster JAX on the CPU
    main()
