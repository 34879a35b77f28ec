"""Evaluation figures: predictions vs gold, confusion matrices and 2-D maps of the embedding space.

Every function takes host numpy arrays and writes one PNG. Figures are built with the object API
(`matplotlib.figure.Figure`, rendered by the Agg canvas) and never through `pyplot`: no GUI backend
is needed, importing this module does not change the process-wide backend, and no figure is kept
alive in pyplot's global registry after a function returns. A PNG is first written to a temporary
file next to its destination and then renamed over it, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import cm as mpl_cm
from matplotlib import colors as mpl_colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from emobed_jax import atomic
from emobed_jax.evaluation import metrics

__all__ = [
    "plot_predictions", "plot_utterance_scatter", "normalize_confusion", "plot_confusion_matrix",
    "embedding_pca", "subsample_indices", "plot_embedding_map",
]  # fmt: skip

_DPI = 100
# One marker per modality, cycled if there are more modalities (never in practice).
_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")


def _save_png(fig: Figure, path: str | os.PathLike) -> str:
    """Renders `fig` to `path` atomically (`atomic.atomic_write`)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)  # attaches an Agg canvas to the figure
    with atomic.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def _paired_2d(pred, gold, names: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Checks that predictions and gold are equal-shaped [N, len(names)] arrays with N >= 1."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gold, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"{what}: predictions have shape {p.shape} but gold has shape {g.shape}")
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] != len(names):
        raise ValueError(
            f"{what}: expected predictions and gold of shape [N>=1, {len(names)}] (one column per "
            f"name in {tuple(names)}), got {p.shape}")
    return p, g


def plot_predictions(path: str | os.PathLike,
                     recordings: Sequence[tuple[str, np.ndarray, np.ndarray]],
                     names: Sequence[str], frame_rate_hz: float = 25.0,
                     max_recordings: int = 3) -> str:
    """Prediction and gold traces over time: one row per recording, one column per dimension.

    Args:
        path: destination PNG.
        recordings: (name, predictions [T, K], gold [T, K]) per recording; the first
            `max_recordings` are drawn (the caller picks which and in what order).
        frame_rate_hz: label frames per second (25 for 40 ms frames), for the time axis.
        names: the K dimension names.
        max_recordings: at most this many rows.

    Returns:
        `path` as a string. Each panel's title holds that recording's CCC for that dimension.

    Raises:
        ValueError: empty `recordings`, non-positive rate or limit, or a recording whose arrays
            are not both [T, K].
    """
    names = tuple(names)
    if not recordings:
        raise ValueError("plot_predictions: recordings is empty; nothing to plot")
    if not frame_rate_hz > 0:
        raise ValueError(f"plot_predictions: frame_rate_hz must be > 0, got {frame_rate_hz}")
    if max_recordings < 1:
        raise ValueError(f"plot_predictions: max_recordings must be >= 1, got {max_recordings}")
    rows = []
    for entry in list(recordings)[:max_recordings]:
        if len(entry) != 3:
            raise ValueError("plot_predictions: each recording must be (name, pred, gold)")
        name, pred, gold = entry
        rows.append((str(name), *_paired_2d(pred, gold, names, f"recording {name!r}")))

    fig = Figure(figsize=(5.0 * len(names), 2.4 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(names), squeeze=False, sharey=True)
    for r, (name, pred, gold) in enumerate(rows):
        seconds = np.arange(pred.shape[0]) / frame_rate_hz
        for k, dim in enumerate(names):
            ax = axes[r, k]
            ax.plot(seconds, pred[:, k], color="tab:red", lw=1.0, alpha=0.8, label="prediction")
            ax.plot(seconds, gold[:, k], color="black", lw=1.2, label="gold")  # on top
            ax.set_title(f"{name} · {dim} · CCC {metrics.ccc(pred[:, k], gold[:, k]):.3f}",
                         fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(rows) - 1:
                ax.set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    return _save_png(fig, path)


def plot_utterance_scatter(path: str | os.PathLike, pred: np.ndarray, gold: np.ndarray,
                           names: Sequence[str]) -> str:
    """Gold (x) against predicted (y) value per utterance, one panel per dimension.

    Args:
        path: destination PNG.
        pred: predictions [N, K].
        gold: gold values [N, K].
        names: the K dimension names.

    Returns:
        `path` as a string. Panel titles hold the CCC over all N utterances; the dashed line is
        the identity (perfect agreement).

    Raises:
        ValueError: `pred` and `gold` are not both [N, K] with N >= 1.
    """
    names = tuple(names)
    pred, gold = _paired_2d(pred, gold, names, "plot_utterance_scatter")
    fig = Figure(figsize=(4.2 * len(names), 4.0), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for k, dim in enumerate(names):
        ax = axes[k]
        ax.scatter(gold[:, k], pred[:, k], s=8, alpha=0.5, color="tab:blue", edgecolors="none")
        finite = np.concatenate([gold[:, k], pred[:, k]])
        finite = finite[np.isfinite(finite)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            ax.plot([lo, hi], [lo, hi], ls="--", color="gray", lw=1.0)
        ax.set_title(f"{dim} · CCC {metrics.ccc(pred[:, k], gold[:, k]):.3f} (N={len(pred)})",
                     fontsize=10)
        ax.set_xlabel(f"gold {dim}")
        ax.set_ylabel(f"predicted {dim}")
        ax.grid(alpha=0.3)
    return _save_png(fig, path)


def _check_confusion(cm, class_names: Sequence[str] | None = None) -> np.ndarray:
    c = np.asarray(cm)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square [K, K] with K >= 1, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"confusion matrix must hold integer counts, got dtype {c.dtype}")
    if (c < 0).any():
        raise ValueError("confusion matrix must hold non-negative counts; found a negative entry")
    if class_names is not None and len(class_names) != c.shape[0]:
        raise ValueError(
            f"confusion matrix is {c.shape} but {len(class_names)} class names were given")
    return c.astype(np.int64)


def normalize_confusion(cm) -> np.ndarray:
    """Row-normalised confusion matrix: entry (i, j) = P(predicted j | true class i).

    Args:
        cm: integer counts [K, K], rows = true classes (as `metrics.confusion_matrix`).

    Returns:
        float64 [K, K]; the diagonal holds per-class recall. Rows of classes that never occur
        are all zero.
    """
    c = _check_confusion(cm).astype(np.float64)
    support = c.sum(axis=1, keepdims=True)
    return np.divide(c, support, out=np.zeros_like(c), where=support > 0)


def plot_confusion_matrix(path: str | os.PathLike, cm, class_names: Sequence[str],
                          normalize: bool = True) -> str:
    """Confusion matrix heat map annotated with counts (and row-normalised recall).

    Args:
        path: destination PNG.
        cm: integer counts [K, K], rows = true classes, columns = predicted classes.
        class_names: K names.
        normalize: colour by row-normalised recall and print it under each count; otherwise
            colour by raw counts.

    Returns:
        `path` as a string. The title holds accuracy and UAR (mean recall over the classes
        that occur, as `metrics.unweighted_average_recall`).

    Raises:
        ValueError: `cm` is not a square non-negative integer matrix matching `class_names`.
    """
    counts = _check_confusion(cm, class_names)
    recall = normalize_confusion(counts)
    support = counts.sum(axis=1)
    present = support > 0
    total = counts.sum()
    uar = float(np.mean(np.diag(recall)[present])) if present.any() else float("nan")
    acc = float(np.trace(counts) / total) if total else float("nan")

    k = counts.shape[0]
    size = max(4.0, 0.75 * k + 2.0)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    values = recall if normalize else counts
    vmax = 1.0 if normalize else float(max(1, values.max()))
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="recall (row-normalised)" if normalize else "count")
    for i in range(k):
        for j in range(k):
            text = f"{counts[i, j]}"
            if normalize and present[i]:
                text += f"\n{100.0 * recall[i, j]:.0f}%"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] > 0.5 * vmax else "black")
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {acc:.3f} · UAR {uar:.3f} (N={total})")
    return _save_png(fig, path)


def _check_embeddings(embeddings: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not embeddings:
        raise ValueError("embeddings is empty; expected a dict modality -> [N, E] array")
    checked, dims = {}, {}
    for modality, values in embeddings.items():
        e = np.asarray(values, dtype=np.float64)
        if e.ndim != 2:
            raise ValueError(f"embeddings[{modality!r}] must be [N, E], got shape {e.shape}")
        if not np.isfinite(e).all():
            raise ValueError(f"embeddings[{modality!r}] contains NaN or infinite values")
        checked[modality] = e
        dims[modality] = e.shape[1]
    if len(set(dims.values())) != 1:
        raise ValueError(f"all modalities must share one embedding size E, got {dims}")
    return checked


def embedding_pca(embeddings: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Projects every modality's embeddings onto the first two principal components of all of them.

    Rows are L2-normalised first (the triplet / contrastive terms compare directions), then one
    PCA is fitted on the rows of all modalities together, so the modalities share one map and
    their overlap is visible.

    Args:
        embeddings: modality -> [N_m, E] (N_m may differ; E must be shared).

    Returns:
        (coordinates, explained_variance_ratio): modality -> [N_m, 2] float64 coordinates, and
        the fraction of the total variance carried by each of the two components ([2]). Each
        component's sign is fixed so that its largest-magnitude loading is positive.

    Raises:
        ValueError: empty dict, non-2-D or non-finite arrays, differing E, fewer than 2 rows
            in total, or E < 2.
    """
    checked = _check_embeddings(embeddings)
    stacked = np.concatenate(list(checked.values()), axis=0)
    if stacked.shape[0] < 2 or stacked.shape[1] < 2:
        raise ValueError(
            f"PCA to 2-D needs at least 2 rows and E >= 2; got {stacked.shape[0]} rows in total "
            f"with E = {stacked.shape[1]}")
    norms = np.linalg.norm(stacked, axis=1, keepdims=True)
    # An all-zero row has no direction; keep it at the origin instead of dividing by zero.
    unit = stacked / np.maximum(norms, 1e-12)
    mean = unit.mean(axis=0)
    _, singular, vt = np.linalg.svd(unit - mean, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(2), np.argmax(np.abs(components), axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular**2
    total = variance.sum()
    ratio = variance[:2] / total if total > 0 else np.zeros(2)
    coords, start = {}, 0
    for modality, e in checked.items():
        coords[modality] = (unit[start:start + len(e)] - mean) @ components.T
        start += len(e)
    return coords, ratio


def subsample_indices(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Which of `n` items to draw: all of range(n) if n <= max_points (>= 1), else a sorted
    random subset of `max_points` indices; int64, a pure function of (n, max_points, seed)."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(n, size=max_points, replace=False)
    return np.sort(chosen).astype(np.int64)


def _labels_per_modality(labels, embeddings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    per = labels if isinstance(labels, Mapping) else {m: labels for m in embeddings}
    out = {}
    for modality, e in embeddings.items():
        if modality not in per:
            raise ValueError(f"labels has no entry for modality {modality!r}")
        y = np.asarray(per[modality])
        if y.shape != (e.shape[0],):
            raise ValueError(
                f"labels for modality {modality!r} have shape {y.shape}; expected ({e.shape[0]},) "
                f"to match embeddings[{modality!r}] of shape {e.shape}")
        out[modality] = y
    return out


def plot_embedding_map(path: str | os.PathLike, embeddings: Mapping[str, np.ndarray], labels,
                       label_name: str, class_names: Sequence[str] | None = None,
                       max_points: int = 2000, seed: int = 0) -> str:
    """2-D PCA map of the shared embedding space, coloured by label and marked by modality.

    Args:
        path: destination PNG.
        embeddings: modality -> [N_m, E].
        labels: one label per row: an array [N] shared by all modalities (then every N_m == N)
            or a dict modality -> [N_m]. Integer class ids (categorical palette + legend) or
            continuous values such as arousal (colour map + colour bar).
        label_name: what the labels are, for the legend / colour bar.
        class_names: names of the class ids; implies categorical labels (ids in [0, K)).
        max_points: at most this many rows per modality are drawn, chosen with
            `subsample_indices(N_m, max_points, seed)`, so equal-length modalities keep the same
            (paired) rows. The PCA itself is fitted on all rows.
        seed: subsampling seed.

    Returns:
        `path` as a string.

    Raises:
        ValueError: malformed embeddings (see `embedding_pca`), labels not matching them, class
            ids outside [0, K), or non-finite continuous labels.
    """
    checked = _check_embeddings(embeddings)
    per_labels = _labels_per_modality(labels, checked)
    all_labels = np.concatenate(list(per_labels.values()))
    categorical = class_names is not None or np.issubdtype(all_labels.dtype, np.integer)
    if categorical:
        if all_labels.size and not np.issubdtype(all_labels.dtype, np.integer):
            raise ValueError(f"{label_name}: class_names given, so labels must be integer class "
                             f"ids; got dtype {all_labels.dtype}")
        num_classes = (len(class_names) if class_names is not None
                       else int(all_labels.max(initial=-1)) + 1)
        if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= num_classes):
            raise ValueError(f"{label_name}: class ids must lie in [0, {num_classes}); found "
                             f"[{all_labels.min()}, {all_labels.max()}]")
        names = [str(i) for i in range(num_classes)] if class_names is None else class_names
        palette = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
        class_colors = [palette(i % palette.N) for i in range(num_classes)]
    else:
        all_labels = all_labels.astype(np.float64)
        if not np.isfinite(all_labels).all():
            raise ValueError(f"{label_name}: labels contain NaN or infinite values")
        norm = mpl_colors.Normalize(vmin=all_labels.min(), vmax=all_labels.max())
        cmap = matplotlib.colormaps["coolwarm"]

    coords, ratio = embedding_pca(checked)
    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    ax = fig.subplots()
    modality_handles = []
    for m_index, (modality, xy) in enumerate(coords.items()):
        marker = _MARKERS[m_index % len(_MARKERS)]
        keep = subsample_indices(len(xy), max_points, seed)
        y = per_labels[modality][keep]
        colors = ([class_colors[int(c)] for c in y] if categorical
                  else cmap(norm(y.astype(np.float64))))
        ax.scatter(xy[keep, 0], xy[keep, 1], c=colors, marker=marker, s=14, alpha=0.6,
                   linewidths=0)
        modality_handles.append(Line2D([], [], ls="", marker=marker, color="dimgray",
                                       label=f"{modality} (n={len(keep)})"))
    if categorical:
        class_handles = [Line2D([], [], ls="", marker="s", color=class_colors[i], label=name)
                         for i, name in enumerate(names)]
        ax.legend(handles=modality_handles + class_handles, fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), title=f"modality / {label_name}")
    else:
        fig.colorbar(mpl_cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label_name)
        ax.legend(handles=modality_handles, fontsize=8, loc="best", title="modality")
    ax.set_xlabel(f"PC1 ({100.0 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100.0 * ratio[1]:.1f}% of variance)")
    ax.set_title(f"Embeddings (L2-normalised, joint PCA) coloured by {label_name}")
    ax.grid(alpha=0.3)
    return _save_png(fig, path)
