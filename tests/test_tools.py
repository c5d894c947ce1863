"""tools/train.py and tools/test.py end to end on the bundled demo data (tiny and short)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, SMALL_DEMO, free_port, run_tool, tool_env

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

DET = REPO / 'configs/demo/maskrcnn_demo.py'
SEG = REPO / 'configs/demo/upernet_demo.py'
DET_SHORT = SMALL_DEMO + ['train_cfg.max_epochs=1', 'default_hooks.logger.interval=1']
SEG_SHORT = SMALL_DEMO + ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                          'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']


def _check_report(report_dir, keys):
    report = json.loads((report_dir / 'report.json').read_text())
    for key in keys:
        value = report['metrics'][key]
        assert value == -1 or 0 <= value <= 100, (key, value)
    assert report['per_class'], 'per-class values missing'
    md = (report_dir / 'report.md').read_text()
    assert '## Metrics' in md and '![' in md
    assert list(report_dir.glob('*.png')), 'per-class plots missing'
    return report


def test_detection_train_then_test(tmp_path):
    run_tool(['tools/train.py', DET, '--work-dir', 'wd', '--cfg-options', *DET_SHORT], tmp_path)
    ckpt = tmp_path / 'wd' / 'epoch_1.pth'
    assert ckpt.is_file()
    proc = run_tool(['tools/test.py', DET, ckpt, '--work-dir', 'wd_test', '--out', 'preds.pkl',
                     '--show-dir', 'vis', '--cfg-options', *SMALL_DEMO], tmp_path)
    report = _check_report(tmp_path / 'wd_test' / 'report',
                           ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_l'])
    assert {'coco/bbox_AP', 'coco/segm_AP'} <= set(report['per_class'])
    assert set(report['per_class']['coco/bbox_AP']) == {'circle', 'square', 'triangle', 'ring'}
    assert (tmp_path / 'preds.pkl').is_file()
    assert len(list((tmp_path / 'vis').glob('*.jpg'))) == 4  # one drawn image per val image
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr


def test_segmentation_train_then_test(tmp_path):
    run_tool(['tools/train.py', SEG, '--work-dir', 'wd', '--cfg-options', *SEG_SHORT], tmp_path)
    ckpt = tmp_path / 'wd' / 'iter_2.pth'
    assert ckpt.is_file()
    run_tool(['tools/test.py', SEG, ckpt, '--work-dir', 'wd_test', '--out', 'pred_png',
              '--cfg-options', *SMALL_DEMO], tmp_path)
    report = _check_report(tmp_path / 'wd_test' / 'report', ['mIoU', 'mAcc', 'aAcc'])
    assert set(report['per_class']['IoU']) == {'sky', 'ground', 'circle', 'square', 'triangle',
                                               'ring'}
    assert len(list((tmp_path / 'pred_png').glob('*.png'))) == 4


def test_kill_mid_training_then_resume(tmp_path):
    """Killed during epoch 3, --resume continues from epoch 2 with the same schedule."""
    opts = ['demo_data.num_train=16', 'demo_data.num_val=2', 'demo_data.size=128',
            'train_cfg.max_epochs=4', 'default_hooks.checkpoint.interval=1',
            'default_hooks.checkpoint.max_keep_ckpts=5', 'default_hooks.logger.interval=1']
    cmd = [sys.executable, str(REPO / 'tools/train.py'), str(DET), '--work-dir', 'wd',
           '--cfg-options', *opts]
    # own process group, so the kill takes the data-loader workers down too (as a crash would)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=tool_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wd = tmp_path / 'wd'
    deadline = time.time() + 400
    while not (wd / 'epoch_2.pth').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into epoch 3
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (wd / 'epoch_2.pth').exists() and not (wd / 'epoch_4.pth').exists()
    done = {p.name for p in wd.glob('epoch_*.pth')}

    out = run_tool(['tools/train.py', DET, '--work-dir', 'wd', '--resume', '--cfg-options', *opts],
                   tmp_path)
    log = out.stdout + out.stderr
    last = max(done, key=lambda n: int(n[6:-4]))
    assert f'resumed epoch: {last[6:-4]}' in log, log[-3000:]
    assert (wd / 'epoch_4.pth').exists()
    import torch
    from mmvision_ssm.compat import safe_torch_load
    final = safe_torch_load(wd / 'epoch_4.pth')
    assert final['meta']['epoch'] == 4 and final['meta']['iter'] == 16  # 4 iters/epoch x 4
    # the lr schedule continued rather than restarting (cosine over 4 epochs reaches eta_min)
    lrs = [s for s in final['param_schedulers'] if 'T_max' in s]
    assert lrs and lrs[0]['last_step'] == 4
    assert torch.is_tensor(next(iter(final['state_dict'].values())))


def test_distributed_gloo_two_processes(tmp_path, monkeypatch):
    """dist_train.sh / dist_test.sh with 2 processes on CPU (gloo chosen automatically)."""
    monkeypatch.setenv('PORT', str(free_port()))
    proc = run_tool(['tools/dist_train.sh', DET, 2, '--work-dir', 'wd', '--cfg-options',
                     *DET_SHORT], tmp_path)
    assert (tmp_path / 'wd' / 'epoch_1.pth').is_file()
    assert 'Distributed training: True' in proc.stdout + proc.stderr
    monkeypatch.setenv('PORT', str(free_port()))
    run_tool(['tools/dist_test.sh', DET, tmp_path / 'wd' / 'epoch_1.pth', 2, '--work-dir',
              'wd_test', '--cfg-options', *SMALL_DEMO], tmp_path)
    report = _check_report(tmp_path / 'wd_test' / 'report', ['coco/bbox_mAP'])
    assert report['metrics']


@pytest.mark.parametrize('opts, message', [
    (['trian_cfg.max_epochs=1'], "'trian_cfg' is not a key of the config. Did you mean 'train_cfg'"),
    (['model.roi_head.bbox_head.num_classes=7'], 'num_classes=7 but the dataset has 4 classes'),
    (['train_dataloader.dataset.data_root=/nonexistent/coco/'],
     "'/nonexistent/coco/annotations/instances_train.json' does not exist"),
])
def test_bad_input_gives_one_clear_error(tmp_path, opts, message):
    proc = run_tool(['tools/train.py', DET, '--work-dir', 'wd', '--cfg-options', *SMALL_DEMO,
                     *opts], tmp_path, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
