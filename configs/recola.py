"""EmoBed on RECOLA (AVEC 2016): continuous arousal and valence every 40 ms, metric CCC.

Needs the AVEC 2016 RECOLA package (licence; see README "RECOLA"). Command, for each method
(`monomodal`, `joint`, `crossmodal`, `emobed`) and target (`audio`, `video_geometric`,
`video_appearance`), via the config argument METHOD,TARGET:

    python experiments/main.py --config=configs/recola.py:emobed,audio --workdir=runs/recola_emobed_audio \
        --config.data.manual_dir=/path/to/AVEC2016

    python experiments/main.py --config=configs/recola.py:emobed,audio --workdir=runs/recola_emobed_audio \
        --config.data.manual_dir=/path/to/AVEC2016 --mode=eval

Data: tfds `recola/logmel` (40 log-mel bands from the wavs, the same code as the synthetic data;
`--config.data.config=functionals` uses the package's eGeMAPS functionals, `egemaps` openSMILE
eGeMAPS LLDs). Video streams are the package's arousal-window feature files. There is no test
split in the public package (no test gold standard): results.json then holds validation (dev) only.

Expected result: not measured here (the corpus is licensed); published anchors on the test set are
CCC .702/.638 (AVEC 2016 multimodal baseline) for arousal/valence. Report validation CCC over the
concatenated dev recordings (`ccc_arousal`, `ccc_valence`) and per recording (`*_per_recording`).
"""
from emobed_jax import config as config_lib


def get_config(arg: str | None = None):
    """Returns the RECOLA config; `arg` is 'METHOD[,TARGET]' (default 'emobed,audio')."""
    config = config_lib.get_base_config()
    config.data.name = "recola"
    config.data.config = "logmel"
    config.modalities = ("audio", "video_geometric", "video_appearance")
    config.target_modality = "audio"
    config.task = "regression"
    # Raters lag the signal; 2.4 s lies in the 2-4 s range used for RECOLA (README "Defaults").
    config.data.label_delay_s.arousal = 2.4
    config.data.label_delay_s.valence = 2.4
    config.data.window_frames = 300  # 12 s training windows
    config.data.window_hop_frames = 150
    config.batch_size = 16
    config.eval_batch_size = 8
    config.num_train_steps = 3000
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250
    config.loss.positives = "bins"
    config.loss.num_bins = 3
    config.eval_splits = ("validation", "test")
    return config_lib.apply_arg(config, arg)
