"""EmoBed on your own corpus: the `emotion_folder` dataset read from `--config.data.manual_dir`.

The folder layout (splits.csv, labels, one folder per modality) is in docs/folder.md;
experiments/make_example_corpus.py writes an example corpus in it (audio 16 kHz wav, video
30 fps CSV, physio 50 Hz CSV; arousal, valence and dominance at 25 Hz):

    python experiments/make_example_corpus.py --out=/tmp/corpus
    python experiments/main.py --config=configs/folder.py:emobed,audio \
        --config.data.manual_dir=/tmp/corpus --workdir=runs/folder_emobed_audio

The config argument is METHOD[,TARGET[,TASK]]: TARGET is one of the modalities, TASK `regression`
(default: every label dimension of the corpus; `--config.data.label_names="('arousal',)"` picks
some) or `category` (utterance-level corpora with a `category` column). The modalities default to
the example corpus's ("audio", "video", "physio"); for another corpus name its modality folders,
e.g. `--config.modalities="('audio','face')" --config.target_modality=audio`. The level (frame or
utterance) comes from the data: frame-level corpora train on 4 s windows (`data.window_frames`),
utterance-level ones on whole utterances cropped to 10 s (`data.max_frames`) with attention
pooling. Labels at another rate than 25 Hz need `--config.data.frame_rate_hz`. A second corpus
needs its own `--config.data.data_dir` (a prepared dataset records the fingerprint of its sources
and refuses other ones; `--config.data.rebuild=True` prepares it again).

Expected result on the example corpus (seed 0, 600 steps, about a minute on a 2-core CPU):
emobed,audio validation CCC arousal .894 / valence .028 / dominance .435 (ccc_mean .453; best
checkpoint at step 400); the audio carries no valence by construction. For scale, a ridge
regression on 1 s-smoothed log-mel audio reaches .85 / .04 / .20, one on per-frame video+physio
features .54 / .83 / .53 (tests/test_make_example_corpus.py).
"""
from emobed_jax import config as config_lib


def get_config(arg: str | None = None):
    """Returns the config for an `emotion_folder` corpus; `arg` is 'METHOD[,TARGET[,TASK]]'."""
    config = config_lib.get_base_config()
    config.data.name = "emotion_folder"
    config.data.config = "logmel"
    config.modalities = ("audio", "video", "physio")
    config.target_modality = "audio"
    config.task = "regression"
    # Frame level: 4 s training windows with 2 s hop (evaluation uses whole recordings).
    config.data.window_frames = 100
    config.data.window_hop_frames = 50
    # Utterance level: crop training utterances to 10 s (25 Hz frames); attention pooling weighs
    # the frames of each utterance (frame-level runs do not pool).
    config.data.max_frames = 250
    config.model.pooling = "attention"
    # A recording without an auxiliary modality's file is masked out of the auxiliary terms.
    config.data.missing_auxiliary = "mask"
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_train_steps = 600
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    config_lib.apply_arg(config, arg)
    if config.task == "category":
        # Crossmodal positives: utterances of the same class (cross-entropy classes weighted by
        # inverse frequency, the base default).
        config.loss.positives = "class"
    return config
