"""EmoBed on the embedded synthetic dataset (`synthetic_emotion`), frame-level arousal/valence.

Command (the `make demo` job runs this twice, for `emobed` and `monomodal`):

      python experiments/main.py --config=configs/synthetic.py --workdir=/tmp/emobed_syn \
          --config.method=emobed --config.target_modality=audio

`get_config(arg)` takes an optional comma-separated argument, e.g.
`--config=configs/synthetic.py:monomodal,video` sets method and target modality.

Expected result (2-core CPU, about a minute per run): validation CCC well above 0 for both
dimensions; see README "Results on the synthetic dataset" for the numbers we measured.
"""
from emobed_jax import config as config_lib


def get_config(arg: str | None = None):
    """Returns the config; `arg` is 'METHOD[,TARGET]' (optional)."""
    config = config_lib.get_base_config()
    config.data.name = "synthetic_emotion"
    config.data.config = "default"
    config.modalities = ("audio", "video")
    config.target_modality = "audio"
    config.task = "regression"
    config.data.window_frames = 100  # 4 s windows
    config.data.window_hop_frames = 50
    config.num_train_steps = 600
    config.batch_size = 32
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    return config_lib.apply_arg(config, arg)
