"""DEP (Difference-aware Embedding-based Personalization): the method's numeric core.

- ``encoder``: METHOD.md step 1, a sentence encoder with a persistent embedding cache;
- ``embeddings``: steps 2-5, profile means, history items, difference and his embeddings;
- ``module``: steps 6-7, the sparse autoencoder and the two aligners (what DEP trains);
- ``checkpoint``: saving / loading that module with compatibility checks.

Submodules are imported on use: importing ``dep_eval.dep`` loads neither torch nor an encoder.
"""
