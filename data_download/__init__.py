"""Real MRI datasets into the project's common layout.

``python -m data_download {picai,brats2018,msd-brain,synthetic} --dest DIR [--base-url URL]``

- ``picai``: PI-CAI 2022 prostate bpMRI (Zenodo 6624726 + picai_labels), CC BY-NC 4.0.
- ``brats2018``: BraTS 2018 from the user's registered copy (``--source``).
- ``msd-brain``: Medical Segmentation Decathlon Task01_BrainTumour, CC-BY-SA 4.0.
- ``synthetic``: :func:`afl_core.synthetic.make_dataset` from the command line.

Downloads are verified, resumable, bounded and atomic (:mod:`data_download.remote`); archives
are extracted safely (:mod:`data_download.archives`); PI-CAI scans are checked before SimpleITK
reads them (:mod:`data_download.metaimage`), and SimpleITK is needed only for PI-CAI (the
``afl-tutorial[picai]`` extra).
"""

from .archives import UnsafeArchiveError, safe_extract
from .brats import convert_brats2018
from .msd import convert_msd, download_msd
from .picai import convert_picai, download_picai
from .remote import ChecksumError, DownloadError, OptionError, RemoteFile, fetch

__all__ = [
    "ChecksumError",
    "DownloadError",
    "OptionError",
    "RemoteFile",
    "UnsafeArchiveError",
    "convert_brats2018",
    "convert_msd",
    "convert_picai",
    "download_msd",
    "download_picai",
    "fetch",
    "safe_extract",
]
