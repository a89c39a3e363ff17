"""DEP (Difference-aware Embedding-based Personalization): everything of the method, here.

- ``config``: every setting: the checkpoint's ``DEPConfig``, ``--model_args`` (``DEPArgs``),
  ``dep-eval train`` options (``DEPTrainArgs``);
- ``embeddings``: docs/method.md steps 2-5, profile means, history items, difference and his
  embeddings (step 1, the encoder, is shared: ``dep_eval.encoder``);
- ``module``: steps 6-7, the sparse autoencoder and the two aligners (what DEP trains);
- ``method``: the method itself (steps 8 and 10 at inference, step 9's training batch) and its
  registration.

Submodules are imported on use: importing ``dep_eval.dep`` loads neither torch nor an encoder.
"""
