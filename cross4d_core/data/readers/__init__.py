"""Readers that convert the public 4D datasets into the cross4d dataset format (metres).

One module per source, each with ``convert(src, out, progress=True, **options) -> dict``
(the summary of written / already present videos, frames and rejections), called by
``cross4d data convert --format {msr,ntu60,hoi4d,dt4d}``:

- :mod:`.msr`: MSR-Action3D raw depth ``.bin`` and legacy ``point_clouds`` ``.npz``;
- :mod:`.ntu60`: NTU-RGB+D 60 masked depth PNGs and legacy ``data`` ``.npz`` (xsub / xview);
- :mod:`.hoi4d`: HOI4D action-segmentation (per-frame labels) and 4D semantic-segmentation
  (per-point labels) ``.h5``;
- :mod:`.dt4d`: DeformingThings4D ``.anime`` (area-weighted samples, exact tracks; category,
  action or identity labels).

Modules are imported on demand (they pull in cv2 / h5py).
"""
from cross4d_core.data.readers.common import SourceFormatError

#: ``--format`` name -> module under this package.
READERS = ("msr", "ntu60", "hoi4d", "dt4d")

__all__ = ["READERS", "SourceFormatError"]
