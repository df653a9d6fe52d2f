"""The torch layer: ``.dd`` files as tensors on a training device.

:class:`DistilledDataset` (a plain :class:`torch.utils.data.Dataset`) and its worker-free
:class:`DeviceLoader`; :mod:`.losses` for weighted and soft-label losses; :mod:`.values` for
what stored values mean to a model.
"""

from .dataset import DeviceLoader, DistilledDataset, ResidentSet, samples_tensor
from .views import ViewReplay

__all__ = ["DeviceLoader", "DistilledDataset", "ResidentSet", "ViewReplay", "samples_tensor"]
