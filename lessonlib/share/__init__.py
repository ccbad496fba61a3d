"""Weight sharing: ALBERT-style cross-layer tying of decoder blocks and Deep Compression k-means clustering."""
from .clustering import (ClusteredWeight, centroid_gradients, cluster_model, cluster_weight, index_bits, kmeans_1d,
                         lloyd_step)
from .tying import count_parameters, sharing_groups, tie_blocks

__all__ = ["ClusteredWeight", "centroid_gradients", "cluster_model", "cluster_weight", "index_bits", "kmeans_1d",
           "lloyd_step", "count_parameters", "sharing_groups", "tie_blocks"]
