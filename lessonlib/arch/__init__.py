"""Structured pruning and architecture changes that make a model physically smaller (issue 6).

One technique per module: ``heads`` (attention-head importance and removal), ``ffn`` (FFN-neuron importance
and removal), ``depth`` (ShortGPT Block Influence, block removal, layer-drop schedules), ``gqa`` (MHA -> GQA
by mean-pooling K/V heads), ``fusion`` (eager vs SDPA attention vs ``torch.compile``), ``reload``
(``load_pruned``: reloading models pruned unevenly across blocks or factorised), ``structure`` (shrinking
linear-like layers of any class, head-count bookkeeping).  Every model-level function works from the
structural layout of ``lessonlib.layout`` and asks ``lessonlib.layout.require`` first.
"""
