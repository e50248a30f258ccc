"""Semantic IDs: short tuples of discrete codes learned from item text (TIGER, Rajput et al. 2023).

::

    item text -> encoder.TextEncoder -> embeddings [N, D] -> rqvae.RQVAE | rq_kmeans.RQKMeans
        -> codes [N, L] -> collisions.add_collision_level -> SIDs [N, L+1]
        -> tokens.sid_token_features -> sid_l* / sid_p* token ids for the FeatureSpec

One module per job: ``encoder`` (frozen text model, offline, cached), ``rqvae`` (RQ-VAE),
``rq_kmeans`` (residual k-means baseline), ``collisions`` (unique-SID level), ``tokens``
(codes -> sparse token ids), ``store`` (atomic save/load), ``report`` (quality numbers + plot),
``pipeline`` (the glue above). Submodules are imported explicitly so that importing this
package stays cheap (``transformers`` loads only when the encoder first runs).
"""
