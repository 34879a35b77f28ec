"""The base configuration every experiment config starts from, and its validation.

Every key here is read somewhere in the package; `validate_config` rejects unknown values with a
message listing the valid ones. Experiment configs in `configs/` call `get_base_config()` and
override what they need. Defaults where the EmoBed paper's details are unknown are explained in the
README ("Defaults and why").
"""
from __future__ import annotations

import ml_collections

def get_base_config() -> ml_collections.ConfigDict:
    """Returns the base config (synthetic data, EmoBed, audio target)."""
    c = ml_collections.ConfigDict()
    c.method = "emobed"
    c.target_modality = "audio"
    c.modalities = ("audio", "video")
    c.task = "regression"
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
    c.data.rebuild = False  # delete the prepared dataset and prepare it again (changed sources)
    # 'global': z-normalise with training statistics; 'group': centre each group (the dataset's
    # group key, e.g. OMG's video) on its own mean first; 'none': raw features. (Runs stored
    # before 0.3 hold True / False, read as 'global' / 'none'.)
    c.data.normalize = "global"
    c.data.nonfinite = "mask"
    c.data.missing_auxiliary = "mask"
    # Regimes (data/regimes.py): the fraction of training recordings that keep their labels, and
    # that keep their auxiliary modalities; which ones depends on subset_seed only.
    c.data.label_fraction = 1.0
    c.data.aux_fraction = 1.0
    c.data.subset_seed = 0
    # Label dimensions to learn and score (empty: every dimension the dataset has), in this order.
    c.data.label_names = ()
    # Seconds per label dimension (a name not listed: no delay), e.g. "{'arousal': 2.4}".
    c.data.label_delay_s = ml_collections.ConfigDict({"arousal": 0.0, "valence": 0.0})
    c.data.frame_rate_hz = 25.0
    c.data.prefetch_threads = 2

    c.model = ml_collections.ConfigDict()
    c.model.encoder = "lstm"
    # LSTM: "auto" (cuDNN on a GPU, else "fused"), "fused" (hand-written VJP, fastest on a CPU),
    # "cudnn" or "scan" (the plain lax.scan reference); all share parameters and results.
    c.model.rnn_impl = "auto"
    c.model.hidden = 64
    c.model.num_layers = 2
    c.model.bidirectional = True
    # True: every encoder sees frames <= t only, so the model can run on a live stream
    # (inference.streaming): conv pads on the left only; needs model.bidirectional=False.
    c.model.causal = False
    c.model.kernel_size = 5
    c.model.dropout = 0.1
    c.model.pooling = "mean"
    c.model.embedding_dim = 64
    c.model.projector_activation = "tanh"
    c.model.head_hidden = (32,)
    c.model.head_dropout = 0.0
    # model.encoder='pooled': statistics of the valid frames, then an MLP.
    c.model.pooled_statistics = ("mean", "std")
    # Read at frame level only: each frame's statistics come from the centred window of this
    # many frames (50 = 2 s at 25 Hz); at utterance level the whole utterance is pooled.
    c.model.pooled_window_frames = 50
    # Training only: mask each valid frame out with this probability; add Gaussian noise of this
    # standard deviation to the normalised features (regularisers for small corpora).
    c.model.frame_dropout = 0.0
    c.model.feature_noise = 0.0

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
    # Distillation (method='distill', docs/methods.md): the student's task loss plus w_distill
    # times its match to a frozen teacher's head outputs or embeddings.
    c.loss.w_distill = 1.0
    c.loss.distill_target = "outputs"  # 'outputs' or 'embeddings'
    c.loss.distill_regression = "mse"  # regression outputs: 'mse' or 'ccc'
    c.loss.distill_embedding = "cosine"  # embeddings: 'mse' or 'cosine'
    c.loss.distill_temperature = 2.0  # class logits: KL at this temperature (times T^2)
    # Each auxiliary modality of each training example is dropped with this probability.
    c.loss.modality_dropout = 0.0

    # The distillation teacher: a trained run directory, or (empty) trained first in
    # WORKDIR/teacher by the same program on `teacher_modalities` ('auxiliary' or 'all').
    c.distill = ml_collections.ConfigDict()
    c.distill.teacher_workdir = ""
    c.distill.teacher_modalities = "auxiliary"
    # 'auto': monomodal for one teacher modality, joint for several.
    c.distill.teacher_method = "auto"
    c.distill.teacher_num_train_steps = 0  # 0: the student's num_train_steps
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


def _options() -> dict:
    """Config key -> its valid values, each table defined beside the code that reads the key.

    The objective's keys (`method`, `loss.*`) are checked by `objective.validate_config`.
    """
    from emobed_jax.data import batching, loading
    from emobed_jax.evaluation import evaluators
    from emobed_jax.models import emobed, lstm, pooling, projector
    from emobed_jax.training import parallel, teacher

    return {
        "distill.teacher_modalities": teacher.TEACHER_MODALITIES,
        "distill.teacher_method": teacher.TEACHER_METHODS,
        "task": evaluators.TASKS, "parallelism": parallel.MODES,
        "model.encoder": emobed.ENCODERS, "model.rnn_impl": lstm.IMPLS,
        "model.pooling": pooling.POOLING, "model.projector_activation": projector.ACTIVATIONS,
        "data.nonfinite": loading.NONFINITE, "data.missing_auxiliary": batching.MISSING_AUXILIARY,
        "data.normalize": loading.NORMALIZE,
        "postprocess.bias_scale": tuple(evaluators.BIAS_SCALE),
    }


def _get(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def best_metric(config) -> str:
    """The validation metric that selects the best checkpoint ('auto': ccc_mean or uar)."""
    if config.best_metric != "auto":
        return config.best_metric
    return "uar" if config.task == "category" else "ccc_mean"


def _check_best_metric(config, level=None, group_key=None, label_names=("*",)) -> None:
    import fnmatch

    from emobed_jax.evaluation import evaluators

    valid = evaluators.metric_names(config.task, level, group_key, label_names)
    name = best_metric(config)
    if not any(fnmatch.fnmatchcase(name, v) for v in valid):
        raise ValueError(f"config.best_metric={config.best_metric!r} is not a validation metric of "
                         f"task={config.task!r}; expected 'auto' or one of {sorted(valid)}")


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
    """Checks every key before any data is read; raises ValueError naming the key, the value
    and what was expected.

    Args:
      config: the experiment config.
      num_devices: the global device count (the batch must divide evenly).
    """
    from emobed_jax.losses import objective

    objective.validate_config(config)  # method and loss.*
    for key, valid in _options().items():
        value = _get(config, key)
        if value not in valid:
            raise ValueError(f"config.{key}={value!r} is not valid; expected one of {list(valid)}")
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
                "checkpoint_every_steps", "log_every_steps", "data.window_frames",
                "data.window_hop_frames", "data.prefetch_threads", "model.hidden",
                "model.num_layers", "model.embedding_dim", "model.kernel_size",
                "model.pooled_window_frames"):
        value = _get(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"config.{key}={value!r}: expected a positive integer")
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % num_devices:
            raise ValueError(
                f"config.{key}={config[key]} is not divisible by the {num_devices} devices; "
                f"expected a multiple of {num_devices}")
    for key in ("data.max_frames", "postprocess.median_window_frames", "optimizer.warmup_steps",
                "distill.teacher_num_train_steps"):
        if _get(config, key) < 0:
            raise ValueError(f"config.{key}={_get(config, key)!r}: expected >= 0")
    for key in ("data.label_fraction", "data.aux_fraction"):
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
            raise ValueError(f"config.{key}={value!r}: expected a fraction in (0, 1]")
    for key in ("model.dropout", "model.head_dropout", "model.frame_dropout"):
        if not 0.0 <= _get(config, key) < 1.0:
            raise ValueError(f"config.{key}={_get(config, key)}: expected in [0, 1)")
    if not config.model.feature_noise >= 0:
        raise ValueError(f"config.model.feature_noise={config.model.feature_noise}: expected >= 0")
    _check_pooled_statistics(config.model.pooled_statistics)
    if not config.optimizer.learning_rate > 0:
        raise ValueError(f"config.optimizer.learning_rate={config.optimizer.learning_rate}: "
                         f"expected > 0")
    if not isinstance(config.data.rebuild, bool):
        raise ValueError(f"config.data.rebuild={config.data.rebuild!r}: expected True or False")
    if config.data.frame_rate_hz <= 0:
        raise ValueError(f"config.data.frame_rate_hz={config.data.frame_rate_hz}: expected > 0")
    causal = config.model.get("causal", False)
    if not isinstance(causal, bool):
        raise ValueError(f"config.model.causal={causal!r}: expected True or False")
    if causal and config.model.bidirectional:
        raise ValueError("config.model.causal=True with config.model.bidirectional=True: a causal "
                         "model sees no future frame, a bidirectional one does; expected "
                         "model.bidirectional=False with model.causal=True")
    names = config.data.label_names
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"config.data.label_names={names!r}: expected a tuple of label dimension "
                         f"names (empty: every dimension of the dataset)")
    delays = dict(config.data.label_delay_s)
    if any(float(d) < 0 for d in delays.values()):
        raise ValueError(f"config.data.label_delay_s={delays}: expected delays >= 0")
    from emobed_jax.training import teacher

    teacher.validate_config(config)
    _check_best_metric(config)


def _check_pooled_statistics(names) -> None:
    from emobed_jax.models import pooled

    if (not isinstance(names, (tuple, list)) or not names or len(set(names)) != len(names)
            or any(n not in pooled.STATISTICS for n in names)):
        raise ValueError(f"config.model.pooled_statistics={names!r}: expected distinct names from "
                         f"{list(pooled.STATISTICS)}")


def validate_against_dataset(config, info) -> None:
    """The checks that need the dataset's description (`loading.DatasetInfo`): its label-grid
    rate, the best metric at its level and label dimensions, and the loss options at its level.
    (`data.label_names` and `data.label_delay_s` are checked when the labels are selected.)"""
    from emobed_jax.losses import objective

    rate = info.conventions.frame_rate_hz
    if abs(config.data.frame_rate_hz - rate) > 1e-9:
        raise ValueError(f"config.data.frame_rate_hz={config.data.frame_rate_hz} does not match "
                         f"dataset {info.name!r}, whose labels are at {rate} Hz; expected {rate}")
    if config.data.normalize == "group" and not info.conventions.group_key:
        raise ValueError(f"config.data.normalize='group' needs a dataset with groups (speakers, "
                         f"videos); dataset {info.name!r} declares none; expected True")
    objective.validate_config(config, info.level)
    _check_best_metric(config, info.level, info.conventions.group_key, info.label_names)
