"""A-FL inside the pipelines a learner already uses.

``monai``: :class:`~afl_core.integrations.monai.MonaiAdaptiveFocalLoss`, A-FL with MONAI's
loss conventions (multi-channel outputs, label maps, softmax). ``nnunet``:
``nnUNetTrainerAFL`` and a command that trains and predicts with it (needs the ``nnunet``
extra, ``pip install -e '.[nnunet]'``). Neither module is imported here, so importing this
package needs neither MONAI nor nnU-Net.
"""
