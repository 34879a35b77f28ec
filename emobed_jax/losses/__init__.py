"""Loss terms of EmoBed: recognition losses (`task`) and crossmodal alignment (`crossmodal`,
with label agreement, triplet mining and frame subsampling in `mining`)."""
from emobed_jax.losses.crossmodal import (
    crossmodal_supcon_loss,
    crossmodal_triplet_loss,
    l2_normalize,
    pairwise_distances,
    supervised_contrastive_loss,
    triplet_loss,
)
from emobed_jax.losses.mining import (
    gather_frames,
    mine_batch_hard,
    mine_semi_hard,
    negative_matrix_from_classes,
    positive_matrix_from_classes,
    positive_matrix_from_distance,
    quantile_bins,
    quantile_edges,
    subsample_frames,
)
from emobed_jax.losses.task import (
    ccc_loss,
    class_weights_from_counts,
    cross_entropy_loss,
    mse_loss,
    sequence_ccc_loss,
)
