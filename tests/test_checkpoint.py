"""Strict checkpoint loading and its report."""
import pytest
import torch
from torch import nn

from mmvision_ssm.checkpoint import (CheckpointMismatchError, extract_state_dict,
                                     load_state_dict_checked, read_checkpoint)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.out_norm = nn.LayerNorm(4)


def official_like():
    src = Tiny()
    state = {k: torch.randn_like(v) for k, v in src.state_dict().items() if 'out_norm' not in k}
    state['head.weight'] = torch.randn(10, 4)
    return state


def test_expected_differences_are_reported_not_raised():
    model, state = Tiny(), official_like()
    report = load_state_dict_checked(model, state, dropped=['head.*'], initialised=['out_norm.*'])
    assert report.ok
    assert sorted(report.loaded) == ['body.bias', 'body.weight']
    assert report.dropped == ['head.weight']
    assert sorted(report.initialised) == ['out_norm.bias', 'out_norm.weight']
    assert torch.equal(model.body.weight, state['body.weight'])
    assert 'dropped' in report.summary() and 'newly initialised' in report.summary()


@pytest.mark.parametrize('change', ['missing', 'unexpected', 'shape'])
def test_other_differences_raise_and_leave_model_untouched(change):
    model, state = Tiny(), official_like()
    before = model.body.weight.detach().clone()
    if change == 'missing':
        del state['body.bias']
    elif change == 'unexpected':
        state['body.extra'] = torch.zeros(1)
    else:
        state['body.bias'] = torch.zeros(5)
    with pytest.raises(CheckpointMismatchError, match='MISSING|UNEXPECTED|SHAPE MISMATCH'):
        load_state_dict_checked(model, state, dropped=['head.*'], initialised=['out_norm.*'])
    assert torch.equal(model.body.weight, before)
    # an explicit partial load goes through and still reports the problem
    report = load_state_dict_checked(model, state, dropped=['head.*'],
                                     initialised=['out_norm.*'], strict=False)
    assert not report.ok and torch.equal(model.body.weight, state['body.weight'])


def test_nesting_and_file_reading(tmp_path):
    state = official_like()
    assert extract_state_dict({'model': state, 'epoch': 3}).keys() == state.keys()
    assert extract_state_dict({'state_dict': state}).keys() == state.keys()
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': state, 'optimizer': {}, 'epoch': 300}, path)
    assert read_checkpoint(path).keys() == state.keys()
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        read_checkpoint(tmp_path / 'absent.pth')
    with pytest.raises(CheckpointMismatchError, match='no tensor dict'):
        extract_state_dict({'epoch': 3})
