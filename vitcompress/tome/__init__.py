"""Token Merging (ToMe; Bolya et al., ICLR 2023, "Token Merging: Your ViT But Faster"), written from the paper:
bipartite soft matching between attention and MLP in every block (:mod:`.merge`), and a timm ViT that carries
each token's size through its blocks, with proportional attention and size-weighted pooling (:mod:`.vit`)."""
