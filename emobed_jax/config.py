"""The base configuration every experiment config starts from, and its validation.

Every key here is read somewhere in the package; `validate_config` rejects unknown values with a
message listing the valid ones. Experiment configs in `configs/` call `get_base_config()` and
override what they need. Defaults where the EmoBed paper's details are unknown are explained in the
README ("Defaults and why").
"""
from __future__ import annotations

import ml_collections

METHODS = ("monomodal", "joint", "crossmodal", "emobed")
TASKS = ("arousal_valence", "category")
PARALLELISM = ("jit", "pmap")
ENCODERS = ("lstm", "gru", "conv")
RNN_IMPLS = ("auto", "fused", "cudnn", "flax")  # emobed_jax.models.encoders.RNN_IMPLS
POOLING = ("mean", "attention")
REGRESSION_LOSSES = ("ccc", "sequence_ccc", "mse")
ALIGN_LOSSES = ("triplet", "supcon")
MINING = ("batch_hard", "semi_hard")
DIRECTIONS = ("both", "target_to_aux", "aux_to_target")
POSITIVES = ("bins", "distance", "class")
CLASS_WEIGHTS = ("inverse", "sqrt_inverse", "none")
NONFINITE = ("mask", "raise")
MISSING_AUX = ("drop", "mask")
ACTIVATIONS = ("tanh", "relu", "linear")
BIAS_SCALE = ("none", "center_scale", "center", "scale")


def get_base_config() -> ml_collections.ConfigDict:
    """Returns the base config (synthetic data, EmoBed, audio target)."""
    c = ml_collections.ConfigDict()
    c.method = "emobed"
    c.target_modality = "audio"
    c.modalities = ("audio", "video")
    c.task = "arousal_valence"
    c.seed = 0
    c.num_seeds = 1  # > 1: train seeds seed..seed+K-1 as vmapped replicas (experiments/ablation.py)
    c.num_train_steps = 600
    c.batch_size = 32
    c.eval_batch_size = 16
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 200
    c.checkpoint_every_minutes = 0.0  # also checkpoint after this many minutes (0 = off)
    c.log_every_steps = 50
    c.parallelism = "jit"
    c.best_metric = "auto"  # 'auto': ccc_mean (regression) or uar (category)
    c.eval_splits = ("validation", "test")
    c.skip_nonfinite_updates = False

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip_norm = 1.0

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic_emotion"
    c.data.config = "default"
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
    c.data.window_frames = 100
    c.data.window_hop_frames = 50
    c.data.max_frames = 0  # utterance datasets: crop training utterances (0 = no limit)
    c.data.normalize = True
    c.data.nonfinite = "mask"
    c.data.missing_auxiliary = "mask"
    c.data.label_delay_s = ml_collections.ConfigDict({"arousal": 0.0, "valence": 0.0})
    c.data.frame_rate_hz = 25.0
    c.data.prefetch_threads = 2

    c.model = ml_collections.ConfigDict()
    c.model.encoder = "lstm"
    # LSTM: "auto" (cuDNN on a GPU, else "fused"), "fused" (hand-written VJP, fastest on a CPU),
    # "cudnn" or "flax" (nn.RNN); all share parameters and results.
    c.model.rnn_impl = "auto"
    c.model.hidden = 64
    c.model.num_layers = 2
    c.model.bidirectional = True
    c.model.kernel_size = 5
    c.model.dropout = 0.1
    c.model.pooling = "mean"
    c.model.embedding_dim = 64
    c.model.projector_activation = "tanh"
    c.model.head_hidden = (32,)
    c.model.head_dropout = 0.0

    # AVEC-style post-processing of frame-level predictions at evaluation (off by default).
    c.postprocess = ml_collections.ConfigDict()
    c.postprocess.median_window_frames = 0
    c.postprocess.bias_scale = "none"

    c.loss = ml_collections.ConfigDict()
    c.loss.regression = "ccc"
    c.loss.class_weights = "inverse"
    c.loss.label_smoothing = 0.0
    c.loss.w_aux = 1.0
    c.loss.w_align = 0.5
    c.loss.align = "triplet"
    c.loss.margin = 0.2
    c.loss.mining = "batch_hard"
    c.loss.direction = "both"
    c.loss.positives = "bins"
    c.loss.num_bins = 3
    c.loss.pos_threshold = 0.1
    c.loss.neg_threshold = 0.3
    c.loss.temperature = 0.1
    c.loss.align_frames = 256
    return c


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies a 'METHOD[,TARGET[,TASK]]' config-file argument (`--config=file.py:emobed,video`).

    Args:
      config: the config to change in place.
      arg: None, or comma-separated method, target modality and task.

    Returns:
      The same config.
    """
    if not arg:
        return config
    parts = [p.strip() for p in arg.split(",")]
    names = ("method", "target_modality", "task")
    if len(parts) > len(names):
        raise ValueError(f"config argument {arg!r}: expected at most METHOD,TARGET,TASK")
    for name, value in zip(names, parts):
        if value:
            config[name] = value
    return config


def _check(value, valid, key):
    if value not in valid:
        raise ValueError(f"config.{key}={value!r} is not valid; expected one of {list(valid)}")


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
    """Raises ValueError naming the key, the value and what was expected.

    Args:
      config: the experiment config.
      num_devices: the global device count (the batch must divide evenly).
    """
    _check(config.method, METHODS, "method")
    _check(config.task, TASKS, "task")
    _check(config.parallelism, PARALLELISM, "parallelism")
    _check(config.model.encoder, ENCODERS, "model.encoder")
    _check(config.model.rnn_impl, RNN_IMPLS, "model.rnn_impl")
    _check(config.model.pooling, POOLING, "model.pooling")
    _check(config.model.projector_activation, ACTIVATIONS, "model.projector_activation")
    _check(config.loss.regression, REGRESSION_LOSSES, "loss.regression")
    _check(config.loss.align, ALIGN_LOSSES, "loss.align")
    _check(config.loss.mining, MINING, "loss.mining")
    _check(config.loss.direction, DIRECTIONS, "loss.direction")
    _check(config.loss.positives, POSITIVES, "loss.positives")
    _check(config.loss.class_weights, CLASS_WEIGHTS, "loss.class_weights")
    _check(config.data.nonfinite, NONFINITE, "data.nonfinite")
    _check(config.postprocess.bias_scale, BIAS_SCALE, "postprocess.bias_scale")
    _check(config.data.missing_auxiliary, MISSING_AUX, "data.missing_auxiliary")
    modalities = tuple(config.modalities)
    if not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"config.modalities={modalities!r}: expected distinct modality names")
    if config.target_modality not in modalities:
        raise ValueError(f"config.target_modality={config.target_modality!r} is not valid; expected "
                         f"one of config.modalities={list(modalities)}")
    if config.method != "monomodal" and len(modalities) < 2:
        raise ValueError(
            f"config.method={config.method!r} needs at least one auxiliary modality; "
            f"config.modalities={modalities!r}")
    for key in ("batch_size", "eval_batch_size", "num_train_steps", "eval_every_steps", "num_seeds",
                "checkpoint_every_steps", "log_every_steps"):
        if int(config[key]) <= 0:
            raise ValueError(f"config.{key}={config[key]!r}: expected a positive integer")
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % num_devices:
            raise ValueError(
                f"config.{key}={config[key]} is not divisible by the {num_devices} devices; "
                f"expected a multiple of {num_devices}")
    if config.data.window_frames <= 0 or config.data.window_hop_frames <= 0:
        raise ValueError("config.data.window_frames and window_hop_frames: expected positive")
    if config.task == "category" and config.loss.positives != "class" and config.method in (
            "crossmodal", "emobed"):
        raise ValueError("config.loss.positives must be 'class' for task='category'")
    if config.task == "arousal_valence" and config.loss.positives == "class" and config.method in (
            "crossmodal", "emobed"):
        raise ValueError(
            "config.loss.positives='class' needs task='category'; expected 'bins' or 'distance'")
    for key in ("w_aux", "w_align", "margin"):
        if config.loss[key] < 0:
            raise ValueError(f"config.loss.{key}={config.loss[key]}: expected >= 0")
    if not 0.0 <= config.model.dropout < 1.0:
        raise ValueError(f"config.model.dropout={config.model.dropout}: expected in [0, 1)")
