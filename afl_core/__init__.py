"""Adaptive Focal Loss (A-FL) for small, irregular tumours in MRI: the tested core
behind the tutorial notebooks.

Modules: ``shape`` (mask descriptors), ``losses`` (A-FL and the baselines), ``metrics``,
``synthetic``, ``data``, ``models``, ``train``, ``evaluate``, ``viz``, ``links``.
"""

__version__ = "0.1.0"
