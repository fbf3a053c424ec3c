"""ONNX export: tiny KDSR student and RRDBNet from BasicSR-format checkpoints, dynamic axes, onnxruntime against
torch on two input sizes and batches, and the refusal of the teacher."""
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from basicsr.archs.rrdbnet_arch import RRDBNet

from kdsr_arch.archs import KDSRStudent, KDSRTeacher
from kdsr_pdd.commands import export

KDSR_TINY = dict(n_feats=8, n_blocks=2, n_encoder_res=1, scale=4)
RRDB_TINY = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4, scale=4)


def _randomise(net, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return net


def _basicsr_checkpoint(net, path):
    """BasicSR layout: params (net_g) and params_ema (net_g_ema, the weights export must use)."""
    other = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    torch.save({'params': other, 'params_ema': net.state_dict()}, path)
    return str(path)


def _onnxruntime_vs_torch(onnx_path, net, sizes):
    session = onnxruntime.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    for batch, (h, w) in sizes:
        lq = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            expected = net(lq).numpy()
        (got, ) = session.run(None, {'lq': lq.numpy()})
        assert got.shape == (batch, 3, 4 * h, 4 * w)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize('kind', ['kdsr_student', 'rrdbnet'])
def test_export_matches_torch_on_two_sizes(tmp_path, capsys, kind):
    if kind == 'kdsr_student':
        net = _randomise(KDSRStudent(**KDSR_TINY), seed=1)
        selection = ['--arch', 'KDSRStudent', '--arch-args', json.dumps(KDSR_TINY)]
    else:
        net = _randomise(RRDBNet(**RRDB_TINY), seed=2)
        opt_path = tmp_path / 'rrdb.yml'
        opt_path.write_text(yaml.safe_dump({'network_g': dict(type='RRDBNet', **RRDB_TINY)}), encoding='utf-8')
        selection = ['--opt', str(opt_path)]
    ckpt = _basicsr_checkpoint(net.eval(), tmp_path / 'net.pth')
    out = str(tmp_path / 'net.onnx')

    assert export.main([*selection, '--model', ckpt, '--out', out, '--check', '--check-sizes', '12x16', '20x9']) == 0
    printed = capsys.readouterr().out
    assert 'check 1x3x12x16: max abs diff' in printed and 'check 2x3x20x9: max abs diff' in printed

    graph = onnx.load(out).graph
    assert [i.name for i in graph.input] == ['lq'] and [o.name for o in graph.output] == ['sr']
    lq_dims, sr_dims = _dims(graph.input[0]), _dims(graph.output[0])
    assert lq_dims[1] == 3 and all(isinstance(d, str) for d in lq_dims[::2] + lq_dims[3:])
    assert isinstance(sr_dims[0], str) and isinstance(sr_dims[2], str) and isinstance(sr_dims[3], str)
    # an independent run, with the params_ema weights the checkpoint holds (params are zeros)
    _onnxruntime_vs_torch(out, net, [(1, (12, 16)), (2, (20, 9)), (3, (7, 5))])


def test_teacher_is_refused(tmp_path):
    ckpt = _basicsr_checkpoint(KDSRTeacher(**KDSR_TINY), tmp_path / 'teacher.pth')
    with pytest.raises(SystemExit, match='KDSR teacher needs the HR image'):
        export.main(['--arch', 'KDSRTeacher', '--arch-args', json.dumps(KDSR_TINY), '--model', ckpt,
                     '--out', str(tmp_path / 't.onnx')])
    assert not (tmp_path / 't.onnx').exists()


def test_check_fails_above_atol(tmp_path, capsys, monkeypatch):
    ckpt = _basicsr_checkpoint(KDSRStudent(**KDSR_TINY), tmp_path / 'net.pth')
    monkeypatch.setattr(export, 'compare_onnx', lambda *args, **kwargs: [2e-3])  # as if onnxruntime drifted
    assert export.main(['--arch', 'KDSRStudent', '--arch-args', json.dumps(KDSR_TINY), '--model', ckpt,
                        '--out', str(tmp_path / 'n.onnx'), '--check', '--check-sizes', '6x5']) == 1
    captured = capsys.readouterr()
    assert 'max abs diff onnxruntime vs torch = 0.002' in captured.out
    assert 'difference above --atol 0.001' in captured.err
