"""Loss terms of EmoBed: recognition losses (`task`, with the project's one CCC in `ccc`),
crossmodal alignment (`crossmodal`), label agreement (`agreement`), triplet mining and frame
subsampling (`mining`), and their composition into the training objective (`objective`)."""
from emobed_jax.losses.agreement import (
    negative_matrix_from_classes,
    positive_matrix_from_classes,
    positive_matrix_from_distance,
    quantile_bins,
    quantile_edges,
)
from emobed_jax.losses.ccc import masked_ccc
from emobed_jax.losses.crossmodal import (
    crossmodal_supcon_loss,
    crossmodal_triplet_loss,
    l2_normalize,
    pairwise_distances,
    supervised_contrastive_loss,
    triplet_loss,
)
from emobed_jax.losses.mining import gather_frames, mine_batch_hard, mine_semi_hard, subsample_frames
from emobed_jax.losses.task import (
    ccc_loss,
    class_weights_from_counts,
    cross_entropy_loss,
    mse_loss,
    sequence_ccc_loss,
)
