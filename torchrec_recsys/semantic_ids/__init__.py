"""Semantic IDs: short tuples of discrete codes learned from item text (TIGER, Rajput et al. 2023).

::

    item text -> encoder.TextEncoder -> embeddings [N, D] -> rqvae.RQVAE | rq_kmeans.RQKMeans
        -> codes [N, L] -> collisions.add_collision_level -> SIDs [N, L+1]
        -> tokens.sid_token_features -> sid_l* / sid_p* token ids for the FeatureSpec

A library (no experiment drivers; those live in ``experiments/``). One module per job:
``encoder`` (frozen text model, offline, cached), ``kmeans`` (FAISS k-means, shared),
``rqvae`` (RQ-VAE), ``rq_kmeans`` (residual k-means baseline), ``collisions`` (unique-SID
level), ``tokens`` (codes -> sparse token ids), ``store`` (atomic save/load), ``report``
(quality numbers + plot), ``learn`` (the glue above), ``features`` (a cached SID table ->
token features for the FeatureSpec). Submodules are imported explicitly so that importing this
package stays cheap (``transformers`` loads only when the encoder first runs).
"""
