"""Safe checkpoint loading under torch >= 2.6 (weights_only) with mmengine's checkpoints."""
import numpy as np
import pytest
import torch

from mmvision_ssm import compat


class Arbitrary:
    """Not on the allow-list: loading it needs arbitrary unpickling."""

    def __init__(self, value=1):
        self.value = value


def test_numpy_objects_load_safely(tmp_path):
    path = tmp_path / 'c.pth'
    payload = {'w': torch.ones(2), 'hist': np.arange(5.0), 'n': np.float64(2.5), 'i': np.int64(3)}
    torch.save(payload, path)
    loaded = compat.safe_torch_load(path)
    assert np.array_equal(loaded['hist'], payload['hist']) and loaded['n'] == 2.5


def test_arbitrary_objects_need_explicit_opt_in(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'obj': Arbitrary(7)}, path)
    with pytest.raises(compat.UnsafeCheckpointError, match='--unsafe-load'):
        compat.safe_torch_load(path)
    compat.allow_unsafe_checkpoints()
    try:
        assert compat.safe_torch_load(path)['obj'].value == 7
    finally:
        compat.allow_unsafe_checkpoints(False)


def test_mmengine_loader_reads_history_buffers(tmp_path):
    mmengine = pytest.importorskip('mmengine')
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint
    buffer = HistoryBuffer()
    buffer.update(1.5)
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.ones(1)},
                'message_hub': {'log_scalars': {'train/loss': buffer}}}, path)
    compat.install_mmengine_loader()
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 1.5
    assert mmengine.__version__


class GetattrGadget:
    """Pickles as ``getattr(np.ndarray, 'tofile')``: the kind of gadget the allow-list must stop."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_getattr_is_only_allowed_on_history_buffers(tmp_path):
    pytest.importorskip('mmengine')
    path = tmp_path / 'gadget.pth'
    torch.save({'x': GetattrGadget()}, path)
    with pytest.raises(compat.UnsafeCheckpointError):
        compat.safe_torch_load(path)
