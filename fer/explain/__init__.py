"""Explanations of trained members: saliency maps (:mod:`fer.explain.saliency`) and filter views
(:mod:`fer.explain.filters`). :mod:`fer.explain.base` owns a model's modes, gradient flags and
hooks while it is being explained, and restores them even on error.

Import the submodule you need (``from fer.explain.saliency import METHODS``): this package
imports nothing itself, so the filter views do not pay for Captum's import.
"""
