"""EmoBed on OMG-Emotion: utterance-level categories (7 classes) or arousal/valence.

Needs the OMG-Emotion CSVs plus the media prepared by experiments/prepare_omg.py and OpenFace
(README "OMG-Emotion"). The config argument is METHOD,TARGET,TASK with TARGET `audio` or `video`
and TASK `category` (default) or `regression` (arousal and valence):

    python experiments/main.py --config=configs/omg_emotion.py:emobed,audio,category \
        --workdir=runs/omg_emobed_audio_cat --config.data.manual_dir=/path/to/omg

    python experiments/main.py --config=configs/omg_emotion.py:emobed,video,regression \
        --workdir=runs/omg_emobed_video_av --config.data.manual_dir=/path/to/omg --mode=eval

Eval writes `predictions_<split>.csv` in the official CSV's row order
(`video,utterance,arousal,valence,category,has_media`) for the organisers' scorer.

Defaults are the small-corpus recipe (docs/small_corpus.md): pooled statistics -> MLP,
per-video centring, dropout, frame dropout, feature noise, weight decay. Expected result on the
synthetic OMG-format corpus of experiments/make_omg_corpus.py (seed 0, 315/130 utterances),
monomodal video, seeds 0-2: validation accuracy 0.69-0.70, UAR 0.66-0.67, macro-F1 0.66-0.68
(logistic regression on pooled statistics: 0.66 / 0.61 / 0.60); regression CCC arousal
0.60-0.62, valence 0.73-0.77 (ridge: 0.47 / 0.75).

On the real corpus: not measured here (the clips cannot be downloaded in this environment). For
context, the organisers' validation baselines are CCC about .15/.23 (arousal/valence); strong
submissions .34-.40/.40-.52. Classification: report accuracy, UAR and macro-F1.
"""
from emobed_jax import config as config_lib


def get_config(arg: str | None = None):
    """Returns the OMG-Emotion config; `arg` is 'METHOD[,TARGET[,TASK]]'."""
    config = config_lib.get_base_config()
    config.data.name = "omg_emotion"
    config.data.config = "openface"
    config.modalities = ("audio", "video")
    config.target_modality = "audio"
    config.task = "category"
    config.data.max_frames = 400  # crop training utterances to 16 s (25 Hz audio frames)
    config.data.missing_auxiliary = "mask"
    config.model.pooling = "attention"  # for model.encoder='lstm' or 'conv'
    # The small-corpus recipe (docs/small_corpus.md), chosen on the validation split of a
    # synthetic OMG-format corpus: per utterance the mean and standard deviation of the frames,
    # then one MLP layer, strongly regularised, on features centred per video (per speaker).
    config.model.encoder = "pooled"
    config.model.num_layers = 1
    config.model.hidden = 64
    config.model.dropout = 0.3
    config.model.frame_dropout = 0.1
    config.model.feature_noise = 0.1
    config.optimizer.weight_decay = 0.01
    config.data.normalize = "group"
    config.batch_size = 32
    config.eval_batch_size = 32
    config.num_train_steps = 2000
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    config.loss.class_weights = "inverse"  # Surprise is ~1% of training utterances
    config.loss.positives = "class"
    config_lib.apply_arg(config, arg)
    if config.task == "regression":
        # Utterance-level CCC loss; positives for the crossmodal term by label distance
        # (arousal in [0, 1], valence in [-1, 1]).
        config.loss.positives = "distance"
        config.loss.pos_threshold = 0.15
        config.loss.neg_threshold = 0.4
    return config
